"""The tool's version, read once from the installed package metadata (pyproject.toml is the one home)."""

from __future__ import annotations

from importlib import metadata


def tool_version() -> str:
    """`bluegreen`'s version as installed (falls back to the source tree's __version__ when not installed)."""
    try:
        return metadata.version("bluegreen")
    except metadata.PackageNotFoundError:  # running from a source tree without an install
        from bluegreen import __version__

        return __version__

"""Shared test fixtures: where ../shared is, and fresh writable copies of its data dirs.

The shared fixtures are read-only and must never be opened by rocksdict in place
(it writes into any dir it opens), so tests always work on copies."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
EMPTY_SCHEMAS = FIXTURES / "empty-schemas"
DEVNET_V29 = FIXTURES / "ocore-devnet-v29"
DEVNET_V31 = FIXTURES / "ocore-devnet-v31"


def writable_copy(src: Path, dst: Path) -> Path:
    """Copy a read-only fixture tree and make the copy writable."""
    if src.is_dir():
        shutil.copytree(src, dst)
        for p in [dst, *dst.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    else:
        shutil.copy2(src, dst)
        dst.chmod(dst.stat().st_mode | stat.S_IWUSR)
    return dst


@pytest.fixture
def devnet_v29(tmp_path: Path) -> Path:
    """A writable copy of the real version-29 devnet node dir."""
    return writable_copy(DEVNET_V29, tmp_path / "devnet-v29")


@pytest.fixture
def devnet_v31(tmp_path: Path) -> Path:
    """A writable copy of the real version-31 devnet node dir (with rocksdb/)."""
    return writable_copy(DEVNET_V31, tmp_path / "devnet-v31")

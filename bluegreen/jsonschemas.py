"""The JSON Schemas of what the tool prints (--json) and persists (state.json, journals, reports).

They are generated from the pydantic models into the repository's `schemas/` (scripts/export-schemas) and
shipped in the package as `bluegreen/json_schemas/` (in a checkout that is a symlink to `../schemas`, so
there is one copy): an operator who installed the wheel reads them with `upgrade schema NAME`."""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from bluegreen.errors import BadInputError

PACKAGE_DIR = "json_schemas"
SUFFIX = ".schema.json"


def schema_root() -> Traversable:
    """The folder holding `<name>.schema.json` (package data, so also inside an installed wheel)."""
    return resources.files("bluegreen").joinpath(PACKAGE_DIR)


def names() -> list[str]:
    """Every schema name (`status-result`, `staging-state`, ...), sorted."""
    root = schema_root()
    if not root.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in root.iterdir() if p.name.endswith(SUFFIX))


def load(name: str) -> dict[str, Any]:
    """The JSON Schema `name` (with or without the `.schema.json` suffix) as a dict."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    if stem not in names():
        raise BadInputError(f"no JSON Schema named {name!r}",
                            "`upgrade schema` lists them: " + ", ".join(names()))
    return json.loads(schema_root().joinpath(stem + SUFFIX).read_text(encoding="utf-8"))

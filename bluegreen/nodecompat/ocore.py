"""Which schema version the node's own ocore expects, read from its files (never by running its JavaScript).

ocore's schema version is the `VERSION` constant at the top of `sqlite_migrations.js`
(`var VERSION = 46;` in every release from 2017 to today); the package version (`0.4.6`) in its
package.json is not the schema version. At start, ocore migrates a database below VERSION up to it and
refuses one above it ("user version N > VERSION: looks like you are using a new database with an old
client"), so the target we stage must never be above the node's VERSION."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

MIGRATIONS_FILE = "sqlite_migrations.js"

# A top-level declaration at the start of a line: `var VERSION = 46;` (also let/const, any spacing).
_DECL = re.compile(r"^[ \t]*(?:var|let|const)[ \t]+VERSION[ \t]*=[ \t]*(\d+)[ \t]*(?:;|$|//)", re.MULTILINE)
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)


class OcoreInfo(BaseModel):
    """The ocore package a node app loads: where, its npm version, and the schema version it expects."""

    path: Path
    package_version: str | None = None
    schema_version: int | None = None  # None: sqlite_migrations.js missing or without a readable VERSION
    problem: str | None = None  # why schema_version is None

    def describe(self) -> str:
        """One line for the operator: `ocore 0.4.6 at PATH (sqlite_migrations.js VERSION 50)`."""
        ver = f"VERSION {self.schema_version}" if self.schema_version is not None else (self.problem or "no VERSION")
        return f"ocore {self.package_version or '(version unknown)'} at {self.path} ({MIGRATIONS_FILE} {ver})"


def parse_schema_version(text: str) -> int | None:
    """The `VERSION` of an ocore `sqlite_migrations.js` text, or None when there is no single clear value.

    Block comments are dropped first; a commented-out line (`// var VERSION = 3;`) does not match because
    the declaration must start its line. Two declarations with different values are ambiguous: None."""
    found = {int(m.group(1)) for m in _DECL.finditer(_BLOCK_COMMENT.sub("", text))}
    return found.pop() if len(found) == 1 else None


def ocore_dir_for(node_modules: Path) -> Path | None:
    """The ocore dir that goes with a node_modules: `<nm>/ocore`, or `<nm>/..` when nm is ocore's own."""
    for cand in (node_modules / "ocore", node_modules.parent):
        if _package_name(cand) == "ocore":
            return cand
    return None


def read_ocore(ocore_dir: Path) -> OcoreInfo:
    """Read an ocore package dir: its package.json version and its sqlite_migrations.js VERSION."""
    version = None
    try:
        version = str(json.loads((ocore_dir / "package.json").read_text(encoding="utf-8")).get("version"))
    except (OSError, ValueError, AttributeError):
        pass
    path = ocore_dir / MIGRATIONS_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return OcoreInfo(path=ocore_dir, package_version=version, problem=f"cannot read {path}: {exc.strerror}")
    schema = parse_schema_version(text)
    return OcoreInfo(path=ocore_dir, package_version=version, schema_version=schema,
                     problem=None if schema is not None else f"no single `var VERSION = N;` line in {path}")


def _package_name(pkg_dir: Path) -> str | None:
    try:
        name = json.loads((pkg_dir / "package.json").read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None

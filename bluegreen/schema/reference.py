"""What an ocore database schema looks like, as data.

- `introspect(conn)` reads a live schema (sqlite_master + PRAGMA table_info / index_list /
  index_info / foreign_key_list) into a `SchemaSnapshot`.
- `compare(a, b)` lists structural differences. Column order is ignored on purpose: ALTER TABLE
  ADD COLUMN appends a column while ocore's fresh schema file may declare it elsewhere.
- `load_reference(version, light)` returns the schema of an EMPTY ocore database of that version,
  from the JSON files shipped in `bluegreen/schema/reference_data/` (the top-level
  `schemas/reference/` is a symlink to that folder, so there is exactly one copy).
- `create_empty_database(path, version, light)` builds such an empty database from that data.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from urllib.parse import quote
from typing import Any, Literal

import apsw
from pydantic import BaseModel, ConfigDict

from bluegreen.errors import BadInputError

REFERENCE_DIR = "reference_data"  # inside the bluegreen.schema package (shipped as package data)


def _reference_root():  # type: ignore[no-untyped-def]
    return resources.files("bluegreen.schema").joinpath(REFERENCE_DIR)


class Column(BaseModel):
    """One column as PRAGMA table_info reports it (`pk` is the 1-based position in the primary key, 0 if none)."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    notnull: bool
    default: str | None
    pk: int


class ForeignKey(BaseModel):
    """One foreign key (PRAGMA foreign_key_list rows grouped by id). `to_columns` items are None
    when the key references the parent's primary key implicitly."""

    model_config = ConfigDict(frozen=True)

    from_columns: list[str]
    table: str
    to_columns: list[str | None]
    on_update: str
    on_delete: str


class Table(BaseModel):
    """One table: columns in declaration order, foreign keys, and the stored CREATE statement."""

    model_config = ConfigDict(frozen=True)

    name: str
    columns: list[Column]
    foreign_keys: list[ForeignKey]
    autoincrement: bool
    sql: str


class Index(BaseModel):
    """One index. `sql` is None for autoindexes (PRIMARY KEY / UNIQUE constraints); `columns` items
    are None for expression columns."""

    model_config = ConfigDict(frozen=True)

    name: str
    table: str
    columns: list[str | None]
    unique: bool
    partial: bool
    origin: Literal["c", "u", "pk"]
    sql: str | None


class SchemaSnapshot(BaseModel):
    """The schema of one database: user tables and indexes by name (sqlite_* internals excluded)."""

    model_config = ConfigDict(frozen=True)

    user_version: int
    tables: dict[str, Table]
    indexes: dict[str, Index]


class SchemaDifference(BaseModel):
    """One structural difference between schema `a` (actual) and schema `b` (expected).

    kind: missing = in b, not in a; extra = in a, not in b; changed = in both, different."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["missing", "extra", "changed"]
    object: Literal["table", "column", "index", "foreign_key", "user_version"]
    table: str | None
    name: str
    detail: str

    def __str__(self) -> str:
        where = f"{self.table}." if self.table and self.object != "table" else ""
        return f"{self.kind} {self.object} {where}{self.name}: {self.detail}"


# ---------------------------------------------------------------- introspection

_AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)


def _rows(conn: apsw.Connection, sql: str, bindings: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql, bindings))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def introspect(conn: apsw.Connection) -> SchemaSnapshot:
    """Read the schema of the main database of `conn` into a `SchemaSnapshot`."""
    (user_version,) = _rows(conn, "PRAGMA user_version")[0]
    tables: dict[str, Table] = {}
    indexes: dict[str, Index] = {}
    master = _rows(
        conn,
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND type='table' ORDER BY name",
    )
    for _type, name, _tbl, sql in master:
        # PRAGMA table_info columns: cid, name, type, notnull, dflt_value, pk
        columns = [
            Column(name=c[1], type=c[2], notnull=bool(c[3]), default=c[4], pk=c[5])
            for c in _rows(conn, f"PRAGMA table_info({_quote(name)})")
        ]
        tables[name] = Table(
            name=name,
            columns=columns,
            foreign_keys=_foreign_keys(conn, name),
            autoincrement=bool(_AUTOINCREMENT.search(sql)),
            sql=sql,
        )
        index_sql = dict(_rows(conn, "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name=?", (name,)))
        # PRAGMA index_list columns: seq, name, unique, origin, partial
        for _seq, iname, unique, origin, partial in _rows(conn, f"PRAGMA index_list({_quote(name)})"):
            cols = [r[2] for r in _rows(conn, f"PRAGMA index_info({_quote(iname)})")]  # seqno, cid, name
            indexes[iname] = Index(
                name=iname,
                table=name,
                columns=cols,
                unique=bool(unique),
                partial=bool(partial),
                origin=origin,
                sql=index_sql.get(iname),
            )
    return SchemaSnapshot(user_version=user_version, tables=tables, indexes=dict(sorted(indexes.items())))


def _foreign_keys(conn: apsw.Connection, table: str) -> list[ForeignKey]:
    # PRAGMA foreign_key_list columns: id, seq, table, from, to, on_update, on_delete, match
    grouped: dict[int, list[tuple[Any, ...]]] = {}
    for row in _rows(conn, f"PRAGMA foreign_key_list({_quote(table)})"):
        grouped.setdefault(row[0], []).append(row)
    keys = []
    for fk_id in sorted(grouped):
        rows = sorted(grouped[fk_id], key=lambda r: r[1])
        keys.append(
            ForeignKey(
                from_columns=[str(r[3]) for r in rows],
                table=str(rows[0][2]),
                to_columns=[None if r[4] is None else str(r[4]) for r in rows],
                on_update=str(rows[0][5]),
                on_delete=str(rows[0][6]),
            )
        )
    # PRAGMA lists keys in reverse declaration order; sort for a stable, order-free representation.
    return sorted(keys, key=lambda k: (k.table, k.from_columns, [c or "" for c in k.to_columns]))


def introspect_file(path: Path | str) -> SchemaSnapshot:
    """Introspect a database file that nobody is writing (fixtures, copies) without creating anything
    next to it: an immutable read-only open makes no -wal/-shm files. Immutable reads ignore a WAL, so a
    file whose -wal holds data is refused rather than read stale."""
    path = Path(path).resolve()
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise BadInputError(
            f"{path} has a non-empty write-ahead log; reading the file alone would miss committed data",
            hint="introspect a consistent copy (SQLite backup API) or open a connection and call introspect()",
        )
    uri = "file:" + quote(str(path)) + "?immutable=1"
    conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return introspect(conn)
    finally:
        conn.close()


# ---------------------------------------------------------------- comparison

_WS = re.compile(r"\s+")


def _norm(text: str | None) -> str | None:
    return None if text is None else _WS.sub(" ", text.strip())


def _norm_type(text: str) -> str:
    return (_norm(text) or "").upper()


def _column_signature(c: Column) -> tuple[str, bool, str | None, int]:
    return (_norm_type(c.type), c.notnull, _norm(c.default), c.pk)


def _fk_signature(k: ForeignKey) -> str:
    to = ",".join(c or "<pk>" for c in k.to_columns)
    return f"({','.join(k.from_columns)}) -> {k.table}({to}) on update {k.on_update} on delete {k.on_delete}"


def _index_key(ix: Index) -> str:
    # Autoindex names are numbered by constraint position, so identify them by what they index.
    if ix.sql is None:
        return f"<{ix.origin}:{ix.table}({','.join(c or '<expr>' for c in ix.columns)})>"
    return ix.name


def _index_signature(ix: Index) -> tuple[str, tuple[str | None, ...], bool, bool]:
    return (ix.table, tuple(ix.columns), ix.unique, ix.partial)


def compare(a: SchemaSnapshot, b: SchemaSnapshot, *, check_user_version: bool = False) -> list[SchemaDifference]:
    """Structural differences of `a` (actual) against `b` (expected): tables, columns (order
    ignored; type and default compared with whitespace normalized, type case-insensitively),
    AUTOINCREMENT, foreign keys, indexes. Stored CREATE text is not compared. Empty list = same."""
    diffs: list[SchemaDifference] = []

    def add(kind: str, obj: str, table: str | None, name: str, detail: str) -> None:
        diffs.append(SchemaDifference(kind=kind, object=obj, table=table, name=name, detail=detail))  # type: ignore[arg-type]

    if check_user_version and a.user_version != b.user_version:
        add("changed", "user_version", None, "user_version", f"{a.user_version} != expected {b.user_version}")
    for name in sorted(b.tables.keys() - a.tables.keys()):
        add("missing", "table", name, name, "table absent")
    for name in sorted(a.tables.keys() - b.tables.keys()):
        add("extra", "table", name, name, "table not expected")
    for name in sorted(a.tables.keys() & b.tables.keys()):
        ta, tb = a.tables[name], b.tables[name]
        ca = {c.name: c for c in ta.columns}
        cb = {c.name: c for c in tb.columns}
        for col in [c.name for c in tb.columns if c.name not in ca]:
            add("missing", "column", name, col, f"expected {_column_signature(cb[col])}")
        for col in [c.name for c in ta.columns if c.name not in cb]:
            add("extra", "column", name, col, f"found {_column_signature(ca[col])}")
        for col in [c.name for c in tb.columns if c.name in ca]:
            sa, sb = _column_signature(ca[col]), _column_signature(cb[col])
            if sa != sb:
                add("changed", "column", name, col, f"(type, notnull, default, pk) {sa} != expected {sb}")
        if ta.autoincrement != tb.autoincrement:
            add("changed", "table", name, name, f"AUTOINCREMENT {ta.autoincrement} != expected {tb.autoincrement}")
        fa = sorted(_fk_signature(k) for k in ta.foreign_keys)
        fb = sorted(_fk_signature(k) for k in tb.foreign_keys)
        for sig in fb:
            if sig in fa:
                fa.remove(sig)
            else:
                add("missing", "foreign_key", name, sig, "foreign key absent")
        for sig in fa:
            add("extra", "foreign_key", name, sig, "foreign key not expected")
    ia = {_index_key(ix): ix for ix in a.indexes.values()}
    ib = {_index_key(ix): ix for ix in b.indexes.values()}
    for key in sorted(ib.keys() - ia.keys()):
        add("missing", "index", ib[key].table, key, f"expected {_index_signature(ib[key])}")
    for key in sorted(ia.keys() - ib.keys()):
        add("extra", "index", ia[key].table, key, f"found {_index_signature(ia[key])}")
    for key in sorted(ia.keys() & ib.keys()):
        if _index_signature(ia[key]) != _index_signature(ib[key]):
            add("changed", "index", ia[key].table, key, f"{_index_signature(ia[key])} != expected {_index_signature(ib[key])}")
    return diffs


# ---------------------------------------------------------------- reference data


def reference_name(version: int, light: bool) -> str:
    """File name of the reference snapshot for a version and flavour, e.g. `full-v28.json`."""
    return f"{'light' if light else 'full'}-v{version}.json"


def available_references() -> list[tuple[int, bool]]:
    """Every (version, light) pair we carry reference data for, sorted."""
    found = []
    for entry in _reference_root().iterdir():
        m = re.fullmatch(r"(full|light)-v(\d+)\.json", entry.name)
        if m:
            found.append((int(m.group(2)), m.group(1) == "light"))
    return sorted(found)


def load_reference(version: int, light: bool) -> SchemaSnapshot:
    """The schema of an empty ocore database of `version` (full or light), from our package data."""
    entry = _reference_root().joinpath(reference_name(version, light))
    if not entry.is_file():
        known = ", ".join(f"{'light' if lt else 'full'}-v{v}" for v, lt in available_references())
        raise BadInputError(
            f"no reference schema for {'light' if light else 'full'} version {version}",
            hint=f"supported schema versions: {known}",
        )
    return SchemaSnapshot.model_validate(json.loads(entry.read_text(encoding="utf-8")))


def snapshot_to_json(snapshot: SchemaSnapshot) -> str:
    """The stable text form of a snapshot, as stored in the reference data files: one table or index
    per line, so that a diff between two versions reads as a list of changed objects."""
    data = snapshot.model_dump(mode="json")

    def section(name: str) -> str:
        lines = [f"  {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}" for k, v in data[name].items()]
        return f' "{name}": {{\n' + ",\n".join(lines) + "\n }"

    return "{\n" + f' "user_version": {data["user_version"]},\n' + section("tables") + ",\n" + section("indexes") + "\n}\n"


def _creation_order(snapshot: SchemaSnapshot) -> list[str]:
    """Table names ordered so that a table comes after the tables its foreign keys reference
    (ties broken by name). SQLite does not require it, but it keeps the file valid even with
    `PRAGMA foreign_keys=ON` and legacy tools that check references at CREATE time."""
    ordered: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name not in snapshot.tables:
            return
        if name in visiting:  # a reference cycle: creation order cannot satisfy it anyway
            return
        visiting.add(name)
        for fk in snapshot.tables[name].foreign_keys:
            if fk.table != name:
                visit(fk.table)
        visiting.discard(name)
        done.add(name)
        ordered.append(name)

    for name in sorted(snapshot.tables):
        visit(name)
    return ordered


def create_from_snapshot(path: Path | str, snapshot: SchemaSnapshot) -> None:
    """Create a new database file at `path` holding exactly the schema of `snapshot`
    (stored CREATE statements, tables in dependency order, then indexes) and its user_version."""
    path = Path(path)
    if path.exists():
        raise BadInputError(f"{path} already exists", hint="choose a new path; we never overwrite a database")
    conn = apsw.Connection(str(path))
    try:
        with conn:  # one transaction: a failure leaves no half-built schema
            for name in _creation_order(snapshot):
                conn.execute(snapshot.tables[name].sql)
            for ix in snapshot.indexes.values():
                if ix.sql is not None:
                    conn.execute(ix.sql)
            conn.execute(f"PRAGMA user_version={int(snapshot.user_version)}")
    finally:
        conn.close()


def create_empty_database(path: Path | str, version: int, light: bool) -> None:
    """Create an empty ocore database of schema `version` (full or light) at `path`, from our own
    reference data, with `PRAGMA user_version` set to `version`."""
    create_from_snapshot(path, load_reference(version, light))

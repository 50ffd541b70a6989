"""`upgrade plan` (and `upgrade stage --dry-run`): what stage would do, computed without writing anything.

Everything here only reads: the SQLite header (user_version) straight from the file's first 100 bytes, the
unit count through an `immutable=1` read-only open (which never creates -wal/-shm), file sizes, lock probes
and /proc. No staging dir, no lock file, no state: the tree around the data dir is left byte for byte as it was
(tests/test_lifecycle_plan.py checks it)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle import layout as layoutmod
from bluegreen.lifecycle import noderunning, snapshot
from bluegreen.lifecycle.noderunning import NodeUsage
from bluegreen.lifecycle.results import CommandResult
from bluegreen.lifecycle.state import Phase, SpaceEstimate
from bluegreen.lifecycle.target import choose_target
from bluegreen.nodecompat.probe import find_node_app
from bluegreen.schema.steps import LAST_SQL_STEP, Step, steps_between
from bluegreen.ocore_facts import KV_DIR_NAME

# Units per second of a whole `stage` (snapshot + SQL steps + KV fill + fsyncs), measured on this project's
# 2-core test machine on generated devnet nodes, version 28: 2k units 3244/s, 20k units 3777/s (docs/runbook.md
# "Planning"). Rounded down; real nodes with big data feeds and slower disks are slower per unit.
STAGE_UNITS_PER_SECOND = 3000.0


class PlannedStep(BaseModel):
    """One schema step stage would run."""

    version: int
    description: str


class PlanResult(CommandResult):
    """`upgrade plan` / `upgrade stage --dry-run`: nothing was written."""

    target_origin: str = ""  # where the target came from: --to, the node's ocore VERSION, or the highest known
    steps: list[PlannedStep] = Field(default_factory=list)
    units: int | None = None
    space: SpaceEstimate | None = None
    space_enough: bool | None = None
    space_method: str = ""
    node: NodeUsage | None = None
    node_modules: Path | None = None
    ocore_version: str | None = None  # ocore's npm package version (package.json)
    ocore_schema_version: int | None = None  # the VERSION in its sqlite_migrations.js
    stage_seconds_estimate: float | None = None
    time_method: str = ""
    staging_exists: bool = False


def _describe(step: Step) -> str:
    """A short description of a schema step: what its statements create/change (history is provenance)."""
    parts: list[str] = []
    for item in step.items:
        if item.kind in ("data_operation", "kv_operation"):
            parts.append(item.description)
            continue
        statements = item.statements if item.kind in ("atomic", "group") else (item,)
        for st in statements:
            words = st.sql.split()
            head = " ".join(words[:6]).rstrip("(")
            if not head.upper().startswith("PRAGMA USER_VERSION") and head not in parts:  # full/light variants
                parts.append(head)
    text = "; ".join(parts) or "sets user_version"
    return text if len(text) <= 110 else text[:107] + "..."


def planned_steps(from_version: int, target_version: int) -> list[PlannedStep]:
    """The steps stage runs from `from_version` to `target_version`, like sqlite-utils' pending migrations."""
    out = [PlannedStep(version=s.version, description=_describe(s))
           for s in steps_between(from_version, min(target_version, LAST_SQL_STEP))]
    if from_version < 31 <= target_version:
        out.append(PlannedStep(version=31, description="move every unit's JSON and every data feed from SQLite into "
                               "RocksDB (joints, df/dfv keys), then user_version=31"))
    # Steps 32.. (SQL and KV parts) run after the KV fill, up to the target.
    out += [PlannedStep(version=s.version, description=_describe(s))
            for s in steps_between(max(from_version, 31), target_version)]
    return out


def count_units(db_path: Path) -> int | None:
    """Units in blue (max rowid: cheap), read through an immutable open that creates no file."""
    try:
        conn = snapshot.open_source(db_path, immutable=True)
    except Exception:  # not readable as SQLite: plan reports it without a count
        return None
    try:
        row = list(conn.execute("SELECT COUNT(*) FROM units"))
        return int(row[0][0])
    except Exception:
        return None
    finally:
        conn.close()


def ocore_version(node_modules: Path | None) -> str | None:
    """ocore's version from node_modules/ocore/package.json (or the node_modules holding level-rocksdb)."""
    if node_modules is None:
        return None
    for cand in (node_modules / "ocore" / "package.json", node_modules.parent / "package.json"):
        try:
            data = json.loads(cand.read_text())
        except (OSError, ValueError):
            continue
        if data.get("name") == "ocore":
            return str(data.get("version"))
    return None


def plan(data_dir: Path | None = None, staging_dir: Path | None = None, *,
         target_version: int | None = None) -> PlanResult:
    """What `stage` would do, computed without writing a single byte anywhere.

    target_version: `--to`; None: chosen like stage does (the node's ocore VERSION, else the highest known)."""
    lay = layoutmod.resolve(data_dir, staging_dir)
    db_path = lay.data_dir / lay.db_name
    header = fpmod.read_sqlite_header(db_path)
    version = header.user_version if header else None
    choice = choose_target(lay.data_dir, target_version)
    target_version = choice.version
    refused = choice.refusal is not None
    steps = planned_steps(version, target_version) if version is not None and not refused else []
    units = count_units(db_path)
    est = snapshot.estimate_space(lay)
    usage = noderunning.detect(lay.data_dir, lay.exclude)
    app = find_node_app(lay.data_dir)
    nm = app.node_modules if app is not None else None
    warnings: list[str] = []
    if refused:
        warnings.append(f"stage would refuse: {choice.refusal} ({choice.hint})")
    elif choice.note:
        warnings.append(choice.note)
    if version is None:
        warnings.append(f"{db_path} is not a SQLite database; stage would refuse")
    elif version > target_version:
        warnings.append(f"at version {version}, above the target {target_version}: stage would refuse "
                        "(no downgrade)")
    elif version == target_version:
        warnings.append(f"already at version {version}: nothing to upgrade")
    if est.needed_bytes > est.free_bytes:
        warnings.append(f"not enough free space: {snapshot.describe_space(est)}")
    if usage.running:
        warnings.append("the node is running (stage " + ("refuses while a KV store exists)"
                                                        if (lay.data_dir / KV_DIR_NAME).is_dir() else
                                                        "copies anyway; stop it before promote)"))
    rate_note = (f"units / {STAGE_UNITS_PER_SECOND:.0f} units/s, the stage rate measured on a 2-core machine; "
                 "verify is not estimated")
    staging_exists = lay.staging_dir.exists()
    msg = (f"plan: {len(steps)} step(s) from version {version} to {target_version}; nothing was written"
           if steps else f"plan: stage would refuse: {choice.refusal}; nothing was written" if refused
           else "plan: nothing to do; nothing was written")
    return PlanResult(
        command="plan", phase=Phase.NONE, message=msg,
        next_step="upgrade status (a staging area exists already)" if staging_exists else
        ("upgrade stage" if steps else ""),
        data_dir=lay.data_dir, staging_dir=lay.staging_dir, warnings=warnings,
        source_version=version, target_version=target_version, target_origin=choice.origin, steps=steps, units=units, space=est,
        space_enough=est.needed_bytes <= est.free_bytes, space_method=snapshot.SPACE_METHOD,
        node=usage, node_modules=nm,
        ocore_version=app.ocore.package_version if app is not None and app.ocore else ocore_version(nm),
        ocore_schema_version=app.ocore.schema_version if app is not None and app.ocore else None,
        stage_seconds_estimate=None if units is None else units / STAGE_UNITS_PER_SECOND,
        time_method=rate_note, staging_exists=staging_exists,
    )


def describe(p: PlanResult) -> str:
    """The plan as operator text."""
    mib = 1 << 20
    lines = [f"data dir:    {p.data_dir}", f"staging:     {p.staging_dir}"
             + (" (exists already)" if p.staging_exists else " (would be created)"),
             f"versions:    source {p.source_version} -> target {p.target_version}",
             f"target from: {p.target_origin}"]
    for s in p.steps:
        lines.append(f"step:        {s.version:>2}  {s.description}")
    if p.units is not None:
        lines.append(f"units:       {p.units}")
    if p.space is not None:
        e = p.space
        lines.append(f"space:       needs {e.needed_bytes / mib:.1f} MiB, free {e.free_bytes / mib:.1f} MiB"
                     + ("" if p.space_enough else "  NOT ENOUGH"))
        lines.append(f"             {snapshot.describe_space(e)}")
        lines.append(f"             how: {p.space_method}")
    if p.node is not None:
        lines.append("node:        " + ("RUNNING\n" + p.node.describe() if p.node.running else "not running"))
    lines.append(f"node app:    {p.node_modules or 'not found (verify --node-modules PATH to check with it)'}")
    lines.append(f"ocore:       {p.ocore_version or 'version unknown'}"
                 + (f" (schema VERSION {p.ocore_schema_version})" if p.ocore_schema_version is not None else ""))
    if p.stage_seconds_estimate is not None:
        lines.append(f"time:        stage ~{_dur(p.stage_seconds_estimate)} ({p.time_method})")
    return "\n".join(lines)


def _dur(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

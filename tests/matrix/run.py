"""The upgrade matrix: generated nodes of every schema version ocore shipped a fresh schema for (the versions of
`schemas/reference/`), full and light, on mainnet, testnet and devnet, staged and verified to 31 (sources below
it) and to 50. Sources from 31 on are generated as version 29 and moved up to their version by our engine (there
is no other way to hold a KV-era node of every version); they then take the KV-era path to the target.

Each cell runs the lifecycle functions (stage, verify) on a fresh data dir in a temp dir and records whether the
result verifies clean. `scripts/matrix` prints the table and writes JSON; tests/test_matrix.py runs a subset."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel

from bluegreen.engine.migrate import MigrationOptions, migrate_copy
from bluegreen.generator import generate_node_dir
from bluegreen.generator.nodedir import MAX_VERSION, db_file_name
from bluegreen.lifecycle import command
from bluegreen.schema.reference import available_references
from bluegreen.schema.steps import max_known_version

NETWORKS = ("mainnet", "testnet", "devnet")
KINDS = ("full", "light")
KV_ERA = 31


class Cell(BaseModel):
    """One upgrade of the matrix."""

    source: int
    kind: str
    network: str
    target: int
    units: int = 0
    passed: bool = False
    seconds: float = 0.0
    problem: str = ""


def source_versions() -> list[int]:
    """Every version we hold a fresh reference schema for, below the latest (the sources a node can be at)."""
    return sorted({v for v, _light in available_references() if v < max_known_version()})


def cells(sources: Iterable[int], kinds: Iterable[str] = KINDS, networks: Iterable[str] = NETWORKS) -> Iterator[Cell]:
    """Every (source, kind, network, target) to run: to 31 where the source is below it, and to the latest."""
    for source in sources:
        for kind in kinds:
            for network in networks:
                targets = ([KV_ERA] if source < KV_ERA else []) + [max_known_version()]
                for target in targets:
                    yield Cell(source=source, kind=kind, network=network, target=target)


def make_source(out: Path, cell: Cell, units: int, seed: int) -> int:
    """A node dir at `cell.source`: generated directly below 30; at 30 a node stuck in the v31 KV fill (ocore
    commits 30 first); from 31 on generated at 29 and migrated up by our engine."""
    light = cell.kind == "light"
    version = min(cell.source, MAX_VERSION)
    stuck = cell.source == 30  # a node at 30 is one whose v31 KV fill died: ocore commits 30 before it
    gen = generate_node_dir(out, units=units, version=version, light=light, network=cell.network, seed=seed,
                            stuck_at_30=stuck)
    if cell.source >= KV_ERA:
        db = out / db_file_name(light)
        report = migrate_copy(db, out / "rocksdb", out.parent / "make-source-journal.json",
                              MigrationOptions(target_version=cell.source, light=light))
        if not report.completed:
            raise RuntimeError(f"could not build a v{cell.source} source: {report}")
        (out.parent / "make-source-journal.json").unlink(missing_ok=True)
    return gen.units


def run_cell(cell: Cell, work: Path, units: int, seed: int) -> Cell:
    """Stage and verify one cell on a fresh data dir under `work`; the cell comes back filled in."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix=f"v{cell.source}-{cell.kind}-{cell.network}-{cell.target}-", dir=work))
    try:
        node = root / "node"
        cell.units = make_source(node, cell, units, seed)
        staged = command.stage(node, target_version=cell.target)
        if staged.target_version != cell.target:
            cell.problem = f"staged to {staged.target_version}"
        else:
            report = command.verify(node)
            cell.passed = report.passed
            if not report.passed:
                cell.problem = "; ".join(f"{c.name}: {c.first_failures[:2]}" for c in report.report.checks
                                         if not c.passed) if getattr(report, "report", None) else report.message
    except Exception as exc:  # a cell that cannot run is a failed cell, with its reason
        cell.problem = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cell.seconds = round(time.monotonic() - started, 2)
    return cell


def table(results: list[Cell]) -> str:
    """The matrix as text: one row per source and kind, one column per network and target."""
    columns = sorted({(c.network, c.target) for c in results}, key=lambda nt: (nt[1], NETWORKS.index(nt[0])))
    by = {(c.source, c.kind, c.network, c.target): c for c in results}
    head = "source kind  " + " ".join(f"{n[:4]}->{t}" for n, t in columns)
    lines = [head]
    for source in sorted({c.source for c in results}):
        for kind in KINDS:
            row = [by.get((source, kind, n, t)) for n, t in columns]
            if not any(row):
                continue
            marks = " ".join(f"{('ok' if c.passed else 'FAIL') if c else '-':>8}" for c in row)
            lines.append(f"v{source:<5} {kind:<5} {marks}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/matrix", description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=40, help="units per generated node (default 40)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--sources", default="", help="comma-separated source versions (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="write the cells as JSON here")
    args = ap.parse_args(argv)
    sources = [int(s) for s in args.sources.split(",") if s] or source_versions()
    work = Path(tempfile.mkdtemp(prefix="bg-matrix-"))
    results: list[Cell] = []
    try:
        for cell in cells(sources):
            results.append(run_cell(cell, work, args.units, args.seed))
            done = results[-1]
            print(f"v{done.source} {done.kind} {done.network} -> {done.target}: "
                  f"{'ok' if done.passed else 'FAIL ' + done.problem} ({done.seconds}s)", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    failed = [c for c in results if not c.passed]
    print(f"matrix: {len(results)} upgrades, {len(failed)} failed")
    if args.json:
        args.json.write_text(json.dumps([c.model_dump() for c in results], indent=1), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

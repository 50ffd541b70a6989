"""The full verify as independent tasks spread over every core (`verify --jobs N`).

A full verify is eight checks of very unequal cost: `integrity_check` of green, `foreign_key_check` of green
(and of blue's tables where green has violations), the hash pass over every stored joint, the data-feed compare, the re-hash of every ball, and a
few small SQL checks. Run one after the other they leave all cores but one idle. Here each check, or each
range of a check that splits (the hash pass by unit-id range, the balls by rowid range), is one picklable
`VerifyTask`: paths and constants in, a `PartResult` out. Every task opens its own read-only connections,
so tasks run in any process (`engine/pool.py`'s `imap_unordered`: an idle worker takes the next task at
once, the longest tasks go first). The main process only plans and merges.

Same report for any `jobs`: ranges cover the key space exactly once (half-open bounds, open ends), and the
parts of a split check are absorbed in range order, which is the order of the one-pass check, so counts,
first failures and details are identical (tests/test_verify_jobs.py)."""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from bluegreen.engine.pool import open_pool, resolve_jobs
from bluegreen.formats.networks import Network
from bluegreen.killpoints import killpoint
from bluegreen.lifecycle import verify as v
from bluegreen.lifecycle.verify_models import VerifyCheck
from bluegreen.ocore_facts import KV_ERA_VERSION

Progress = Callable[[str, int, int], None]

# Base64 (unit ids) in byte order: the unit-id space is split on two-character prefixes of it. Any other
# key still falls in exactly one range: the first range is open below and the last open above.
B64_BYTE_ORDER = "+/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Work per task: big enough that opening connections (a few ms) is noise, small enough that the last task
# finishing alone leaves the other cores idle only briefly.
UNITS_PER_TASK = 40_000
BALLS_PER_TASK = 60_000
TASKS_PER_JOB = 4  # at least this many ranges per worker, so ranges balance around the long single checks
MAX_RANGES = 4096  # two base64 characters

KIND_INTEGRITY = "integrity"
KIND_FK = "fk"
KIND_SQL = "sql"
KIND_KV_UNITS = "kv_units"
KIND_KV_FEEDS = "kv_feeds"
KIND_BALLS = "balls"


@dataclass(frozen=True)
class VerifyEnv:
    """What every task needs: where the databases are and the run's constants (plain, picklable data)."""

    blue_db: str
    green_db: str
    kv_dir: str
    light: bool
    target_version: int
    blue_version: int
    network: Network
    network_name: str | None  # for network-conditional step effects (row counts); None: every network's


@dataclass(frozen=True)
class VerifyTask:
    """One unit of verify work: a whole check, or the range [lo, hi) of a check that splits."""

    kind: str
    part: int
    env: VerifyEnv
    lo: str | int | None = None
    hi: str | int | None = None


@dataclass
class PartResult:
    """What one task found: whole checks, or the tally of one range."""

    kind: str
    part: int
    seconds: float = 0.0
    checks: list[VerifyCheck] = field(default_factory=list)
    tally: v._Tally | None = None
    error: str | None = None  # the task could not run: its check fails with this reason


# ---------------------------------------------------------------------------------------------
# planning


def unit_ranges(parts: int) -> list[tuple[str | None, str | None]]:
    """`parts` half-open ranges of unit ids covering every possible string exactly once, cut at two-character
    base64 prefixes spread evenly (unit ids are hashes, so the ranges hold about equal numbers of units)."""
    parts = max(1, min(parts, MAX_RANGES))
    cuts = []
    for i in range(1, parts):
        k = i * MAX_RANGES // parts
        cuts.append(B64_BYTE_ORDER[k // 64] + B64_BYTE_ORDER[k % 64])
    bounds: list[str | None] = [None, *cuts, None]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def rowid_ranges(lo: int | None, hi: int | None, parts: int) -> list[tuple[int | None, int | None]]:
    """`parts` half-open rowid ranges over [lo, hi], open at both ends (rows added below or above still count)."""
    if lo is None or hi is None or parts <= 1:
        return [(None, None)]
    step = max(1, math.ceil((hi - lo + 1) / parts))
    cuts = list(range(lo + step, hi + 1, step))
    bounds: list[int | None] = [None, *cuts, None]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def plan(env: VerifyEnv, jobs: int, units: int, balls: int, balls_rowids: tuple[int | None, int | None],
         kv_ok: bool, units_ok: bool = True) -> list[VerifyTask]:
    """Every task of a full verify: longest first over several processes (the pool hands the next one to
    whichever worker is idle); in report order for one process (`jobs` 1: one range per check, the reference
    path, with per-item progress in the order `upgrade status` lists the steps)."""
    n_units = 1 if jobs <= 1 else max(jobs * TASKS_PER_JOB, math.ceil(units / UNITS_PER_TASK))
    n_balls = 1 if jobs <= 1 else max(jobs * TASKS_PER_JOB, math.ceil(balls / BALLS_PER_TASK))
    unit_tasks = [VerifyTask(KIND_KV_UNITS, i, env, lo, hi)
                  for i, (lo, hi) in enumerate(unit_ranges(n_units))] if kv_ok and units_ok else []
    ball_tasks = [VerifyTask(KIND_BALLS, i, env, lo, hi)
                  for i, (lo, hi) in enumerate(rowid_ranges(*balls_rowids, n_balls))]
    feed_tasks = [VerifyTask(KIND_KV_FEEDS, 0, env)] if kv_ok else []
    fk = [VerifyTask(KIND_FK, 0, env)]
    integrity, sql = VerifyTask(KIND_INTEGRITY, 0, env), VerifyTask(KIND_SQL, 0, env)
    if jobs <= 1:
        return [integrity, *fk, sql, *unit_tasks, *feed_tasks, *ball_tasks]
    # the whole (unsplit) checks first, longest first; the many short ranges after them fill in the tail
    return [integrity, *fk, *feed_tasks, sql, *unit_tasks, *ball_tasks]


# ---------------------------------------------------------------------------------------------
# running one task (in a worker, or in this process)


def _with_dbs(task: VerifyTask, fn: Callable[[apsw.Connection, apsw.Connection], PartResult]) -> PartResult:
    blue = v.open_readonly(Path(task.env.blue_db))
    try:
        green = v.open_readonly(Path(task.env.green_db))
        try:
            return fn(blue, green)
        finally:
            green.close()
    finally:
        blue.close()


def _with_kv(task: VerifyTask, fn: Callable[[apsw.Connection, apsw.Connection, object], PartResult]) -> PartResult:
    def body(blue: apsw.Connection, green: apsw.Connection) -> PartResult:
        kv = v.open_kv_readonly(Path(task.env.kv_dir))
        try:
            return fn(blue, green, kv)
        finally:
            kv.close()
    return _with_dbs(task, body)


def _integrity(task: VerifyTask, progress: Progress | None) -> PartResult:
    return _with_dbs(task, lambda _b, g: PartResult(task.kind, task.part, checks=[v.check_integrity(g, progress)]))


def _fk(task: VerifyTask, progress: Progress | None) -> PartResult:
    return _with_dbs(task, lambda b, g: PartResult(task.kind, task.part,
                                                   checks=[v.check_foreign_keys(b, g, progress)]))


def _sql(task: VerifyTask, progress: Progress | None) -> PartResult:
    env = task.env

    def body(blue: apsw.Connection, green: apsw.Connection) -> PartResult:
        return PartResult(task.kind, task.part, checks=[
            v._run(v.CHECK_USER_VERSION, lambda: v.check_user_version(green, env.target_version)),
            v._run(v.CHECK_SCHEMA, lambda: v.check_schema(green, env.target_version, env.light)),
            v._run(v.CHECK_ROW_COUNTS, lambda: v.check_row_counts(
                blue, green, progress, target_version=env.target_version, light=env.light,
                network=env.network_name)),
        ])
    return _with_dbs(task, body)


def _kv_units(task: VerifyTask, progress: Progress | None) -> PartResult:
    env = task.env

    def body(_blue: apsw.Connection, green: apsw.Connection, kv: object) -> PartResult:
        whole = task.lo is None and task.hi is None
        n = v._count(green, "SELECT count(*) FROM units") if whole and progress is not None else None
        tally = v.check_kv_units_part(green, kv, env.network, env.light,  # type: ignore[arg-type]
                                      task.lo, task.hi, progress, n)  # type: ignore[arg-type]
        return PartResult(task.kind, task.part, tally=tally)
    return _with_kv(task, body)


def _kv_feeds(task: VerifyTask, progress: Progress | None) -> PartResult:
    env = task.env

    def body(blue: apsw.Connection, green: apsw.Connection, kv: object) -> PartResult:
        if env.blue_version >= KV_ERA_VERSION:
            check = v.check_kv_data_feeds_kv_era(green, kv)  # type: ignore[arg-type]
        else:
            check = v.check_kv_data_feeds(blue, kv, None, progress)  # type: ignore[arg-type]
        return PartResult(task.kind, task.part, checks=[check])
    return _with_kv(task, body)


def _balls(task: VerifyTask, progress: Progress | None) -> PartResult:
    def body(_blue: apsw.Connection, green: apsw.Connection) -> PartResult:
        whole = task.lo is None and task.hi is None
        n = v._count(green, "SELECT count(*) FROM balls") if whole and progress is not None else None
        return PartResult(task.kind, task.part,
                          tally=v.check_balls_part(green, task.lo, task.hi, progress, n))  # type: ignore[arg-type]
    return _with_dbs(task, body)


RUNNERS: dict[str, Callable[[VerifyTask, Progress | None], PartResult]] = {
    KIND_INTEGRITY: _integrity, KIND_FK: _fk, KIND_SQL: _sql,
    KIND_KV_UNITS: _kv_units, KIND_KV_FEEDS: _kv_feeds, KIND_BALLS: _balls,
}


def run_task(task: VerifyTask, progress: Progress | None = None) -> PartResult:
    """Run one task; a task that cannot run comes back with `error` (its check then fails with the reason)."""
    started = time.monotonic()
    try:
        result = RUNNERS[task.kind](task, progress)
    except Exception as exc:  # noqa: BLE001 - reported as a failed check, never lost
        result = PartResult(task.kind, task.part, error=f"{type(exc).__name__}: {exc}")
        result.error += "" if str(exc) else "\n" + traceback.format_exc(limit=3)
    result.seconds = time.monotonic() - started
    return result


def run_task_quiet(task: VerifyTask) -> PartResult:
    """`run_task` without progress: what a worker runs (module-level, so it pickles by name)."""
    killpoint("verify_tasks.worker_task")  # tests: a worker killed mid-verify
    return run_task(task)


# ---------------------------------------------------------------------------------------------
# merging, in report order


def _failed(name: str, reason: str, seconds: float) -> VerifyCheck:
    return VerifyCheck(name=name, passed=False, checked=0, failed=1, first_failures=[reason],
                       detail="the check could not run", seconds=round(seconds, 3))


def _timed(check: VerifyCheck, seconds: float) -> VerifyCheck:
    return check.model_copy(update={"seconds": round(seconds, 3)})


def _merge_ranges(name: str, parts: list[PartResult], finish: Callable[[v._Tally], VerifyCheck]) -> VerifyCheck:
    seconds = sum(p.seconds for p in parts)
    errors = [p.error for p in parts if p.error]
    if errors:
        return _failed(name, errors[0], seconds)
    tally = v._Tally(name)
    for part in sorted(parts, key=lambda p: p.part):
        assert part.tally is not None
        tally.absorb(part.tally)
    return _timed(finish(tally), seconds)


def merge(results: list[PartResult], env: VerifyEnv, kv_error: str | None,
          units_error: str | None = None) -> list[VerifyCheck]:
    """The eight checks in report order from every task's result (`kv_error`: the KV could not be opened;
    `units_error`: the network of the units could not be told, so they cannot be hashed)."""
    by_kind: dict[str, list[PartResult]] = {}
    for r in results:
        by_kind.setdefault(r.kind, []).append(r)

    def single(kind: str, names: list[str]) -> list[VerifyCheck]:
        (r,) = by_kind[kind]
        if r.error:
            return [_failed(n, r.error, r.seconds) for n in names]
        # one task's time is shared by the checks it ran (the small SQL ones: each is fast)
        return [_timed(c, r.seconds / len(r.checks)) for c in r.checks]

    checks = single(KIND_INTEGRITY, [v.CHECK_INTEGRITY])
    checks += single(KIND_FK, [v.CHECK_FOREIGN_KEYS])
    checks += single(KIND_SQL, [v.CHECK_USER_VERSION, v.CHECK_SCHEMA, v.CHECK_ROW_COUNTS])
    if kv_error is not None or units_error is not None:
        checks.append(_failed(v.CHECK_KV_UNITS, str(kv_error or units_error), 0.0))
    else:
        checks.append(_merge_ranges(v.CHECK_KV_UNITS, by_kind[KIND_KV_UNITS],
                                    lambda t: v.kv_units_result(t, env.light)))
    if kv_error is not None:
        checks.append(_failed(v.CHECK_KV_DATA_FEEDS, kv_error, 0.0))
    else:
        checks += single(KIND_KV_FEEDS, [v.CHECK_KV_DATA_FEEDS])
    checks.append(_merge_ranges(v.CHECK_BALLS, by_kind[KIND_BALLS], lambda t: t.result(v.BALLS_ALL)))
    return checks


# ---------------------------------------------------------------------------------------------
# the full verify


_STEP_OF_KIND = {KIND_INTEGRITY: v.CHECK_INTEGRITY, KIND_FK: v.CHECK_FOREIGN_KEYS, KIND_SQL: v.CHECK_ROW_COUNTS,
                 KIND_KV_UNITS: v.CHECK_KV_UNITS,
                 KIND_KV_FEEDS: v.CHECK_KV_DATA_FEEDS, KIND_BALLS: v.CHECK_BALLS}


def run_full(env: VerifyEnv, green: apsw.Connection, kv_error: str | None, units_error: str | None,
             jobs: int | None, progress: Progress | None = None) -> list[VerifyCheck]:
    """Plan, run (over `jobs` worker processes; 1: in this process) and merge a full verify."""
    units = v._count(green, "SELECT count(*) FROM units")
    balls = v._count(green, "SELECT count(*) FROM balls")
    lo_hi = green.execute("SELECT min(rowid), max(rowid) FROM balls").fetchall()[0]
    n_jobs = resolve_jobs(jobs, units)
    tasks = plan(env, n_jobs, units, balls, (lo_hi[0], lo_hi[1]), kv_ok=kv_error is None,
                 units_ok=units_error is None)
    results: list[PartResult] = []
    if n_jobs <= 1:
        for task in tasks:
            results.append(run_task(task, progress))
        return merge(results, env, kv_error, units_error)
    # In parallel, progress advances per finished task: done/total items of that task's check.
    totals = {KIND_KV_UNITS: units, KIND_BALLS: balls}
    done: dict[str, int] = {}
    with open_pool(n_jobs) as pool:
        for _i, result in pool.imap_unordered(run_task_quiet, tasks):
            results.append(result)
            if progress is not None:
                items = result.tally.checked if result.tally is not None else 1
                if result.kind == KIND_KV_UNITS and result.tally is not None:
                    items = result.tally.counters.get("units", 0)
                done[result.kind] = done.get(result.kind, 0) + items
                total = totals.get(result.kind, 1)
                progress(_STEP_OF_KIND[result.kind], min(done[result.kind], total), total)
    return merge(results, env, kv_error, units_error)

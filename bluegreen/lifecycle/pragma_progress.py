"""Progress for single long PRAGMAs (quick_check, integrity_check, foreign_key_check).

A PRAGMA is one statement, so there is no row count to report. SQLite's progress handler (apsw
`Connection.set_progress_handler`) calls us every N virtual-machine instructions; the total is estimated from
the file's page count times a VM-instructions-per-page ratio measured here on generated nodes (2k and 20k
units: quick_check 199/220, integrity_check 544/603, foreign_key_check 104/116 per page). `done` is capped
just below the total until the PRAGMA returns, then reported as complete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apsw

Progress = Callable[[str, int, int], None]
VM_STEPS_PER_PAGE = {"quick_check": 220, "integrity_check": 600, "foreign_key_check": 120}
INSTRUCTIONS_PER_CALL = 100_000


def run_pragma(conn: apsw.Connection, sql: str, step: str, kind: str, progress: Progress | None) -> list[tuple[Any, ...]]:
    """Run `sql` (a PRAGMA of `kind`) and return its rows, calling progress(step, done, total) on the way."""
    if progress is None:
        return [tuple(r) for r in conn.execute(sql)]
    pages = int(next(iter(conn.execute("PRAGMA page_count")))[0]) or 1
    total = max(1, pages * VM_STEPS_PER_PAGE[kind] // INSTRUCTIONS_PER_CALL)
    calls = [0]

    def handler() -> int:
        calls[0] += 1
        progress(step, min(calls[0], total - 1) if total > 1 else 0, total)
        return 0  # 0 = go on (non-zero would interrupt the statement)

    progress(step, 0, total)
    conn.set_progress_handler(handler, INSTRUCTIONS_PER_CALL)
    try:
        rows = [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.set_progress_handler(None)
    progress(step, total, total)
    return rows

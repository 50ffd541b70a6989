"""Test-only crash injection: `killpoint(name)` SIGKILLs the process when `BLUEGREEN_KILL_AT` names it.

A no-op unless the environment variable matches exactly, so production runs pay one dict lookup.
Tests use it to prove every command is recoverable after a crash at that exact point."""

from __future__ import annotations

import os
import signal

ENV_VAR = "BLUEGREEN_KILL_AT"

# Every point the lifecycle passes, for documentation and for tests that iterate over them.
POINTS: tuple[str, ...] = (
    "snapshot.mid_copy",
    "snapshot.after_sqlite",
    "snapshot.mid_files",
    "stage.after_snapshot",
    "stage.before_migration",
    "stage.after_migration",
    "promote.before_swap",
    "promote.swap.after_journal",
    "promote.swap.after_exchange",
    "promote.swap.fallback_mid",
    "promote.after_swap",
    "rollback.before_swap",
    "rollback.swap.after_journal",
    "rollback.swap.after_exchange",
    "rollback.swap.fallback_mid",
    "rollback.after_swap",
    "abort.mid_remove",
)


def killpoint(name: str) -> None:
    """SIGKILL this process if `BLUEGREEN_KILL_AT` equals `name` (test hook; otherwise nothing)."""
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)

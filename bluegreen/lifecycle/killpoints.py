"""Kill points of the lifecycle (test-only crash injection, see bluegreen/killpoints.py).

`killpoint(name)` SIGKILLs the process when `BLUEGREEN_KILL_AT` names it (`name@N`: the N-th pass);
otherwise it does nothing. One implementation for the whole project: this module re-exports it and
lists the lifecycle's points."""

from __future__ import annotations

from bluegreen.killpoints import killpoint

__all__ = ["killpoint", "POINTS"]

# Every point the lifecycle passes, for documentation and for tests that iterate over them.
POINTS: tuple[str, ...] = (
    "snapshot.mid_copy",
    "snapshot.after_sqlite",
    "snapshot.mid_files",
    "stage.after_snapshot",
    "stage.before_migration",
    "stage.after_migration",
    "catchup.after_snapshot",
    "catchup.mid_joints",
    "catchup.before_commit",
    "catchup.before_install",
    "catchup.mid_install",
    "catchup.mid_patch",
    "catchup.after_patch",
    "promote.mid_kv_copy",
    "promote.before_swap",
    "promote.swap.after_journal",
    "promote.swap.after_exchange",
    "promote.swap.fallback_between",
    "promote.swap.fallback_mid",
    "promote.after_swap",
    "rollback.before_swap",
    "rollback.swap.after_journal",
    "rollback.swap.after_exchange",
    "rollback.swap.fallback_between",
    "rollback.swap.fallback_mid",
    "rollback.after_swap",
    "abort.mid_remove",
    "cleanup.mid_remove",
)


"""Test-only fault injection: `BLUEGREEN_KILL_AT=<name>` makes the process SIGKILL itself at that point.

A no-op unless the environment variable names the point (optionally `name@N` to die on the N-th pass),
so production runs are unaffected. Tests use it to prove every interruption is recoverable."""

from __future__ import annotations

import os
import signal

_ENV = "BLUEGREEN_KILL_AT"
_passes: dict[str, int] = {}


def killpoint(name: str) -> None:
    """SIGKILL this process if BLUEGREEN_KILL_AT names this point (and the pass count matches)."""
    wanted = os.environ.get(_ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition("@")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if nth and _passes[name] != int(nth):
        return
    os.kill(os.getpid(), signal.SIGKILL)

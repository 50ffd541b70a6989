"""SIGTERM and SIGHUP (an ssh drop) handled like Ctrl-C: raise an interrupt the commands already handle.

`BluegreenInterrupted` subclasses KeyboardInterrupt, so every `except KeyboardInterrupt: raise` path of the
lifecycle keeps the state resumable exactly as for Ctrl-C. Exit codes: 128 + signal number."""

from __future__ import annotations

import signal
from types import FrameType


class BluegreenInterrupted(KeyboardInterrupt):
    """The process received a terminating signal; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number (129 HUP, 143 TERM), the shell convention."""
        return 128 + self.signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    # Ignore further signals while unwinding, so a second TERM does not cut the state save short.
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise BluegreenInterrupted(signum)


def install() -> None:
    """Turn SIGTERM and SIGHUP into BluegreenInterrupted in the main thread."""
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)

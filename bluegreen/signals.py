"""SIGTERM and SIGHUP (an ssh drop) handled like Ctrl-C: raise an interrupt the commands already handle.

`BluegreenInterrupted` subclasses KeyboardInterrupt, so every `except KeyboardInterrupt: raise` path of the
lifecycle keeps the state resumable exactly as for Ctrl-C. Exit codes: 128 + signal number."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_deferring = 0  # depth of `deferred()` sections
_pending: int | None = None  # a signal that arrived inside one, raised at its end


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
    global _pending
    # Ignore further signals while unwinding, so a second TERM does not cut the state save short.
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    if _deferring:
        _pending = signum
        return
    raise BluegreenInterrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """A section a signal must not cut: a TERM/HUP arriving inside is raised when it ends.

    Needed around pydantic serialisation (its Rust core runs Python signal handlers and wraps what they
    raise in a PydanticSerializationError, which would surface as an internal error) and state writes."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _deferring == 0 and _pending is not None:
        signum, _pending = _pending, None
        raise BluegreenInterrupted(signum)


def install() -> None:
    """Turn SIGTERM and SIGHUP into BluegreenInterrupted in the main thread."""
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)


def interrupt_inside(exc: BaseException) -> int | None:
    """The signal of a BluegreenInterrupted that a library caught and re-raised as its own error (pydantic's
    core wraps what a signal handler raises during serialisation), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BluegreenInterrupted):
            return seen.signum
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    for s in (signal.SIGTERM, signal.SIGHUP):
        if f"BluegreenInterrupted: {s.name}" in text:
            return int(s)
    return None


def reraise_if_interrupt(exc: BaseException) -> None:
    """Raise the BluegreenInterrupted wrapped inside `exc` (see `interrupt_inside`), if there is one."""
    signum = interrupt_inside(exc)
    if signum is not None:
        raise BluegreenInterrupted(signum) from exc

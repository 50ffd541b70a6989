"""The detailed log: `<staging>/bluegreen.log` (command start/end with args, phase changes, steps with
timings, warnings, errors with tracebacks), through Python logging under the `bluegreen` logger.

Lines logged before the staging area exists are buffered and written as soon as it does (`attach`)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

LOG_NAME = "bluegreen.log"
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("bluegreen")
_buffer: logging.handlers.MemoryHandler | None = None
_file: logging.FileHandler | None = None


def setup(verbose: bool = False) -> None:
    """Log everything at DEBUG into a buffer (then the file); with `verbose` also echo to stderr."""
    global _buffer
    log.setLevel(logging.DEBUG)
    log.propagate = False
    if _buffer is None:
        _buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        log.addHandler(_buffer)
    if verbose and not any(getattr(h, "_bluegreen_stderr", False) for h in log.handlers):
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        err._bluegreen_stderr = True  # type: ignore[attr-defined]
        log.addHandler(err)


def attach(staging_dir: Path) -> None:
    """Start writing `<staging_dir>/bluegreen.log` (appending), flushing what was buffered. Idempotent."""
    global _file
    if _buffer is None or _file is not None or not staging_dir.is_dir():
        return
    _file = logging.FileHandler(staging_dir / LOG_NAME, encoding="utf-8")
    _file.setFormatter(logging.Formatter(FORMAT))
    _buffer.setTarget(_file)
    _buffer.flush()
    log.removeHandler(_buffer)
    log.addHandler(_file)


def close() -> None:
    """Flush and close the file (end of the command)."""
    global _file
    if _file is not None:
        _file.flush()
        _file.close()
        log.removeHandler(_file)
        _file = None

"""Our own exception types. Each carries what the operator needs: what went wrong and the next step.

Exit codes are part of the CLI contract (docs/exit-codes.md)."""

from __future__ import annotations


class BluegreenError(Exception):
    """Base of every error we raise on purpose. `hint` is the next step for the operator."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n  next step: {self.hint}"


class BadInputError(BluegreenError):
    """The data dir, staging area or options are not usable (wrong path, not an ocore dir, ...)."""

    exit_code = 2


class PreflightError(BluegreenError):
    """A precondition of the command does not hold (node running, not enough space, wrong phase, ...)."""

    exit_code = 3


class NodeRunningError(PreflightError):
    """The node (or some other process) has the live database open."""

    exit_code = 4


class SourceDataError(BluegreenError):
    """The source database itself is damaged: corrupt file, units failing their hash, missing rows."""

    exit_code = 5


class MigrationError(BluegreenError):
    """The migration of the green copy could not complete; the copy is discardable, blue is untouched."""

    exit_code = 6


class VerificationFailed(BluegreenError):
    """`upgrade verify` found at least one failed check."""

    exit_code = 7


class DriftError(PreflightError):
    """Blue changed since stage (or green changed since promote)."""

    exit_code = 8


class LockedError(PreflightError):
    """Another `upgrade` process holds the staging lock."""

    exit_code = 9


class OutOfSpaceError(BluegreenError):
    """The staging filesystem ran out of space (or would)."""

    exit_code = 10


class BluePreviousChangedError(PreflightError):
    """`<staging>/blue-previous/` is not what promote set aside (changed, files added/removed, or missing):
    rollback would swap in data that is not the old blue."""

    exit_code = 11


class UnsavedDataError(PreflightError):
    """The staging area holds data that exists nowhere else (the node's writes to green, set aside by a
    forced rollback); abort refuses to delete it unless told to."""

    exit_code = 12

"""The result of `upgrade verify`: one `VerifyCheck` per check, gathered in a `VerifyReport`.

Both are pydantic models because they are persisted (`reports/verify-*.json`) and printed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from bluegreen.version import tool_version

MAX_FIRST_FAILURES = 20


class VerifyCheck(BaseModel):
    """One check: how many items it looked at, how many failed, and the first offending items."""

    name: str
    passed: bool
    checked: int = 0
    failed: int = 0
    first_failures: list[str] = Field(default_factory=list)
    detail: str = ""
    seconds: float | None = None  # work time of the check (summed over its parallel parts); None: not timed

    @field_validator("first_failures")
    @classmethod
    def _cap_failures(cls, value: list[str]) -> list[str]:
        # A report must stay readable even when millions of items fail.
        return value[:MAX_FIRST_FAILURES]

    def line(self) -> str:
        """One-line human summary of this check."""
        status = "PASS" if self.passed else "FAIL"
        text = f"[{status}] {self.name}: {self.checked} checked, {self.failed} failed"
        if self.detail:
            text += f" ({self.detail})"
        return text


class VerifyReport(BaseModel):
    """Everything `verify_green` found; `passed` is true only when every check passed."""

    passed: bool
    tool_version: str = Field(default_factory=tool_version)  # the bluegreen that ran the checks
    started_at: datetime
    finished_at: datetime
    target_version: int
    source_version: int | None = None  # blue's version at stage (set by the lifecycle; None from verify_green)
    sample: int | None
    blue_dir: Path
    green_dir: Path
    checks: list[VerifyCheck]
    # What the operator should know about how far the checks went (e.g. the node probe skipped).
    warnings: list[str] = Field(default_factory=list)

    def failed_checks(self) -> list[VerifyCheck]:
        """The checks that did not pass, in report order."""
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """Multi-line text for the operator: verdict, one line per check, first failures of failed checks."""
        mode = "full" if self.sample is None else f"sample of {self.sample}"
        verdict = "PASSED" if self.passed else "FAILED"
        seconds = (self.finished_at - self.started_at).total_seconds()
        lines = [
            f"verify {verdict}: green {self.green_dir} against blue {self.blue_dir}",
            f"  source version {self.source_version} -> target version {self.target_version}, {mode}, "
            f"{seconds:.1f}s, bluegreen {self.tool_version}",
        ]
        for check in self.checks:
            lines.append("  " + check.line())
            if not check.passed:
                for item in check.first_failures:
                    lines.append(f"      - {item}")
                if check.failed > len(check.first_failures):
                    lines.append(f"      ... and {check.failed - len(check.first_failures)} more")
        return "\n".join(lines)

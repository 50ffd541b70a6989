"""Which schema version `stage` migrates to, and why (`--to N`, the node's ocore, or the highest we know).

The default is the node's own: the `VERSION` of the ocore in the node program found for the data dir
(the program verify's probe uses). Staging above it would give the node a database it refuses at start;
staging below it is safe (ocore migrates the rest itself) but slower for the operator. Without a node
program found we take the highest version we know, and say so."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bluegreen.errors import PreflightError
from bluegreen.nodecompat.ocore import OcoreInfo
from bluegreen.nodecompat.probe import find_node_app
from bluegreen.schema.reference import available_references
from bluegreen.schema.steps import SUPPORTED_TARGETS, max_known_version


class TargetChoice(BaseModel):
    """The target version, where it came from (`origin`, for state.json, plan and status), and either a
    note for the operator or a refusal (`refusal` + `hint`) that stage raises before copying anything."""

    version: int
    origin: str
    explicit: bool = False
    ocore: OcoreInfo | None = None
    note: str | None = None
    refusal: str | None = None
    hint: str = ""

    def raise_if_refused(self) -> None:
        """Raise the refusal as a PreflightError, or do nothing."""
        if self.refusal:
            raise PreflightError(self.refusal, self.hint)


def _released() -> set[int]:
    """Targets ocore has released (those with a reference schema in schemas/reference)."""
    return {v for v, _light in available_references()}


def _supported() -> str:
    return f"{min(SUPPORTED_TARGETS)}..{max(SUPPORTED_TARGETS)}"


def choose_target(data_dir: Path, explicit: int | None) -> TargetChoice:
    """`--to N` when given, else the node's ocore VERSION, else `max_known_version()` with a note."""
    app = find_node_app(data_dir)
    ocore = app.ocore if app is not None else None
    if explicit is not None:
        choice = TargetChoice(version=explicit, origin="--to", explicit=True, ocore=ocore)
        if explicit not in SUPPORTED_TARGETS:
            choice.refusal = (f"target version {explicit} is not supported: bluegreen knows ocore's schema steps "
                              f"up to {max_known_version()} (supported targets {_supported()})")
            choice.hint = f"give --to N with N in {_supported()}, or omit --to (the node's own version)"
        elif explicit not in _released():
            # ocore's VERSION went 32 -> 34 and 36 -> 38: no node ever expects these, and verify has no
            # reference schema for them, so green could never pass it.
            choice.refusal = (f"no ocore release declares schema version {explicit} (its VERSION skipped it), so "
                              "no node expects it and verify has no reference schema for it")
            choice.hint = f"give --to {explicit - 1} or --to {explicit + 1}, or omit --to (the node's own version)"
        elif ocore is not None and ocore.schema_version is not None and ocore.schema_version < explicit:
            choice.note = (f"the node's {ocore.describe()} refuses a database at version {explicit} (it only reads "
                           f"up to {ocore.schema_version}): update the node program before promote; verify fails "
                           "its check until then")
        return choice
    if ocore is None:
        where = f"node program {app.app_dir} has no node_modules/ocore" if app is not None else (
            f"no node program named {data_dir.name!r} was found (a dir whose package.json has that name)")
        top = max_known_version()
        return TargetChoice(version=top, origin=f"highest known version; {where}",
                            note=f"target version {top}, the highest bluegreen knows, because {where}; "
                                 f"the node must run an ocore whose sqlite_migrations.js VERSION is at least "
                                 f"{top}, or give --to N", )
    origin = f"the node's {ocore.describe()}"
    if ocore.schema_version is None:
        return TargetChoice(version=max_known_version(), origin=origin, ocore=ocore,
                            refusal=f"cannot tell which schema version the node's ocore expects: {ocore.problem}",
                            hint="give the target explicitly: --to N (N = the VERSION in the node's "
                                 "node_modules/ocore/sqlite_migrations.js)")
    v = ocore.schema_version
    choice = TargetChoice(version=v, origin=origin, ocore=ocore)
    if v > max_known_version():
        choice.refusal = (f"the node's ocore expects schema version {v} ({ocore.describe()}), newer than this "
                          f"bluegreen knows (up to {max_known_version()})")
        choice.hint = (f"upgrade bluegreen, or give --to N with N <= {max_known_version()} (the node migrates "
                       f"from N to {v} itself at start)")
    elif v < min(SUPPORTED_TARGETS):
        choice.refusal = (f"the node's ocore expects schema version {v} ({ocore.describe()}), older than the "
                          f"first version bluegreen produces ({min(SUPPORTED_TARGETS)}): it would refuse the "
                          "upgraded database")
        choice.hint = "update the node program (npm update ocore) first, then run stage again"
    return choice

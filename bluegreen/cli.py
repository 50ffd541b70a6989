"""`upgrade`: the operator's command line, a thin typer layer over bluegreen.lifecycle.command.

Every command prints a human summary (or one JSON document with --json), and exits with the code
of docs/exit-codes.md. Errors print what went wrong and the next step."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup
from pydantic import BaseModel

from bluegreen import signals
from bluegreen.errors import BluegreenError, UnsavedDataError
from bluegreen.lifecycle import command, logfile, pointer
from bluegreen.lifecycle import plan as planmod
from bluegreen.lifecycle.results import CommandResult, ErrorResult, StatusResult, VerifyResult
from bluegreen.version import tool_version

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70
OPTIONS: dict[str, bool] = {"quiet": False}  # global options, set by the app callback
log = logging.getLogger("bluegreen.cli")
EXIT_USAGE = 2  # click/typer usage errors: same code as BadInputError

class _FlagsWithoutPlaceholder:
    """typer's rich help shows `<bool>` for flags (also --help and --install-completion, which we do not
    declare): give every flag an empty metavar, so only options taking a value show one."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params


class _Group(_FlagsWithoutPlaceholder, TyperGroup):
    pass


class _Command(_FlagsWithoutPlaceholder, TyperCommand):
    pass


app = typer.Typer(
    name="upgrade",
    cls=_Group,
    add_completion=True,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Blue/green upgrade of an Obyte (ocore) node database to the schema version its ocore expects"
        " (31..50; `--to N` to choose).\n\n"
        "The node's data dir (blue) is only ever READ, except by the final swap in `promote` (and `rollback`),"
        " which renames directories. Everything else is written in the staging area, a sibling dir"
        " `<data-dir>.bluegreen/` on the same filesystem: state.json, audit.log, lock, green/ (the migrated"
        " copy), reports/, work/, and after promote blue-previous/ (the old data, kept for rollback).\n\n"
        "Flow: stage -> verify -> (stop the node) promote -> start the node; if needed: stop, rollback."
        " Once satisfied: cleanup (deletes the old data; final). Every command is safe to re-run and safe to"
        " kill; the next command finishes or undoes what was in flight. Exit codes: 0 done (or nothing to do),"
        " 2 bad input, 3 precondition, 4 node running, 5 damaged source, 6 migration failed, 7 verify failed,"
        " 8 drift, 9 locked, 10 out of space, 70 internal error, 129/130/143 interrupted (re-run to resume)."
    ),
)

DataDir = typer.Option(None, "--data-dir", help="The node's data dir (default: the one ~/.config/<app> holding "
                       "byteball.sqlite or byteball-light.sqlite).")
StagingDir = typer.Option(None, "--staging-dir", help="Staging area (default: <data-dir>.bluegreen, same "
                          "filesystem as the data dir).", file_okay=False)
Jobs = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes for the CPU-bound part (default: the "
                    "usable cores; 1: all in this process). The output is the same for any value.")
JsonOut = typer.Option(False, "--json", help="Print one JSON document instead of text (its JSON Schema: "
                       "`upgrade schema <command>-result`).")
To = typer.Option(None, "--to", metavar="N", help="Schema version to reach, 31..50 (default: the VERSION in "
                  "the node program's node_modules/ocore/sqlite_migrations.js; 50 when no node program is found).")
# The old name, kept working for scripts; hidden from --help.
TargetVersion = typer.Option(None, "--target-version", hidden=True)
Yes = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (for scripts). On a terminal the "
                   "command asks first.")


def _confirm(question: str, yes: bool, as_json: bool) -> None:
    """Ask on a terminal unless --yes; without a terminal (scripts) go ahead as before."""
    if yes or as_json or not sys.stdin.isatty():
        return
    if not typer.confirm(question, default=False):
        typer.echo("not confirmed; nothing was done", err=True)
        raise typer.Exit(1)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bluegreen {tool_version()}")
        raise typer.Exit(0)


@app.callback()
def _global(version: bool = typer.Option(False, "--version", help="Print the tool version and exit.",
                                         callback=_version_callback, is_eager=True),
            verbose: bool = typer.Option(False, "--verbose", "-v", help="Also echo the detailed log "
                                         "(<staging>/bluegreen.log) to stderr."),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the "
                                       "final line (no progress, no details).")) -> None:
    """Blue/green upgrade of an Obyte (ocore) node database to the schema version its ocore expects."""
    OPTIONS["quiet"] = quiet and not verbose
    logfile.setup(verbose=verbose)


def duration(seconds: float) -> str:
    """A duration for people: 42s, 3m05s, 1h02m."""
    n = int(round(max(seconds, 0.0)))
    if n < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{n}s"
    if n < 3600:
        return f"{n // 60}m{n % 60:02d}s"
    return f"{n // 3600}h{n % 3600 // 60:02d}m"


class Progress:
    """Progress bar with ETA on a terminal; a line every 10 s (or per step change) otherwise. Writes to stderr."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.step = ""
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        if step != self.step:
            if self.tty and self.step:
                sys.stderr.write("\n")
            self.step, self.t0, self.last = step, now, 0.0
        frac = done / total if total else 1.0
        elapsed = now - self.t0
        eta = duration(elapsed / frac - elapsed) if 0 < frac < 1 and elapsed > 1 else "-"
        if self.tty:
            if now - self.last < 0.2 and done != total:
                return
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{step:>16} [{bar:<30}] {frac:6.1%} {done}/{total} ETA {eta}   ")
            if done == total:
                sys.stderr.write("\n")
        else:
            if now - self.last < 10 and done != total and self.last:
                return
            sys.stderr.write(f"{step}: {done}/{total} ({frac:.1%}), elapsed {duration(elapsed)}, ETA {eta}\n")
        self.last = now
        sys.stderr.flush()


def _print_text(result: CommandResult) -> None:
    for note in result.recovered:
        typer.echo(f"recovered: {note}")
    if isinstance(result, VerifyResult) and result.report is not None and not result.noop:
        typer.echo(result.report.summary())
    if isinstance(result, StatusResult):
        _print_status(result)
    if isinstance(result, planmod.PlanResult):
        typer.echo(planmod.describe(result))
    typer.echo(result.message)
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    if result.next_step:
        typer.echo(f"next step: {result.next_step}")


def _print_status(s: StatusResult) -> None:
    typer.echo(f"data dir:    {s.data_dir} (version {s.data_dir_version})")
    typer.echo(f"staging:     {s.staging_dir}")
    typer.echo(f"phase:       {s.phase.value}")
    if s.staged:
        typer.echo(f"versions:    source {s.source_version} -> target {s.target_version}"
                   + (f", green now {s.green_version}" if s.green_version is not None else ""))
        if s.target_origin:
            typer.echo(f"target from: {s.target_origin}")
    typer.echo(f"tool:        bluegreen {s.tool_version}"
               + (f" (state saved by {s.state_tool_version})" if s.state_tool_version
                  and s.state_tool_version != s.tool_version else ""))
    for name, size in s.sizes.items():
        typer.echo(f"size:        {name} {size / (1 << 20):.1f} MiB")
    if s.progress:
        p = s.progress
        frac = f" ({p.done / p.total:.1%})" if p.total else ""
        line = (f"progress:    {p.command + ': ' if p.command else ''}{p.step} {p.done}/{p.total}{frac} "
                f"(updated {p.updated_at:%H:%M:%S} UTC)")
        if s.step_of is not None:
            line += f", step {s.step_of[0]} of {s.step_of[1]}"
        if s.eta_seconds is not None and s.eta_at is not None:
            line += f"; ETA {duration(s.eta_seconds)} for this step (about {s.eta_at:%H:%M:%S} UTC)"
        elif s.locked_by_pid is None:
            line += "; reported by a run that is no longer running"
        typer.echo(line)
    if s.work:
        typer.echo("work:        " + ", ".join(
            f"{w.what} {duration(w.seconds)}" + (" so far" if w.running else "") for w in s.work))
    for t in s.timings:  # every entry: the history is short and each line matters when something went wrong
        frm = f"{t.from_phase.value} -> " if t.from_phase is not None else ""
        took = f" (took {duration(t.work_seconds)})" if t.work_seconds is not None else ""
        typer.echo(f"history:     {t.entered_at:%Y-%m-%d %H:%M:%S} {frm}{t.phase.value}{took}"
                   + (f": {t.note.splitlines()[0]}" if t.note else ""))
    if s.last_verify:
        v = s.last_verify
        typer.echo(f"last verify: {'passed' if v.passed else 'FAILED ' + ', '.join(v.failed_checks)} at "
                   f"{v.finished_at:%Y-%m-%d %H:%M:%S} ({'full' if v.sample is None else f'sample {v.sample}'}); "
                   f"{v.report_path}")
    if s.last_swap:
        typer.echo(f"last swap:   {s.last_swap.op} by {s.last_swap.mechanism}"
                   + (" (finished by recovery)" if s.last_swap.recovered else ""))
    if s.node is not None:
        typer.echo("node:        " + ("RUNNING\n" + s.node.describe() if s.node.running else "not running"))
    for d in s.blue_drift[:10]:
        typer.echo(f"blue drift:  {d}")
    for problem in s.problems:
        typer.echo(f"problem:     {problem}")
    for d in s.blue_previous_problems[:10]:
        typer.echo(f"old data:    {d}")
    if len(s.blue_previous_problems) > 10:
        typer.echo(f"old data:    ... and {len(s.blue_previous_problems) - 10} more")
    if s.green_unique_changes is not None:
        typer.echo("unsaved:     the node's writes set aside in green/ by a forced rollback:\n"
                   + s.green_unique_changes.describe())
    if s.last_error:
        typer.echo(f"last error:  {s.last_error}")


def _emit_json(model: BaseModel) -> None:
    typer.echo(model.model_dump_json(indent=2))


class _StepLog:
    """Wraps a progress callback: logs every step's start and end with its duration."""

    def __init__(self, user: Any) -> None:
        self.user, self.step, self.t0 = user, "", time.monotonic()

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        if step != self.step:
            if self.step:
                log.info("step %s finished in %.2fs", self.step, now - self.t0)
            self.step, self.t0 = step, now
            log.info("step %s started (total %d)", step, total)
        if self.user is not None and not OPTIONS["quiet"]:
            self.user(step, done, total)


def _run(name: str, as_json: bool, fn: Any, **kwargs: Any) -> None:
    log.info("upgrade %s started: bluegreen %s, argv %s, pid %d", name, tool_version(), sys.argv[1:], os.getpid())
    t0 = time.monotonic()
    if "progress" in kwargs:
        kwargs["progress"] = _StepLog(kwargs["progress"])
    try:
        _run_inner(name, as_json, fn, **kwargs)
    except typer.Exit as exit_:
        level = logging.INFO if exit_.exit_code == 0 else logging.ERROR
        log.log(level, "upgrade %s ended: exit %d after %.2fs", name, exit_.exit_code, time.monotonic() - t0)
        staging = kwargs.get("staging_dir")
        if staging is None and kwargs.get("data_dir") is not None:
            staging = Path(os.path.abspath(kwargs["data_dir"])).with_name(
                Path(os.path.abspath(kwargs["data_dir"])).name + ".bluegreen")
        if staging is not None:
            logfile.attach(Path(staging))
        logfile.close()
        raise


def _run_inner(name: str, as_json: bool, fn: Any, **kwargs: Any) -> None:
    try:
        result: CommandResult = fn(**kwargs)
    except BluegreenError as exc:
        log.error("%s: %s (hint: %s)", type(exc).__name__, exc.message, exc.hint)
        if as_json:
            _emit_json(ErrorResult(command=name, error=type(exc).__name__, message=exc.message, hint=exc.hint,
                                   exit_code=exc.exit_code))
        else:
            typer.echo(f"upgrade {name}: {exc.message}", err=True)
            if exc.hint:
                typer.echo(f"next step: {exc.hint}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except typer.Exit:
        raise  # a confirmation inside the command was answered no
    except KeyboardInterrupt as exc:
        log.warning("interrupted", exc_info=True)
        why, code = ((f"interrupted by {exc.args[0]}", exc.exit_code) if isinstance(exc, signals.BluegreenInterrupted)
                     else ("interrupted", EXIT_INTERRUPTED))
        typer.echo(f"\nupgrade {name}: {why}; the state is saved and blue is untouched. Re-run `upgrade {name}` "
                   "to resume (or `upgrade status`).", err=True)
        if as_json:
            _emit_json(ErrorResult(command=name, error="Interrupted", message=why,
                                   hint=f"re-run `upgrade {name}` to resume", exit_code=code))
        raise typer.Exit(code) from None
    except Exception as exc:  # a bug, not an operator error: show everything, keep a distinct exit code
        signum = signals.interrupt_inside(exc)
        if signum is not None:  # a TERM/HUP raised inside pydantic's core comes back wrapped: it is an interrupt
            return _run_inner(name, as_json, _reraise, exc=signals.BluegreenInterrupted(signum))
        log.error("internal error", exc_info=True)
        traceback.print_exc()
        if as_json:
            _emit_json(ErrorResult(command=name, error=type(exc).__name__, message=str(exc),
                                   hint="internal error; run `upgrade status` and report this", exit_code=EXIT_INTERNAL))
        raise typer.Exit(EXIT_INTERNAL) from None
    for w in result.warnings:
        log.warning("%s", w)
    for note in result.recovered:
        log.info("recovered: %s", note)
    log.info("result: %s", result.message)
    if as_json:
        _emit_json(result)
    elif OPTIONS["quiet"]:
        typer.echo(result.message)
    else:
        _print_text(result)
    raise typer.Exit(result.exit_code)


def _target(to: Optional[int], target_version: Optional[int]) -> Optional[int]:
    """`--to`, or its hidden old name `--target-version`; both with different values is a usage error."""
    if to is not None and target_version is not None and to != target_version:
        raise typer.BadParameter(f"--to {to} and --target-version {target_version} disagree; give only --to",
                                 param_hint="--to")
    return to if to is not None else target_version


def _reraise(exc: BaseException) -> CommandResult:
    raise exc


def _stage_remembering(**kw: Any) -> CommandResult:
    """command.stage, then (also when interrupted) the pointer to a staging area given with --staging-dir."""
    try:
        return command.stage(**kw)
    finally:
        given = kw.get("staging_dir")
        if given is not None and Path(given).is_dir() and kw.get("data_dir") is not None:
            pointer.remember(Path(os.path.abspath(kw["data_dir"])), Path(os.path.abspath(given)))


def _abort_forgetting(yes: bool = False, json_out: bool = False, **kw: Any) -> CommandResult:
    """command.abort, then the pointer goes too once the staging area it names is gone.

    When green holds the node's writes (a forced rollback set them aside), abort refuses; `--yes` deletes
    them anyway, and on a terminal the operator is asked (a script without --yes gets the refusal)."""
    try:
        result = command.abort(discard_node_writes=yes, **kw)
    except UnsavedDataError as exc:
        if json_out or not sys.stdin.isatty():
            raise
        typer.echo(exc.message, err=True)
        if not typer.confirm("DELETE these writes of the node together with the staging area?", default=False):
            typer.echo("not confirmed; nothing was done", err=True)
            raise typer.Exit(1) from None
        result = command.abort(discard_node_writes=True, **kw)
    if not result.staging_dir.exists():
        pointer.forget(result.data_dir)
    return result


@app.command(cls=_Command)
def stage(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir, as_json: bool = JsonOut,
          genesis_unit: Optional[str] = typer.Option(None, "--genesis-unit",
                                                     help="Devnet: the genesis unit (default: from the data)."),
          to: Optional[int] = To, target_version: Optional[int] = TargetVersion,
          dry_run: bool = typer.Option(False, "--dry-run", help="Write nothing; show what stage would do "
                                       "(the same as `upgrade plan`)."),
          online: bool = typer.Option(False, "--online", help="The node may keep running (sources below 31 "
                                      "without a KV store): copy SQLite in small steps inside one read "
                                      "transaction and record the snapshot position; promote still needs "
                                      "the node stopped and blue unchanged."),
          jobs: Optional[int] = Jobs) -> None:
    """Copy the data dir into the staging area and migrate the COPY to the target version.

    The target is --to N, else the schema VERSION of the ocore in the node program found for the data dir
    (a program dir whose package.json name is the data dir's name), else 50 (with a warning).

    Reads the data dir (SQLite through its backup API, rocksdb/ and other files copied, .sst hard-linked);
    writes only in the staging area. Refuses when the node is running with a KV store, when space is short,
    or when the source fails PRAGMA quick_check. Re-run after a crash or Ctrl-C: it resumes."""
    target_version = _target(to, target_version)
    if dry_run:
        _run("plan", as_json, planmod.plan, data_dir=data_dir, staging_dir=staging_dir, target_version=target_version)
    _run("stage", as_json, _stage_remembering, data_dir=data_dir, staging_dir=staging_dir, target_version=target_version,
         genesis_unit=genesis_unit, progress=None if as_json else Progress(), online=online, jobs=jobs)


@app.command(cls=_Command)
def plan(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir, as_json: bool = JsonOut,
         to: Optional[int] = To, target_version: Optional[int] = TargetVersion) -> None:
    """Show what `stage` would do, writing NOTHING (not even the staging dir).

    Prints the source version (read from the SQLite header), the target and where it came from (--to, the
    node's ocore, or the highest known), each schema step that would run,
    the unit count, the space stage needs vs the free space (and how that was computed), whether the node is
    running, the node's node_modules and ocore version found, and a time estimate from the unit count."""
    _run("plan", as_json, planmod.plan, data_dir=data_dir, staging_dir=staging_dir,
         target_version=_target(to, target_version))


@app.command(cls=_Command)
def verify(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir, as_json: bool = JsonOut,
           sample: Optional[int] = typer.Option(None, "--sample", help="Check N random units/feeds/balls only "
                                                "(quick pass); full by default."),
           node_modules: Optional[Path] = typer.Option(None, "--node-modules", help="Also read green with the "
                                                       "node's own npm libraries found in this node_modules."),
           genesis_unit: Optional[str] = typer.Option(None, "--genesis-unit", help="Devnet genesis unit."),
           force: bool = typer.Option(False, "--force", help="Verify again even though the last verify passed "
                                      "and nothing changed since."),
           require_node_probe: bool = typer.Option(False, "--require-node-probe", help="Fail verify when the "
                                                   "node's own libraries cannot be probed (no node_modules or no "
                                                   "`node` found)."),
           no_node_probe: bool = typer.Option(False, "--no-node-probe", help="Skip the probe with the node's own "
                                              "libraries (a warning says so, in the report too)."),
           jobs: Optional[int] = Jobs) -> None:
    """Check the staged green copy against blue and write a report (staging/reports/verify-*.json).

    Reads blue and green; writes only the report and the state. Exits 7 when any check fails. When the last
    verify passed and nothing changed it does nothing, unless --force or --node-modules is given."""
    _run("verify", as_json, command.verify, data_dir=data_dir, staging_dir=staging_dir, sample=sample,
         node_modules=node_modules, genesis_unit=genesis_unit, force=force, require_node_probe=require_node_probe,
         no_node_probe=no_node_probe, progress=None if as_json else Progress(), jobs=jobs)


@app.command(cls=_Command)
def promote(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir,
            as_json: bool = JsonOut, yes: bool = Yes) -> None:
    """Swap the verified green copy in as the data dir (stop the node first).

    Refuses unless the latest verify passed and green is unchanged since, blue has not changed since stage,
    and nothing has the data dir open. Copies blue's changed small files (conf.json, ...) into green, then
    swaps the two directories with one atomic rename (renameat2 RENAME_EXCHANGE; a journaled rename sequence
    where that is impossible). The old data is kept in <staging>/blue-previous for rollback."""
    _confirm("Swap the staged green copy in as the node's data dir (the node must be stopped)?", yes, as_json)
    _run("promote", as_json, command.promote, data_dir=data_dir, staging_dir=staging_dir,
         progress=None if as_json else Progress())


@app.command("catch-up", cls=_Command)
def catch_up(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir,
             as_json: bool = JsonOut) -> None:
    """Bring an online-staged green up to blue's current state; the node may keep running.

    Takes a fresh consistent snapshot of blue, finds every row that changed since the last snapshot or
    catch-up, and rewrites only the affected joints and feed keys of green. Run it any number of times;
    promote (node stopped) runs a last one."""
    _run("catch-up", as_json, command.catch_up, data_dir=data_dir, staging_dir=staging_dir,
         progress=None if as_json else Progress())


@app.command(cls=_Command)
def rollback(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir, as_json: bool = JsonOut,
             force: bool = typer.Option(False, "--force", help="Roll back even though the node wrote to the "
                                        "upgraded data since promote (those writes are set aside, not kept live)."),
             yes: bool = Yes) -> None:
    """Swap the old data back in after a promote (stop the node first).

    Refuses, listing rows added per table and KV keys added, when the node wrote to the upgraded data since
    promote, unless --force. Touches only the two directories being swapped."""
    _confirm("Swap the old data back in as the node's data dir"
             + (", DISCARDING what the node wrote since promote" if force else "") + "?", yes, as_json)
    _run("rollback", as_json, command.rollback, data_dir=data_dir, staging_dir=staging_dir, force=force,
         progress=None if as_json else Progress())


@app.command(cls=_Command)
def status(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir,
           as_json: bool = JsonOut) -> None:
    """Show phase, versions, sizes, progress, timings, last verify, swap mechanism and the next step.

    Read-only, except that it first finishes or undoes a command that was killed mid-way."""
    _run("status", as_json, command.status, data_dir=data_dir, staging_dir=staging_dir)


@app.command(cls=_Command)
def abort(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir,
          as_json: bool = JsonOut, yes: bool = Yes) -> None:
    """Remove green and the whole staging area (before promote only). Never touches the data dir.

    Refuses (exit 12) when green holds what the node wrote after promote and `rollback --force` set aside
    there; on a terminal it asks, `--yes` deletes those writes too."""
    _confirm("Remove green and the whole staging area (the data dir is not touched)?", yes, as_json)
    _run("abort", as_json, _abort_forgetting, data_dir=data_dir, staging_dir=staging_dir, yes=yes, json_out=as_json)


@app.command(cls=_Command)
def schema(name: Optional[str] = typer.Argument(None, help="A schema name, e.g. status-result or staging-state "
                                                "(omit it to list them).")) -> None:
    """Print the JSON Schema of a --json document or persisted file (shipped with the package).

    Without NAME, lists the schema names and where they are installed. Reads nothing else."""
    from bluegreen import jsonschemas

    if name is None:
        typer.echo(f"JSON Schemas in {jsonschemas.schema_root()}:")
        for n in jsonschemas.names():
            typer.echo(f"  {n}")
        raise typer.Exit(0)
    try:
        doc = jsonschemas.load(name)
    except BluegreenError as exc:
        typer.echo(f"upgrade schema: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"next step: {exc.hint}", err=True)
        raise typer.Exit(exc.exit_code) from None
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def _cleanup_forgetting(**kw: Any) -> CommandResult:
    """command.cleanup, then the pointer goes too once the staging area it names is gone."""
    result = command.cleanup(**kw)
    if not result.staging_dir.exists():
        pointer.forget(result.data_dir)
    return result


@app.command(cls=_Command)
def cleanup(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir,
            as_json: bool = JsonOut, yes: bool = Yes) -> None:
    """After a promote you are satisfied with: DELETE the old data (<staging>/blue-previous/) for good.

    Final: afterwards `upgrade rollback` is impossible. Keeps audit.log, bluegreen.log, reports/ and the final
    state.json in <staging>-cleaned-<time>/ and removes the staging area. Refuses in any other phase, when the
    data dir does not hold the upgraded data, or when something uses the old data. Never touches the data dir."""
    _confirm("DELETE the old data (blue-previous/ in the staging area) for good? This is final: `upgrade rollback` "
             "will no longer be possible", yes, as_json)
    _run("cleanup", as_json, _cleanup_forgetting, data_dir=data_dir, staging_dir=staging_dir)


def _json_usage_error(argv: list[str]) -> int | None:
    """With --json, run the app without click's own error printing and turn a usage error into an ErrorResult."""
    try:  # typer >= 0.2x vendors click; older typer uses the click package
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click.exceptions import UsageError  # type: ignore[no-redef]

    known = {"stage", "plan", "verify", "promote", "rollback", "status", "abort", "cleanup", "schema", "catch-up"}
    name = next((a for a in argv if a in known), "upgrade")
    try:
        rc = app(args=argv, standalone_mode=False)
    except UsageError as exc:
        _emit_json(ErrorResult(command=name, error="UsageError", message=exc.format_message(),
                               hint=f"see `upgrade {'' if name == 'upgrade' else name + ' '}--help`",
                               exit_code=EXIT_USAGE))
        return EXIT_USAGE
    return rc if isinstance(rc, int) else 0


def main() -> None:
    """Entry point of `upgrade` and `python -m bluegreen`."""
    signals.install()
    argv = sys.argv[1:]
    try:
        if "--json" in argv:
            sys.exit(_json_usage_error(argv))
        app()
    except BluegreenError as exc:  # pragma: no cover - _run catches these; belt and braces
        typer.echo(str(exc), err=True)
        sys.exit(exc.exit_code)

"""`upgrade`: the operator's command line, a thin typer layer over bluegreen.lifecycle.command.

Every command prints a human summary (or one JSON document with --json), and exits with the code
of docs/exit-codes.md. Errors print what went wrong and the next step."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import BaseModel

from bluegreen import signals
from bluegreen.errors import BluegreenError
from bluegreen.lifecycle import command, logfile, pointer
from bluegreen.lifecycle import plan as planmod
from bluegreen.lifecycle.results import CommandResult, ErrorResult, StatusResult, VerifyResult
from bluegreen.version import tool_version

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70
OPTIONS: dict[str, bool] = {"quiet": False}  # global options, set by the app callback
log = logging.getLogger("bluegreen.cli")
EXIT_USAGE = 2  # click/typer usage errors: same code as BadInputError

app = typer.Typer(
    name="upgrade",
    add_completion=True,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Blue/green upgrade of an Obyte (ocore) node database to schema version 31.\n\n"
        "The node's data dir (blue) is only ever READ, except by the final swap in `promote` (and `rollback`),"
        " which renames directories. Everything else is written in the staging area, a sibling dir"
        " `<data-dir>.bluegreen/` on the same filesystem: state.json, audit.log, lock, green/ (the migrated"
        " copy), reports/, work/, and after promote blue-previous/ (the old data, kept for rollback).\n\n"
        "Flow: stage -> verify -> (stop the node) promote -> start the node; if needed: stop, rollback."
        " Every command is safe to re-run and safe to kill; the next command finishes or undoes what was in"
        " flight. Exit codes: docs/exit-codes.md."
    ),
)

DataDir = typer.Option(None, "--data-dir", help="The node's data dir (default: the one ~/.config/<app> holding "
                       "byteball.sqlite or byteball-light.sqlite).")
StagingDir = typer.Option(None, "--staging-dir", help="Staging area (default: <data-dir>.bluegreen, same "
                          "filesystem as the data dir).", file_okay=False)
Jobs = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes for the CPU-bound part (default: the "
                    "usable cores; 1: all in this process). The output is the same for any value.")
JsonOut = typer.Option(False, "--json", metavar="", help="Print one JSON document (schemas/*.schema.json) instead of text.")
Yes = typer.Option(False, "--yes", "-y", metavar="", help="Do not ask for confirmation (for scripts). On a terminal the "
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
def _global(version: bool = typer.Option(False, "--version", metavar="", help="Print the tool version and exit.",
                                         callback=_version_callback, is_eager=True),
            verbose: bool = typer.Option(False, "--verbose", "-v", metavar="", help="Also echo the detailed log "
                                         "(<staging>/bluegreen.log) to stderr."),
            quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="Print only errors and the "
                                       "final line (no progress, no details).")) -> None:
    """Blue/green upgrade of an Obyte (ocore) node database to schema version 31."""
    OPTIONS["quiet"] = quiet and not verbose
    logfile.setup(verbose=verbose)


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
        eta = f"{elapsed / frac - elapsed:.0f}s" if 0 < frac < 1 and elapsed > 1 else "-"
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
            sys.stderr.write(f"{step}: {done}/{total} ({frac:.1%}), elapsed {elapsed:.0f}s, ETA {eta}\n")
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
    for name, size in s.sizes.items():
        typer.echo(f"size:        {name} {size / (1 << 20):.1f} MiB")
    if s.progress:
        p = s.progress
        typer.echo(f"progress:    {p.step} {p.done}/{p.total} (updated {p.updated_at:%H:%M:%S} UTC)")
    for t in s.timings[-8:]:
        typer.echo(f"history:     {t.entered_at:%Y-%m-%d %H:%M:%S} {t.phase.value} ({t.seconds:.1f}s)")
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


def _stage_remembering(**kw: Any) -> CommandResult:
    """command.stage, then (also when interrupted) the pointer to a staging area given with --staging-dir."""
    try:
        return command.stage(**kw)
    finally:
        given = kw.get("staging_dir")
        if given is not None and Path(given).is_dir() and kw.get("data_dir") is not None:
            pointer.remember(Path(os.path.abspath(kw["data_dir"])), Path(os.path.abspath(given)))


def _abort_forgetting(**kw: Any) -> CommandResult:
    """command.abort, then the pointer goes too once the staging area it names is gone."""
    result = command.abort(**kw)
    if not result.staging_dir.exists():
        pointer.forget(result.data_dir)
    return result


@app.command()
def stage(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir, as_json: bool = JsonOut,
          genesis_unit: Optional[str] = typer.Option(None, "--genesis-unit",
                                                     help="Devnet: the genesis unit (default: from the data)."),
          target_version: int = typer.Option(31, "--target-version", help="Schema version to reach (31)."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Write nothing; show what stage would do "
                                       "(the same as `upgrade plan`)."),
          jobs: Optional[int] = Jobs) -> None:
    """Copy the data dir into the staging area and migrate the COPY to version 31.

    Reads the data dir (SQLite through its backup API, rocksdb/ and other files copied, .sst hard-linked);
    writes only in the staging area. Refuses when the node is running with a KV store, when space is short,
    or when the source fails PRAGMA quick_check. Re-run after a crash or Ctrl-C: it resumes."""
    if dry_run:
        _run("plan", as_json, planmod.plan, data_dir=data_dir, staging_dir=staging_dir, target_version=target_version)
    _run("stage", as_json, _stage_remembering, data_dir=data_dir, staging_dir=staging_dir, target_version=target_version,
         genesis_unit=genesis_unit, progress=None if as_json else Progress(), jobs=jobs)


@app.command()
def plan(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir, as_json: bool = JsonOut,
         target_version: int = typer.Option(31, "--target-version", help="Schema version to reach (31).")) -> None:
    """Show what `stage` would do, writing NOTHING (not even the staging dir).

    Prints the source version (read from the SQLite header), the target, each schema step that would run,
    the unit count, the space stage needs vs the free space (and how that was computed), whether the node is
    running, the node's node_modules and ocore version found, and a time estimate from the unit count."""
    _run("plan", as_json, planmod.plan, data_dir=data_dir, staging_dir=staging_dir, target_version=target_version)


@app.command()
def verify(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir, as_json: bool = JsonOut,
           sample: Optional[int] = typer.Option(None, "--sample", help="Check N random units/feeds/balls only "
                                                "(quick pass); full by default."),
           node_modules: Optional[Path] = typer.Option(None, "--node-modules", help="Also read green with the "
                                                       "node's own npm libraries found in this node_modules."),
           genesis_unit: Optional[str] = typer.Option(None, "--genesis-unit", help="Devnet genesis unit."),
           jobs: Optional[int] = Jobs) -> None:
    """Check the staged green copy against blue and write a report (staging/reports/verify-*.json).

    Reads blue and green; writes only the report and the state. Exits 7 when any check fails."""
    _run("verify", as_json, command.verify, data_dir=data_dir, staging_dir=staging_dir, sample=sample,
         node_modules=node_modules, genesis_unit=genesis_unit, progress=None if as_json else Progress(), jobs=jobs)


@app.command()
def promote(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir,
            as_json: bool = JsonOut, yes: bool = Yes) -> None:
    """Swap the verified green copy in as the data dir (stop the node first).

    Refuses unless the latest verify passed and green is unchanged since, blue has not changed since stage,
    and nothing has the data dir open. Copies blue's changed small files (conf.json, ...) into green, then
    swaps the two directories with one atomic rename (renameat2 RENAME_EXCHANGE; a journaled rename sequence
    where that is impossible). The old data is kept in <staging>/blue-previous for rollback."""
    _confirm("Swap the staged green copy in as the node's data dir (the node must be stopped)?", yes, as_json)
    _run("promote", as_json, command.promote, data_dir=data_dir, staging_dir=staging_dir)


@app.command()
def rollback(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir, as_json: bool = JsonOut,
             force: bool = typer.Option(False, "--force", metavar="", help="Roll back even though the node wrote to the "
                                        "upgraded data since promote (those writes are set aside, not kept live)."),
             yes: bool = Yes) -> None:
    """Swap the old data back in after a promote (stop the node first).

    Refuses, listing rows added per table and KV keys added, when the node wrote to the upgraded data since
    promote, unless --force. Touches only the two directories being swapped."""
    _confirm("Swap the old data back in as the node's data dir"
             + (", DISCARDING what the node wrote since promote" if force else "") + "?", yes, as_json)
    _run("rollback", as_json, command.rollback, data_dir=data_dir, staging_dir=staging_dir, force=force)


@app.command()
def status(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir,
           as_json: bool = JsonOut) -> None:
    """Show phase, versions, sizes, progress, timings, last verify, swap mechanism and the next step.

    Read-only, except that it first finishes or undoes a command that was killed mid-way."""
    _run("status", as_json, command.status, data_dir=data_dir, staging_dir=staging_dir)


@app.command()
def abort(data_dir: Optional[Path] = DataDir, staging_dir: Optional[Path] = StagingDir,
          as_json: bool = JsonOut, yes: bool = Yes) -> None:
    """Remove green and the whole staging area (before promote only). Never touches the data dir."""
    _confirm("Remove green and the whole staging area (the data dir is not touched)?", yes, as_json)
    _run("abort", as_json, _abort_forgetting, data_dir=data_dir, staging_dir=staging_dir)


def _json_usage_error(argv: list[str]) -> int | None:
    """With --json, run the app without click's own error printing and turn a usage error into an ErrorResult."""
    try:  # typer >= 0.2x vendors click; older typer uses the click package
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click.exceptions import UsageError  # type: ignore[no-redef]

    known = {"stage", "verify", "promote", "rollback", "status", "abort"}
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

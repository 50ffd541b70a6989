"""Every option a message or hint names exists on the command it names (checked against the typer app),
and no `--help` (nor shell completion) shows a `<bool>`/`BOOLEAN` placeholder for a flag."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import typer

from bluegreen.cli import app
from bluegreen.lifecycle import command
from conftest import REPO

# Our operator-facing text lives here; nodecompat (probe.js arguments) and generator (its own CLI) do not count.
SOURCES = [p for p in (REPO / "bluegreen").rglob("*.py")
           if not {"nodecompat", "generator"} & set(p.relative_to(REPO / "bluegreen").parts)]
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND_THEN_OPTIONS = re.compile(r"\b(?:upgrade )?(stage|plan|verify|promote|rollback|status|abort|cleanup)"
                                  r"((?: --[a-z][a-z0-9-]*(?: [A-Z][A-Z_]*)?)+)")
NAMED_COMMAND = re.compile(r"`upgrade ([a-z-]+)")


def _options() -> tuple[dict[str, set[str]], set[str]]:
    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    global_opts = {o for p in group.get_params(ctx) for o in p.opts + p.secondary_opts}
    per = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        per[name] = {o for p in cmd.get_params(typer.Context(cmd)) for o in p.opts + p.secondary_opts}
    return per, global_opts


def _strings() -> list[tuple[str, str]]:
    out = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.append((f"{path.relative_to(REPO)}:{node.lineno}", node.value))
    out += [(f"NEXT_STEP[{p.value}]", "`" + s) for p, s in command.NEXT_STEP.items()]
    return out


def test_every_option_and_command_named_in_our_text_exists() -> None:
    per, global_opts = _options()
    every = global_opts.union(*per.values())
    wrong = []
    for where, text in _strings():
        for opt in OPTION.findall(text):
            if opt not in every:
                wrong.append(f"{where}: {opt} is no option of `upgrade`: {text!r}")
        for cmd, opts in COMMAND_THEN_OPTIONS.findall(text):
            for opt in OPTION.findall(opts):
                if opt not in per[cmd] | global_opts:
                    wrong.append(f"{where}: `{cmd}` has no {opt}: {text!r}")
        for cmd in NAMED_COMMAND.findall(text):
            if cmd not in per:
                wrong.append(f"{where}: no command `upgrade {cmd}`: {text!r}")
    assert not wrong, "\n".join(wrong)
    assert len(_strings()) > 200  # the scan did see our text


def test_the_checker_catches_a_wrong_option() -> None:
    per, _ = _options()
    [(cmd, opts)] = COMMAND_THEN_OPTIONS.findall("run `upgrade verify --staged-green DIR`")
    assert cmd == "verify" and OPTION.findall(opts) == ["--staged-green"] and "--staged-green" not in per[cmd]
    assert "cleanup" in per and {"--force", "--require-node-probe", "--no-node-probe"} <= per["verify"]


def test_no_help_and_no_completion_shows_a_bool_placeholder() -> None:
    per, _ = _options()
    env = {**os.environ, "COLUMNS": "200"}
    for args in [[], *[[name] for name in per]]:
        out = subprocess.run([sys.executable, "-m", "bluegreen", *args, "--help"], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True).stdout
        assert "--help" in out
        for line in out.splitlines():
            assert "<bool>" not in line and "BOOLEAN" not in line, (args, line)
    for words in ("upgrade --", "upgrade verify --", "upgrade cleanup --"):
        for shell in ("bash", "zsh"):
            proc = subprocess.run([sys.executable, "-c", "from bluegreen.cli import app; app(prog_name='upgrade')"],
                                  cwd=REPO, capture_output=True, text=True,
                                  env={**os.environ, "_UPGRADE_COMPLETE": f"complete_{shell}",
                                       "_TYPER_COMPLETE_ARGS": words, "COMP_WORDS": words,
                                       "COMP_CWORD": str(len(words.split()) - 1)})
            assert "--help" in proc.stdout, (shell, words, proc.stdout, proc.stderr)
            assert "<bool>" not in proc.stdout and "BOOLEAN" not in proc.stdout, proc.stdout

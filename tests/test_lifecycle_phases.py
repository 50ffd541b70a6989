"""status's advice and what the commands do come from the same data (`lifecycle/phases.py`): in every state
we can reach on a real node dir (the lifecycle itself, interrupted like Ctrl-C at its named points, plus paths
removed or changed by hand), the command `status` names as the next step does not refuse with a usage or
preflight error (exit 2 or 3)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from bluegreen.errors import BluegreenError, BluePreviousChangedError
from bluegreen.lifecycle import command
from bluegreen.lifecycle.phases import COMMANDS, PHASES, REQUIREMENTS, Allow, Recovery, Refusal
from bluegreen.lifecycle.state import IN_FLIGHT, Phase
from test_lifecycle_support import make_node

NAMED = re.compile(r"\bupgrade (stage|verify|promote|rollback|abort|cleanup)\b")


def named_command(next_step: str) -> str | None:
    """The first command a next-step text names (None for 'nothing: ...' and 'keep the upgrade, or ...')."""
    if next_step.startswith("nothing"):
        return None
    m = NAMED.search(next_step)
    return m.group(1) if m else None


def test_every_phase_has_its_spec_and_every_recovery_its_function() -> None:
    assert set(PHASES) == set(Phase) and set(command.RECOVERIES) == set(Recovery)
    assert {p for p, s in PHASES.items() if s.recovery is not Recovery.NONE} >= IN_FLIGHT
    assert command.NEXT_STEP == {p: s.next_step for p, s in PHASES.items()}
    for phase, spec in PHASES.items():
        assert set(spec.commands) == set(COMMANDS) - {"status"}
        for name, rule in spec.commands.items():
            assert rule == COMMANDS[name].rule(phase)


def test_the_advice_of_every_phase_names_a_command_that_runs_in_it() -> None:
    """As data: the command each next step names (or each unmet requirement's advice names) is allowed there."""
    for phase, spec in PHASES.items():
        texts = [spec.next_step, *(REQUIREMENTS[r].advice for r in spec.requires)]
        for text in texts:
            name = named_command(text)
            if name is None or phase in IN_FLIGHT and text == spec.next_step:
                continue  # in flight: "any upgrade command" finishes or undoes it first
            assert isinstance(spec.commands[name], Allow), (phase, text, spec.commands[name])


class Interrupt(KeyboardInterrupt):
    """Ctrl-C at a named kill point (the in-process twin of BLUEGREEN_KILL_AT's SIGKILL)."""


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, point: str, run: Callable[[], object]) -> None:
    def kp(name: str) -> None:
        if name == point:
            raise Interrupt(name)

    monkeypatch.setattr(command, "killpoint", kp)
    with pytest.raises(Interrupt):
        run()
    monkeypatch.setattr(command, "killpoint", lambda name: None)


def _touch_blue_db(node: Path) -> None:
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("CREATE TABLE bluegreen_test_drift(a); DROP TABLE bluegreen_test_drift")
    conn.close()


def _verified(node: Path) -> None:
    command.stage(node)
    assert command.verify(node).passed


def _promoted(node: Path) -> None:
    _verified(node)
    command.promote(node)


def _rolled_back(node: Path) -> None:
    _promoted(node)
    command.rollback(node)


# name -> (how to get there, the phase status reports, the command it must name)
Build = Callable[[Path, pytest.MonkeyPatch], None]
STATES: dict[str, tuple[Build, Phase, str | None]] = {
    "nothing staged": (lambda n, mp: None, Phase.NONE, "stage"),
    "snapshot interrupted": (lambda n, mp: _interrupt_at(mp, "stage.after_snapshot", lambda: command.stage(n)),
                             Phase.FAILED, "stage"),
    "snapshotted": (lambda n, mp: _interrupt_at(mp, "stage.before_migration", lambda: command.stage(n)),
                    Phase.SNAPSHOTTED, "stage"),
    "migration interrupted": (lambda n, mp: _interrupt_at(mp, "stage.after_migration", lambda: command.stage(n)),
                              Phase.MIGRATING, "stage"),
    "migrated": (lambda n, mp: command.stage(n), Phase.MIGRATED, "verify"),
    "migrated, verify failed": (lambda n, mp: (command.stage(n), command.verify(n, require_node_probe=True)),
                                Phase.MIGRATED, "abort"),
    "migrated, blue changed": (lambda n, mp: (command.stage(n), _touch_blue_db(n)), Phase.MIGRATED, "stage"),
    "verified": (lambda n, mp: _verified(n), Phase.VERIFIED, "promote"),
    "verified, green removed": (lambda n, mp: (_verified(n), shutil.rmtree(n.parent / "node.bluegreen" / "green")),
                                Phase.VERIFIED, "stage"),
    "verified, green db removed": (lambda n, mp: (_verified(n),
                                                  (n.parent / "node.bluegreen/green/byteball.sqlite").unlink()),
                                   Phase.VERIFIED, "stage"),
    "verified, green rocksdb removed": (lambda n, mp: (_verified(n),
                                                       shutil.rmtree(n.parent / "node.bluegreen/green/rocksdb")),
                                        Phase.VERIFIED, "stage"),
    "promote interrupted before its swap": (
        lambda n, mp: (_verified(n), _interrupt_at(mp, "promote.before_swap", lambda: command.promote(n))),
        Phase.VERIFIED, "promote"),
    "promote interrupted after its swap": (
        lambda n, mp: (_verified(n), _interrupt_at(mp, "promote.after_swap", lambda: command.promote(n))),
        Phase.PROMOTED, "rollback"),
    "promoted": (lambda n, mp: _promoted(n), Phase.PROMOTED, "rollback"),
    "promoted, blue-previous removed": (
        lambda n, mp: (_promoted(n), shutil.rmtree(n.parent / "node.bluegreen" / "blue-previous")),
        Phase.PROMOTED, None),
    "promoted, blue-previous changed": (
        lambda n, mp: (_promoted(n), (n.parent / "node.bluegreen/blue-previous/added-by-hand").write_text("x")),
        Phase.PROMOTED, None),
    "rollback interrupted": (
        lambda n, mp: (_promoted(n), _interrupt_at(mp, "rollback.before_swap", lambda: command.rollback(n))),
        Phase.PROMOTED, "rollback"),
    "rolled back": (lambda n, mp: _rolled_back(n), Phase.ROLLED_BACK, "promote"),
    "rolled back, green removed": (
        lambda n, mp: (_rolled_back(n), shutil.rmtree(n.parent / "node.bluegreen" / "green")),
        Phase.ROLLED_BACK, "stage"),
    "abort interrupted": (lambda n, mp: (command.stage(n),
                                         _interrupt_at(mp, "abort.mid_remove", lambda: command.abort(n))),
                          Phase.NONE, "stage"),
    "cleanup interrupted": (lambda n, mp: (_promoted(n),
                                           _interrupt_at(mp, "cleanup.mid_remove", lambda: command.cleanup(n))),
                            Phase.NONE, None),
    "cleaned up": (lambda n, mp: (_promoted(n), command.cleanup(n)), Phase.NONE, None),
}


@pytest.mark.parametrize("name", list(STATES))
def test_the_command_status_names_does_not_refuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  name: str) -> None:
    build, phase, expected = STATES[name]
    node = make_node(tmp_path)
    build(node, monkeypatch)
    s = command.status(node)  # finishes or undoes an interrupted run first, as every command does
    assert s.phase == phase, (s.phase, s.message)
    nxt = named_command(s.next_step)
    assert nxt == expected, s.next_step
    if nxt is None:
        if phase == Phase.PROMOTED:  # "keep the upgrade, or ...": status is right that rollback refuses
            with pytest.raises(BluePreviousChangedError):
                command.rollback(node)
        return
    run = getattr(command, nxt)
    try:
        run(node)
    except BluegreenError as exc:
        assert exc.exit_code not in (2, 3), f"status said {s.next_step!r}; `upgrade {nxt}` refused: {exc}"


def test_status_after_a_finished_interrupted_cleanup_does_not_advise_a_stage_that_refuses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recovery that status runs can finish a cleanup: then the data dir is upgraded already, and
    `upgrade stage` would refuse ("already at version ..."); status says there is nothing to do instead."""
    node = make_node(tmp_path)
    _promoted(node)
    _interrupt_at(monkeypatch, "cleanup.mid_remove", lambda: command.cleanup(node))
    s = command.status(node)
    assert any("interrupted cleanup" in n for n in s.recovered), s.recovered
    assert s.next_step.startswith("nothing: the data dir is already at version"), s.next_step


def test_a_refusal_without_a_hint_of_its_own_gives_the_phase_s_next_step(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node)
    rule = COMMANDS["rollback"].rule(Phase.MIGRATED)
    assert isinstance(rule, Refusal) and rule.hint is None
    with pytest.raises(BluegreenError) as e:
        command.rollback(node)
    assert e.value.exit_code == 3 and e.value.hint == PHASES[Phase.MIGRATED].next_step == "upgrade verify"

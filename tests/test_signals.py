"""TERM/HUP are interrupts, never internal errors: a signal that lands inside a state save is raised once the state
is on disk, and one that a library wrapped in its own error (pydantic's Rust core runs Python signal handlers and
wraps what they raise) is recognised. Real signals sent to this process."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
from pydantic_core import PydanticSerializationError

from bluegreen import signals
from bluegreen.lifecycle.state import Phase, StagingState, StateStore


@pytest.fixture
def installed():  # type: ignore[no-untyped-def]
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    signals.install()
    yield
    for s, h in before.items():
        signal.signal(s, h)


def test_a_signal_inside_a_deferred_section_is_raised_at_its_end(installed: None) -> None:
    reached_end_of_section = False
    with pytest.raises(signals.BluegreenInterrupted) as caught:
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            reached_end_of_section = True
    assert reached_end_of_section and caught.value.exit_code == 129


def test_a_signal_during_state_saves_is_an_interrupt_and_leaves_a_whole_state(installed: None, tmp_path: Path) -> None:
    from bluegreen.lifecycle.state import HistoryEntry, utcnow

    store = StateStore(tmp_path)
    state = StagingState(data_dir=tmp_path / "d", staging_dir=tmp_path, phase=Phase.MIGRATING)
    # a long history: most of each save is spent inside pydantic's serialiser, where the signal lands
    state.history = [HistoryEntry(at=utcnow(), from_phase=Phase.NONE, to_phase=Phase.MIGRATING, note="x" * 50)
                     for _ in range(20_000)]
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    saves = 0
    with pytest.raises(signals.BluegreenInterrupted) as caught:
        while saves < 10_000:
            store.save(state)
            saves += 1
    timer.join()
    assert caught.value.exit_code == 143 and saves < 10_000
    assert json.loads((tmp_path / "state.json").read_text())["phase"] == "MIGRATING"


def test_an_interrupt_wrapped_by_pydantic_is_recognised() -> None:
    wrapped = PydanticSerializationError("Error serializing to JSON: BluegreenInterrupted: SIGHUP")
    assert signals.interrupt_inside(wrapped) == signal.SIGHUP
    with pytest.raises(signals.BluegreenInterrupted):
        signals.reraise_if_interrupt(wrapped)
    assert signals.interrupt_inside(ValueError("disk I/O error")) is None
    chained = RuntimeError("outer")
    chained.__context__ = signals.BluegreenInterrupted(signal.SIGTERM)
    assert signals.interrupt_inside(chained) == signal.SIGTERM

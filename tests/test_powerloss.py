"""Power loss at any instant leaves blue or a complete green (issue 12).

Block writes and flushes of each command are recorded under a loop device on a FUSE-served image; crash states at
flush boundaries and seeded subsets of unflushed writes are mounted and checked (`upgrade status` and the re-run in
child processes). This file checks every few-th crash point per run to stay within minutes; scripts/power-loss
checks them all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bluegreen.lifecycle.state import Phase
from tests.powerloss.harness import (SCENARIOS, check_disk, check_image, crash_points, first_boundary, image_at,
                                     mechanism_available, mounted, read_state, record, replay, Recording)

pytestmark = pytest.mark.powerloss
BY_NAME = {s.name: s for s in SCENARIOS}
IMAGES_PER_RUN = 10  # crash images checked per recorded run here (scripts/power-loss: all of them)


@pytest.fixture(scope="module")
def recorder_ready() -> None:
    why = mechanism_available()
    if why == "not root":
        pytest.skip("power-loss recorder needs root (not counted as a pass: see scripts/power-loss)")
    if why:
        pytest.fail(f"power-loss recorder unavailable as root: {why}")


@pytest.fixture(scope="module")
def recorded(recorder_ready: None, tmp_path_factory: pytest.TempPathFactory):
    """Each run recorded once per module (recording is the slow part); tests never write its base image."""
    cache: dict[str, Recording] = {}

    def get(name: str) -> Recording:
        if name not in cache:
            cache[name] = record(BY_NAME[name], tmp_path_factory.mktemp(name))
        return cache[name]
    return get


def test_the_recorder_sees_the_filesystems_flushes(recorded) -> None:
    rec = recorded("abort")  # the smallest run
    assert rec.flushes >= 2
    assert sum(len(e) for e in rec.epochs) > 0


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_crash_image_is_blue_or_complete_green(recorded, tmp_path: Path, scenario) -> None:
    rec = recorded(scenario.name)
    stride = max(1, len(crash_points(rec, 3, seed=1)) // IMAGES_PER_RUN)
    res = replay(rec, rec.base.parent, per_epoch=3, seed=1, rerun_every=2, keep_bad=tmp_path / "bad", stride=stride)
    # Faults landed where claimed: the sampled states really differ from each other.
    assert res.distinct >= 0.95 * res.images
    assert res.images >= min(IMAGES_PER_RUN, rec.flushes) and res.reruns >= res.images // 2
    assert res.violations == [], "\n".join(f"flush {p.flush_index} subset {p.subset}: {b}" for p, b in res.violations)


def test_the_resumed_stage_is_recorded_from_the_middle_of_the_kv_fill(recorded) -> None:
    rec = recorded("stage-resume")
    assert rec.phase_before == Phase.MIGRATING and rec.phase_after == Phase.MIGRATED
    report = rec.final_state.migration_report if rec.final_state else None
    assert report and report["resumed"] is True and report["resumed_from_unit_rowid"] > 0
    assert rec.after == rec.blue and len(rec.greens) == 1


def test_green_is_complete_in_the_first_image_that_says_migrated(recorded) -> None:
    """Regression (stage image at flush 136 of 146, seed 1): state MIGRATED, yet green/rocksdb/rocksdict-config.json
    was empty, rocksdict writes it without fsync. The engine now fsyncs every file of the built KV dir."""
    rec = recorded("stage")
    work = rec.base.parent

    def migrated(mnt: Path) -> bool:
        st = read_state(mnt / "node.bluegreen")
        return st is not None and st.phase == Phase.MIGRATED

    k = first_boundary(rec, work, migrated)
    image_at(rec, k, work / "crash.img")
    with mounted(work / "crash.img", work / "fs") as mnt:
        assert migrated(mnt)
        config = mnt / "node.bluegreen" / "green" / "rocksdb" / "rocksdict-config.json"
        assert config.stat().st_size > 0
        assert check_disk(rec, mnt) == []


def test_the_checker_sees_a_lost_conf_and_a_phase_the_disk_contradicts(recorded) -> None:
    """The invariants have teeth: a damaged copy of a real recorded state is reported."""
    rec = recorded("abort")
    work = rec.base.parent
    image_at(rec, 0, work / "crash.img")  # a copy: the recording's base stays as recorded
    with mounted(work / "crash.img", work / "fs") as mnt:
        assert check_disk(rec, mnt) == []
        (mnt / "node" / "conf.json").write_bytes(b"")
        state = mnt / "node.bluegreen" / "state.json"
        doc = json.loads(state.read_text())
        doc["phase"] = "PROMOTED"
        state.write_text(json.dumps(doc))
        found = check_disk(rec, mnt)
        assert any("data dir conf.json missing or empty" in b for b in found)
        assert any("data dir is not the complete green" in b for b in found)
        assert any("not one the command passes through" in b for b in found)
        state.write_text("{")
        assert any("state.json unreadable" in b for b in check_image(rec, mnt, rerun=False))


def test_crash_points_are_deterministic_for_a_seed() -> None:
    class R:
        epochs = [[(0, b"a")] * 5, [(1, b"b")] * 9, []]
    a = crash_points(R(), 3, seed=7)  # type: ignore[arg-type]
    b = crash_points(R(), 3, seed=7)  # type: ignore[arg-type]
    assert [(p.flush_index, p.subset) for p in a] == [(p.flush_index, p.subset) for p in b]
    assert all(p.subset is None or 0 < len(p.subset) < len(R.epochs[p.flush_index]) for p in a)


def test_online_promote_crash_images_inside_the_row_patch(recorded) -> None:
    """promote-online: power cut right when the row patch's build first reached the disk, and right when its
    journal did (green's SQLite committed in place or not yet): the image is blue or a complete green (green/
    checked by content, or finished by recovery from the journal), and a re-run ends as the uninterrupted run."""
    rec = recorded("promote-online")
    work = rec.base.parent

    def catch_ups(mnt: Path) -> int:
        st = read_state(mnt / "node.bluegreen")
        return len(st.catch_ups) if st else 0

    def building(mnt: Path) -> bool:
        return (mnt / "node.bluegreen" / "work" / "catchup" / "patch.sqlite").exists() or catch_ups(mnt) > 0

    def journaled(mnt: Path) -> bool:
        return (mnt / "node.bluegreen" / "work" / "catchup" / "journal.json").exists() or catch_ups(mnt) > 0

    seen = []
    for pred in (building, journaled):
        k = first_boundary(rec, work, pred)
        image_at(rec, k, work / "crash.img")
        with mounted(work / "crash.img", work / "fs") as mnt:
            assert pred(mnt) and catch_ups(mnt) == 0  # inside the catch-up, not after it
            seen.append((mnt / "node.bluegreen" / "work" / "catchup" / "journal.json").exists())
            assert check_image(rec, mnt, rerun=True) == []
    assert seen == [False, True]

"""Entry point of scripts/power-loss: record every scenario, replay, print figures and the summary line."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.powerloss.harness import mechanism_available, run_all

DEFAULT_PER_EPOCH = 1
SWEEP_PER_EPOCH = 12
# Every image runs `upgrade status` in a child process (~1 s of Python start-up on a loaded machine); the
# interrupted command is re-run (child processes too) on every DEFAULT_RERUN_EVERY-th image, on every one by --sweep.
DEFAULT_RERUN_EVERY = 3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="power-loss")
    ap.add_argument("--sweep", action="store_true", help=f"{SWEEP_PER_EPOCH} subsets per epoch, re-run every image")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="keep recordings and violating images here")
    ap.add_argument("--only", action="append", help="scenario name (repeatable)")
    ap.add_argument("--per-epoch", type=int, default=None, help="subsets of unflushed writes per flush epoch")
    ap.add_argument("--stride", type=int, default=1, help="check only every N-th crash image (quick looks)")
    ap.add_argument("--rerun-every", type=int, default=None, help="re-run the command on every N-th image")
    a = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # figures appear as each run ends
    why = mechanism_available()
    if why:
        print(f"power-loss: recorder unavailable: {why}", file=sys.stderr)
        return 2
    work = a.work or Path(tempfile.mkdtemp(prefix="power-loss-"))
    try:
        per_epoch = a.per_epoch if a.per_epoch is not None else SWEEP_PER_EPOCH if a.sweep else DEFAULT_PER_EPOCH
        rerun_every = a.rerun_every or (1 if a.sweep else DEFAULT_RERUN_EVERY)
        res = run_all(work, per_epoch, a.seed, rerun_every=rerun_every, only=a.only, stride=a.stride)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    n = sum(r.images for r in res)
    m = sum(len(r.violations) for r in res)
    print("| run | flushes | crash images | re-run | violations |\n|---|---|---|---|---|")
    for r in res:
        print(f"| {r.name} | {r.flushes} | {r.images} | {r.reruns} | {len(r.violations)} |")
    print(f"power-loss: {n} crash images checked, {m} violations")
    return 1 if m else 0


if __name__ == "__main__":
    sys.exit(main())

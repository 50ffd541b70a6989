"""Entry point of scripts/power-loss: record every scenario, replay, print figures and the summary line."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.powerloss.harness import mechanism_available, run_all

DEFAULT_PER_EPOCH = 3
SWEEP_PER_EPOCH = 12


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="power-loss")
    ap.add_argument("--sweep", action="store_true", help=f"{SWEEP_PER_EPOCH} subsets per epoch, re-run every image")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="keep recordings and violating images here")
    ap.add_argument("--only", action="append", help="scenario name (repeatable)")
    a = ap.parse_args(argv)
    why = mechanism_available()
    if why:
        print(f"power-loss: recorder unavailable: {why}", file=sys.stderr)
        return 2
    work = a.work or Path(tempfile.mkdtemp(prefix="power-loss-"))
    try:
        res = run_all(work, SWEEP_PER_EPOCH if a.sweep else DEFAULT_PER_EPOCH, a.seed,
                      rerun_every=1 if a.sweep else 3, only=a.only)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    n = sum(r.images for r in res)
    m = sum(len(r.violations) for r in res)
    print(f"power-loss: {n} crash images checked, {m} violations")
    return 1 if m else 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpful errors for the usual --data-dir mistakes: the database file or `rocksdb/` given instead of the
dir that holds them, and a quoted `~` the shell did not expand."""

from __future__ import annotations

import os
from pathlib import Path

from bluegreen.errors import BadInputError
from bluegreen.ocore_facts import DB_NAMES, KV_DIR_NAME


def check_data_dir_arg(data_dir: Path) -> None:
    """Raise BadInputError naming the likely intended path, for the mistakes operators usually make."""
    text = str(data_dir)
    if text.startswith("~"):
        expanded = os.path.expanduser(text)
        raise BadInputError(
            f"the path {text!r} starts with a literal '~': the shell did not expand it (it was quoted)",
            f"did you mean --data-dir {expanded}? (write ~ outside quotes, or use $HOME)",
        )
    p = Path(os.path.abspath(data_dir))
    if p.name in DB_NAMES or p.name.startswith(tuple(n + "-" for n in DB_NAMES)):
        raise BadInputError(f"{p} is the node's database file, not its data dir",
                            f"did you mean --data-dir {p.parent}?")
    if p.name == KV_DIR_NAME and any((p.parent / n).is_file() for n in DB_NAMES):
        raise BadInputError(f"{p} is the node's KV store inside the data dir, not the data dir",
                            f"did you mean --data-dir {p.parent}?")
    if p.exists() and not p.is_dir():
        raise BadInputError(f"--data-dir {p} is a file, not a directory",
                            f"did you mean --data-dir {p.parent}?")

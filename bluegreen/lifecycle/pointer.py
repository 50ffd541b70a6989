"""Remember a non-default staging area: `<data-dir>.bluegreen-pointer` beside the data dir (never inside it:
blue is not written), so plain `status`/`verify`/`promote`/... find what `stage --staging-dir X` created."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel

from bluegreen.durable import atomic_write_json, fsync_dir
from bluegreen.errors import BadInputError


class StagingPointer(BaseModel):
    """The pointer file's content."""

    data_dir: Path
    staging_dir: Path


def pointer_path(data_dir: Path) -> Path:
    """`<data-dir>.bluegreen-pointer`, a sibling of the data dir."""
    data_dir = Path(os.path.abspath(data_dir))
    return data_dir.with_name(data_dir.name + ".bluegreen-pointer")


def remember(data_dir: Path, staging_dir: Path) -> None:
    """Write the pointer durably (tmp + fsync + rename + fsync dir)."""
    doc = StagingPointer(data_dir=data_dir, staging_dir=staging_dir)
    atomic_write_json(pointer_path(data_dir), json.loads(doc.model_dump_json()))


def forget(data_dir: Path) -> None:
    """Remove the pointer (after abort removed the staging area it named)."""
    p = pointer_path(data_dir)
    if p.exists():
        p.unlink()
        fsync_dir(p.parent)


def recall(data_dir: Path) -> Path | None:
    """The remembered staging dir, None without a pointer; BadInputError when it names a missing dir."""
    p = pointer_path(data_dir)
    if not p.exists():
        return None
    try:
        doc = StagingPointer.model_validate_json(p.read_bytes())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"the staging pointer {p} is unreadable: {exc}",
                            "pass --staging-dir explicitly, or remove the pointer file") from exc
    if not doc.staging_dir.is_dir():
        raise BadInputError(
            f"the staging pointer {p} names the staging area {doc.staging_dir}, which does not exist any more",
            f"pass --staging-dir (where the staging area is now), or remove {p} to use the default",
        )
    return doc.staging_dir

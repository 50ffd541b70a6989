"""The one durable-write primitive, reused everywhere (the litestream pattern):
write `<name>.tmp`, fsync it, rename over the target, fsync the directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path | str) -> None:
    """fsync a directory so that renames and creations inside it survive a crash."""
    fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path | str) -> None:
    """fsync a regular file's data and metadata."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path | str) -> None:
    """fsync every regular file under `root`, then every directory (deepest first), then `root` itself.

    For a directory written by a library that syncs only some of its files (rocksdict's config file is
    written without fsync): afterwards every file in it survives a power cut with its bytes."""
    root = Path(root)
    dirs: list[Path] = []
    for d, _subdirs, files in os.walk(root):
        dirs.append(Path(d))
        for name in files:
            p = Path(d) / name
            if p.is_file() and not p.is_symlink():
                fsync_file(p)
    for d in reversed(dirs):
        fsync_dir(d)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new content."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    """UTF-8 text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Write a JSON document atomically (sorted keys are NOT forced: callers pass pydantic dumps)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def append_line_durably(path: Path | str, line: str) -> None:
    """Append one line to a log file and fsync it (audit logs, journals)."""
    path = Path(path)
    existed = path.exists()
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if not existed:
        fsync_dir(path.parent)

"""Where things are: the node data dir (blue), the staging area and the paths inside it.

Rules: the staging area must be on the data dir's filesystem (renames cannot cross filesystems);
a symlinked data dir is refused (a rename would move the link, not the data); a data dir that is
a mount point cannot be renamed, so the swap falls back to moving its entries, and the staging area
must then sit inside the mount (given explicitly, so we never create anything in blue unasked)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from bluegreen.errors import BadInputError, PreflightError
from bluegreen.lifecycle.pathhints import check_data_dir_arg
from bluegreen.lifecycle.pointer import recall
from bluegreen.ocore_facts import DB_NAMES, is_light_db_name


@dataclass(frozen=True)
class Layout:
    """Resolved paths of one staged upgrade."""

    data_dir: Path
    staging_dir: Path
    db_name: str
    exclude: frozenset[str] = field(default_factory=frozenset)  # top-level names of data_dir that are ours
    data_is_mountpoint: bool = False

    @property
    def light(self) -> bool:
        """True for a light wallet database."""
        return is_light_db_name(self.db_name)

    @property
    def green_dir(self) -> Path:
        """The copy being migrated (before promote, and again after rollback)."""
        return self.staging_dir / "green"

    @property
    def previous_dir(self) -> Path:
        """The old blue, kept for rollback after promote."""
        return self.staging_dir / "blue-previous"

    @property
    def work_dir(self) -> Path:
        """Engine journal, probes, scratch."""
        return self.staging_dir / "work"

    @property
    def reports_dir(self) -> Path:
        """verify-*.json reports."""
        return self.staging_dir / "reports"

    @property
    def lock_path(self) -> Path:
        """The flock'd file."""
        return self.staging_dir / "lock"

    @property
    def swap_journal(self) -> Path:
        """Journal of an in-flight swap."""
        return self.staging_dir / "swap-journal.json"

    @property
    def engine_journal(self) -> Path:
        """The migration engine's resumable journal."""
        return self.work_dir / "engine-journal"


def find_db_name(data_dir: Path) -> str:
    """`byteball.sqlite` or `byteball-light.sqlite`, whichever the dir holds (exactly one)."""
    present = [n for n in DB_NAMES if (data_dir / n).is_file()]
    if not present:
        raise BadInputError(
            f"{data_dir} holds no ocore database (byteball.sqlite or byteball-light.sqlite)",
            "pass the node's data dir with --data-dir (usually ~/.config/<app name>)",
        )
    if len(present) > 1:
        raise BadInputError(
            f"{data_dir} holds both byteball.sqlite and byteball-light.sqlite; cannot tell which one the node uses",
            "move the one the node does not use out of the data dir, then re-run",
        )
    return present[0]


def discover_data_dirs(home: Path | None = None) -> list[Path]:
    """Every `$HOME/.config/<app>` dir holding an ocore database."""
    home = home or Path(os.environ.get("HOME", str(Path.home())))
    config = home / ".config"
    if not config.is_dir():
        return []
    return sorted(d for d in config.iterdir() if d.is_dir() and any((d / n).is_file() for n in DB_NAMES))


def default_data_dir(home: Path | None = None) -> Path:
    """The single discovered data dir, or a BadInputError listing the candidates."""
    found = discover_data_dirs(home)
    if len(found) == 1:
        return found[0]
    if not found:
        raise BadInputError("no node data dir found under $HOME/.config",
                            "pass the node's data dir with --data-dir")
    listing = "\n".join(f"    {d}" for d in found)
    raise BadInputError(f"several node data dirs found:\n{listing}",
                        "choose one with --data-dir")


def _staged_db_name(staging_dir: Path) -> str:
    """The database file name recorded by stage (default byteball.sqlite)."""
    try:
        name = json.loads((staging_dir / "state.json").read_text()).get("db_name")
    except (OSError, ValueError):
        name = None
    return name if name in DB_NAMES else DB_NAMES[0]


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists():
        p = p.parent
    return p


def _unescape_mountinfo(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_of(path: Path) -> str | None:
    """The mount point (from /proc/self/mountinfo) holding `path`, or None when that cannot be read."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best: str | None = None
    for line in lines:
        parts = line.split(" ")
        if len(parts) < 5:
            continue
        mp = _unescape_mountinfo(parts[4])
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) >= len(best)):
            best = mp  # later lines win on ties: the most recent mount on a path hides the older ones
    return best


STAGING_SUFFIX = ".bluegreen"


def _is_our_state_file(path: Path) -> Path | None:
    """The data dir named by `path` when it is a bluegreen state.json (None when absent or someone else's)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(doc, dict) and {"format", "phase", "data_dir", "staging_dir"} <= doc.keys():
        return Path(str(doc["data_dir"]))
    return None


def enclosing_staging_area(data_dir: Path) -> tuple[Path, Path | None] | None:
    """(staging area, the real data dir it belongs to, when known) if `data_dir` is inside a staging area.

    A staging area is any ancestor (or the dir itself) holding our state.json, or any ancestor named
    `<x>.bluegreen`. Running the tool there (e.g. `--data-dir .` from a shell left in blue-previous/) would
    stage a copy of the old data, or a copy of green, and create a nested staging area in ours."""
    for anc in (data_dir, *data_dir.parents):
        real = _is_our_state_file(anc / "state.json")
        if real is not None:
            return anc, real
        if anc != data_dir and anc.name.endswith(STAGING_SUFFIX):
            real = _is_our_state_file(anc / "state.json")
            name = anc.name[: -len(STAGING_SUFFIX)]
            return anc, real if real is not None else (anc.with_name(name) if name else None)
    return None


def refuse_inside_staging(data_dir: Path) -> None:
    """BadInputError when `data_dir` is inside a bluegreen staging area (see enclosing_staging_area)."""
    found = enclosing_staging_area(data_dir)
    if found is None:
        return
    area, real = found
    inner = os.path.relpath(data_dir, area)
    what = {"blue-previous": " (the old data set aside by promote, kept for rollback)",
            "green": " (the staged copy)"}.get(inner.split("/")[0], "")
    raise BadInputError(
        f"the data dir {data_dir} is inside the bluegreen staging area {area}{what}"
        + (f", which belongs to the node data dir {real}" if real else "")
        + "; running upgrade commands on it would change what the staging area keeps",
        (f"pass the real data dir: --data-dir {real}" if real else "pass the node's real data dir with --data-dir")
        + " (and `cd` out of the staging area)",
    )


def resolve(data_dir: Path | None, staging_dir: Path | None, *, require_db: bool = True,
            allow_inside_staging: bool = False) -> Layout:
    """Check and resolve the data dir and staging area (read-only; creates nothing).

    A data dir inside a staging area is refused unless `allow_inside_staging` (status, abort: they only
    report or remove what that path's own staging area holds)."""
    if data_dir is None:
        data_dir = default_data_dir()
    check_data_dir_arg(data_dir)
    data_dir = Path(os.path.abspath(data_dir))
    if data_dir.is_symlink():
        raise BadInputError(
            f"{data_dir} is a symlink (to {os.path.realpath(data_dir)}); a rename would move the link, not the data",
            f"pass the real directory: --data-dir {os.path.realpath(data_dir)}",
        )
    if not data_dir.is_dir():
        raise BadInputError(f"data dir {data_dir} does not exist or is not a directory",
                            "pass the node's data dir with --data-dir")
    if not allow_inside_staging:
        refuse_inside_staging(data_dir)
    mount = os.path.ismount(data_dir)
    if staging_dir is None:
        staging_dir = recall(data_dir)  # remembered by `stage --staging-dir`, if it was given one
    if staging_dir is None:
        if mount:
            raise PreflightError(
                f"{data_dir} is a mount point: it cannot be renamed and its sibling is on another filesystem",
                f"give a staging area inside the mount, e.g. --staging-dir {data_dir / '.bluegreen'} "
                "(the swap then moves the dir's entries with a journal)",
            )
        staging_dir = data_dir.with_name(data_dir.name + ".bluegreen")
    staging_dir = Path(os.path.abspath(staging_dir))
    exclude: frozenset[str] = frozenset()
    if staging_dir.parent == data_dir:
        if not mount:
            raise BadInputError(
                f"the staging area {staging_dir} is inside the data dir, which would be swapped with it",
                "use the default (a sibling `<data-dir>.bluegreen`) or another dir on the same filesystem",
            )
        exclude = frozenset({staging_dir.name})
    elif data_dir in staging_dir.parents or staging_dir == data_dir:
        raise BadInputError(f"the staging area {staging_dir} must not be the data dir or nested deep inside it",
                            "use the default (a sibling `<data-dir>.bluegreen`)")
    if os.stat(_nearest_existing(staging_dir)).st_dev != os.stat(data_dir).st_dev:
        raise PreflightError(
            f"the staging area {staging_dir} is on another filesystem than the data dir {data_dir}; "
            "the final swap is a rename and cannot cross filesystems",
            "choose --staging-dir on the data dir's filesystem (the default sibling `<data-dir>.bluegreen` is)",
        )
    data_mount, staging_mount = mount_of(data_dir), mount_of(_nearest_existing(staging_dir))
    if data_mount is not None and staging_mount is not None and data_mount != staging_mount and not mount:
        # Same st_dev but another mount (a bind mount): renames between them fail with EXDEV.
        raise PreflightError(
            f"the staging area {staging_dir} is on another mount ({staging_mount}) than the data dir {data_dir} "
            f"({data_mount}); the final swap is a rename and cannot cross mounts",
            "choose --staging-dir under the same mount as the data dir (the default sibling `<data-dir>.bluegreen` "
            "is, unless the data dir itself is reached through a bind mount)",
        )
    present = next((n for n in DB_NAMES if (data_dir / n).is_file()), None)
    if present is not None or not require_db:
        db_name = find_db_name(data_dir) if present and require_db else (present or _staged_db_name(staging_dir))
    elif (staging_dir / "swap-journal.json").exists():
        # A swap was interrupted half-way (journaled fallback): the database may sit in the staging area
        # right now. The command's recovery puts it back; the name comes from the state file.
        db_name = _staged_db_name(staging_dir)
    else:
        db_name = find_db_name(data_dir)  # raises with the operator's message
    return Layout(data_dir=data_dir, staging_dir=staging_dir, db_name=db_name, exclude=exclude,
                  data_is_mountpoint=mount)

"""Shared test fixtures: where ../shared is, and fresh writable copies of its data dirs.

The shared fixtures are read-only and must never be opened by rocksdict in place
(it writes into any dir it opens), so tests always work on copies."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
EMPTY_SCHEMAS = FIXTURES / "empty-schemas"
DEVNET_V29 = FIXTURES / "ocore-devnet-v29"
DEVNET_V31 = FIXTURES / "ocore-devnet-v31"


def writable_copy(src: Path, dst: Path) -> Path:
    """Copy a read-only fixture tree and make the copy writable."""
    if src.is_dir():
        shutil.copytree(src, dst)
        for p in [dst, *dst.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    else:
        shutil.copy2(src, dst)
        dst.chmod(dst.stat().st_mode | stat.S_IWUSR)
    return dst


@pytest.fixture
def devnet_v29(tmp_path: Path) -> Path:
    """A writable copy of the real version-29 devnet node dir."""
    return writable_copy(DEVNET_V29, tmp_path / "devnet-v29")


@pytest.fixture
def devnet_v31(tmp_path: Path) -> Path:
    """A writable copy of the real version-31 devnet node dir (with rocksdb/)."""
    return writable_copy(DEVNET_V31, tmp_path / "devnet-v31")


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """The node's own npm libraries (level-rocksdb 5 + sqlite3 5) from the repo's cache, built by
    scripts/build-node-libs on first use (a few minutes on a fresh machine)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: the node-compatibility tests need Node.js with npm")
    out = subprocess.run([str(REPO / "scripts" / "build-node-libs")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().splitlines()[-1]) / "node_modules"


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="session", autouse=True)
def shared_fixtures_stay_untouched():
    """The shared fixtures are read-only material: no test may leave a -wal/-shm, an OPTIONS file or any
    other change in them (as root, read-only permissions do not stop SQLite or RocksDB)."""
    before = _listing(FIXTURES)
    yield
    after = _listing(FIXTURES)
    assert after == before, f"tests changed ../shared/fixtures: {sorted(set(after) ^ set(before)) or 'mtimes/sizes'}"

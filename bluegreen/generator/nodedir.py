"""A whole node data dir: the SQLite database of a chosen pre-31 version, `conf.json`, `keys.json`, and in
stuck-at-30 mode a schema at 30 plus a `rocksdb/` holding only the first joints (the seed failure:
ocore's v31 step died half way through its KV fill)."""

from __future__ import annotations

import gc
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any, Callable

import apsw
from pydantic import BaseModel

from bluegreen.durable import atomic_write_text, fsync_dir
from bluegreen.errors import BadInputError
from bluegreen.formats.jsvalues import js_stringify
from bluegreen.formats.networks import MAINNET, NETWORKS, Network
from bluegreen.generator.compose import Generator
from bluegreen.generator.units import b64
from bluegreen.generator.writer import SqlWriter
from bluegreen.schema.reference import available_references, create_empty_database
from bluegreen.schema.runner import apply_schema_steps
from bluegreen import ocore_facts

MIN_VERSION = 6
MAX_VERSION = 29
CACHE_KIB = 2_000_000  # SQLite page cache while generating (filled only as the file grows: ~2 GB at 1M units)


class GeneratedNode(BaseModel):
    """What `generate_node_dir` made: paths, versions, counts, and the DAG facts tests check against."""

    out: Path
    db_path: Path
    kv_dir: Path | None
    conf_path: Path
    keys_path: Path
    network: str
    light: bool
    seed: int
    schema_version: int  # the version the units were written for
    user_version: int  # PRAGMA user_version of the file (30 when stuck)
    stuck_at_30: bool
    units: int
    unit_list_size: int  # rows in `units`
    messages: dict[str, int]  # per app
    kinds: dict[str, int]  # per generated unit kind
    rows: dict[str, int]  # rows per table at the end
    final_bad: int
    voided: int
    unstable: int
    null_mci: int
    last_stable_mci: int
    min_retrievable_mci: int
    genesis_unit: str
    kv_joints: int
    seconds: float
    units_per_second: float


db_file_name = ocore_facts.db_file_name  # one home for ocore's file names


def resolve_network(network: Network | str) -> Network:
    """A Network from its name or itself."""
    if isinstance(network, Network):
        return network
    try:
        return NETWORKS[network]
    except KeyError:
        raise BadInputError(f"unknown network {network!r}", hint="use mainnet, testnet or devnet") from None


def create_database(path: Path, version: int, light: bool) -> None:
    """An empty database at `version`: our reference snapshot when we hold one, otherwise the nearest
    older snapshot moved up with ocore's own schema steps (versions 7, 8, 10, 12-15, 20)."""
    have = {v for v, lt in available_references() if lt == light}
    if version in have:
        create_empty_database(path, version, light)
        return
    base = max(v for v in have if v < version)
    create_empty_database(path, base, light)
    conn = apsw.Connection(str(path))
    try:
        conn.execute("BEGIN")
        apply_schema_steps(conn, base, light=light, target=version)
        conn.execute(f"PRAGMA user_version={int(version)}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def generate_node_dir(out: Path, *, units: int, version: int, light: bool = False, network: Network | str = MAINNET,
                      seed: int = 1, stuck_at_30: bool = False,
                      on_unit: Callable[[dict[str, Any]], None] | None = None) -> GeneratedNode:
    """Generate a node data dir in `out` (created; must not hold a database yet). Deterministic for a seed.

    `on_unit` sees every composed unit (with its id) in creation order: tests re-hash them."""
    out = Path(out)
    net = resolve_network(network)
    if stuck_at_30:
        version = 29  # the node ran steps up to 30 on a version-29 (or 28) database, then died in the KV fill
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise BadInputError(f"schema version {version} is not generated",
                            hint=f"choose {MIN_VERSION}..{MAX_VERSION}, or --stuck-at-30")
    if units < 2:
        raise BadInputError("at least 2 units are needed (the genesis and one more)", hint="pass --units 2 or more")
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / db_file_name(light)
    if db_path.exists() or (out / ocore_facts.KV_DIR_NAME).exists():
        raise BadInputError(f"{out} already holds a node database", hint="choose an empty or new --out directory")
    create_database(db_path, version, light)

    kv_dir = out / ocore_facts.KV_DIR_NAME if stuck_at_30 else None
    kv = None
    k_joints = units // 2 if stuck_at_30 else 0
    written = [0]
    if kv_dir is not None:
        from bluegreen.engine.rocks_options import open_node_compatible

        kv = open_node_compatible(kv_dir)

    def _on_unit(unit: dict[str, Any]) -> None:
        if on_unit is not None:
            on_unit(unit)
        if kv is not None and written[0] < k_joints:
            # close enough to readJointDirectly's joint: the real fill would overwrite it anyway
            joint = {"unit": {k: v for k, v in unit.items() if k != "main_chain_index"}}
            kv[ocore_facts.UNIT_PREFIX + unit["unit"].encode()] = js_stringify(joint).encode("utf-8")
            written[0] += 1

    started = time.perf_counter()
    conn = apsw.Connection(str(db_path))
    try:
        # one bulk transaction into a throwaway file: no rollback journal and no WAL (a WAL would hold the
        # whole database once more and be copied back by the checkpoint); WAL mode is set at the end
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")  # a generator: speed over crash safety of a throwaway file
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # random base64 keys: keep the b-trees in memory while inserting
        conn.execute("BEGIN")
        writer = SqlWriter(conn)
        writer.defer_indexes()  # re-created by the generator's last step, before it voids units
        gen = Generator(writer, n_units=units, schema_version=version, light=light, network=net, seed=seed,
                        on_unit=_on_unit)
        # millions of long-lived acyclic objects: the cyclic GC would rescan them all again and again
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            stats = gen.run()
        finally:
            if gc_was_enabled:
                gc.enable()
        writer.restore_indexes()  # already done by gen.run(); a no-op unless it changes
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")  # what ocore's sqlite_pool sets: node databases are WAL files
        if stuck_at_30:
            conn.execute("BEGIN")
            apply_schema_steps(conn, version, light=light, target=30)
            conn.execute("PRAGMA user_version=30")
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = {t: int(next(conn.execute(f"SELECT COUNT(*) FROM {t}"))[0]) for t in sorted(writer.sql)}
        user_version = int(next(conn.execute("PRAGMA user_version"))[0])
    finally:
        conn.close()
    if kv is not None:
        kv.close()
    seconds = time.perf_counter() - started

    conf_path, keys_path = write_node_files(out, light=light, network=net, seed=seed)
    fsync_dir(out)
    dag = gen.dag
    return GeneratedNode(
        out=out, db_path=db_path, kv_dir=kv_dir, conf_path=conf_path, keys_path=keys_path, network=net.name,
        light=light, seed=seed, schema_version=version, user_version=user_version, stuck_at_30=stuck_at_30,
        units=stats.units, unit_list_size=rows["units"], messages=dict(sorted(stats.messages.items())),
        kinds=dict(sorted(stats.kinds.items())), rows=rows, final_bad=stats.final_bad, voided=stats.voided,
        unstable=stats.unstable, null_mci=stats.null_mci, last_stable_mci=dag.last_stable_mci,
        min_retrievable_mci=0 if light else dag.min_retrievable_mci, genesis_unit=gen.genesis, kv_joints=written[0],
        seconds=round(seconds, 3), units_per_second=round(stats.units / seconds, 1) if seconds > 0 else 0.0,
    )


def write_node_files(out: Path, *, light: bool, network: Network, seed: int) -> tuple[Path, Path]:
    """`conf.json` and a fake `keys.json` (headless-wallet shape): operator files the lifecycle must carry."""
    rng = random.Random(f"keys-{seed}")
    conf: dict[str, Any] = {"deviceName": f"generated-{seed}", "hub": "obyte.org/bb", "bLight": light,
                            "storage": "sqlite", "bSingleAddress": True, "permanent_pairing_secret": b64(rng, 9)}
    if network.name == "testnet":
        conf["hub"] = "obyte.org/bb-test"
    words = ["abandon", "ability", "able", "about", "above", "absent", "absorb", "abstract", "absurd", "abuse",
             "access", "accident"]
    keys = {"mnemonic_phrase": " ".join(rng.choice(words) for _ in range(12)),
            "temp_priv_key": b64(rng, 32), "prev_temp_priv_key": b64(rng, 32)}
    conf_path, keys_path = out / "conf.json", out / "keys.json"
    atomic_write_text(conf_path, json.dumps(conf, indent="\t") + "\n")
    atomic_write_text(keys_path, json.dumps(keys, indent="\t") + "\n")
    return conf_path, keys_path


def canonical_dump_sha256(db_path: Path) -> str:
    """sha256 of every table's rows in a fixed order (user_version included): equal dumps = equal data."""
    h = hashlib.sha256()
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        h.update(f"user_version={next(conn.execute('PRAGMA user_version'))[0]}\n".encode())
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        for t in tables:
            ncols = len(list(conn.execute(f"PRAGMA table_info({t})")))
            order = ", ".join(str(i + 1) for i in range(ncols))
            h.update(f"table {t}\n".encode())
            for row in conn.execute(f"SELECT * FROM {t} ORDER BY {order}"):
                h.update(repr(row).encode("utf-8", "surrogatepass") + b"\n")
    finally:
        conn.close()
    return h.hexdigest()

"""ocore's facts, in one place: where a node keeps its data, how its KV keys are laid out, from which schema
version it keeps unit JSON in the KV store, and how the genesis unit of a database is told.

Every other module takes these from here (ocore: conf.js / desktop_app.js for the file names, kvstore.js and
migrate_to_kv.js for the key prefixes, storage.js for the genesis rule)."""

from __future__ import annotations

import apsw

from bluegreen.errors import SourceDataError
from bluegreen.formats.networks import Network, detect_network, with_genesis

FULL_DB_NAME = "byteball.sqlite"
LIGHT_DB_NAME = "byteball-light.sqlite"
DB_NAMES: tuple[str, ...] = (FULL_DB_NAME, LIGHT_DB_NAME)
KV_DIR_NAME = "rocksdb"  # the level-rocksdb store beside the SQLite file

# From this schema version on, ocore keeps unit JSON and data feeds only in the KV store.
KV_ERA_VERSION = 31

UNIT_PREFIX = b"j\n"  # j\n<unit> -> the joint as JSON
DF_PREFIX = b"df\n"  # df\n<address>\n<feed>\n<type>\n<value>\n<mci> -> unit
DFV_PREFIX = b"dfv\n"  # dfv\n<address>\n<feed>\n<mci> -> value\nunit
STATE_VAR_PREFIX = b"st\n"  # st\n<aa address>\n<var> -> value (typed from step 39 on)
# The keys the v31 step writes (and a resumed or repeated fill replaces).
MIGRATED_PREFIXES: tuple[bytes, ...] = (UNIT_PREFIX, DF_PREFIX, DFV_PREFIX)


def db_file_name(light: bool) -> str:
    """`byteball.sqlite` for full nodes, `byteball-light.sqlite` for light ones."""
    return LIGHT_DB_NAME if light else FULL_DB_NAME


def is_light_db_name(name: str) -> bool:
    """Whether a database file name is a light node's."""
    return name == LIGHT_DB_NAME


def genesis_candidates(conn: apsw.Connection) -> list[str]:
    """Units without parents, the mci-0 ones first (at most three; a sound database has exactly one)."""
    return [str(r[0]) for r in conn.execute(
        "SELECT unit FROM units WHERE NOT EXISTS (SELECT 1 FROM parenthoods WHERE child_unit=units.unit) "
        "ORDER BY main_chain_index IS NOT 0, rowid LIMIT 3")]


def find_genesis(conn: apsw.Connection) -> str | None:
    """The genesis unit: the one unit without parents, or, among several, the one at main chain index 0.
    None when there is none or it cannot be told (callers say why)."""
    found = genesis_candidates(conn)
    if len(found) == 1:
        return found[0]
    at_zero = [str(r[0]) for r in conn.execute(
        "SELECT unit FROM units WHERE main_chain_index=0 "
        "AND NOT EXISTS (SELECT 1 FROM parenthoods WHERE child_unit=units.unit) LIMIT 2")]
    return at_zero[0] if len(at_zero) == 1 else None


def network_of(conn: apsw.Connection, genesis_option: str | None = None) -> Network:
    """The network of a node database and its genesis unit, the one rule engine and verify share.

    The network comes from the distinct `units.version` values. Its genesis is `genesis_option` when given;
    else the network's public genesis when the database holds it; else (devnet, a private network, a
    generated test node: ocore's GENESIS_UNIT env) the genesis found in the data. Raises SourceDataError
    when the versions mix networks, or when several units without parents leave the genesis open."""
    versions = [row[0] for row in conn.execute("SELECT DISTINCT version FROM units")]
    network = detect_network(versions)
    if genesis_option:
        return with_genesis(network, genesis_option)
    if network.genesis_unit is not None and conn.execute(
            "SELECT 1 FROM units WHERE unit=?", (network.genesis_unit,)).fetchone() is not None:
        return network
    found = find_genesis(conn)
    if found is not None:
        return with_genesis(network, found)
    several = genesis_candidates(conn)
    if len(several) > 1:
        raise SourceDataError(
            f"{network.name}: several units without parents ({', '.join(several)}): cannot tell the genesis unit",
            hint="pass --genesis-unit")
    return network.model_copy(update={"genesis_unit": None})

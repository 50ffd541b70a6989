"""Every ocore schema step below 31, as data.

A step is ocore's `if (version < N) { ... }` block of `sqlite_migrations.js` (master, checked against
the file's history: see `Step.history`). Its items run in order:

- `Statement`: one SQL statement. `only_for` restricts it to full or light nodes (ocore's `conf.bLight`;
  no step below 31 depends on mainnet/testnet, in any revision of the file). `already_present` is a
  probe that tells the runner the statement's effect is already in the database, so it is skipped
  (e.g. ALTER TABLE ADD COLUMN of a column that exists). `action="user_version"` marks ocore's
  intermediate `PRAGMA user_version=N`: recorded, never executed (the engine sets 31 at the end).
- `AtomicBlock`: statements that ocore wraps in its own BEGIN TRANSACTION / COMMIT (steps 10, 24).
  SQLite refuses nested transactions, so the runner runs them inside the caller's transaction under a
  SAVEPOINT; one probe decides whether the whole block is already applied.
- `DataOperation`: a step part that reads data and writes derived rows (step 18's attested_fields
  backfill), implemented by a named Python function in this module.

The SQL text is ours (our layout); tokens, names and inline comments follow ocore so that the stored
`sqlite_master.sql` differs from an ocore-migrated database in whitespace only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal

import apsw
from pydantic import BaseModel, ConfigDict

from bluegreen.errors import SourceDataError

NodeKind = Literal["full", "light"]
NetworkName = Literal["mainnet", "testnet", "devnet"]

# ocore constants.js values bound into statements, per network (devnet and GENESIS_UNIT networks set every
# upgrade mci to 0).
NETWORK_CONSTANTS: Mapping[str, Mapping[str, int]] = MappingProxyType({
    "mainnet": MappingProxyType({"v4UpgradeMci": 10968000}),
    "testnet": MappingProxyType({"v4UpgradeMci": 3522600}),
    "devnet": MappingProxyType({"v4UpgradeMci": 0}),
})

# ocore constants.js: attested profile fields longer than these are not indexed in attested_fields.
MAX_PROFILE_FIELD_LENGTH = 50
MAX_PROFILE_VALUE_LENGTH = 100


EffectKind = Literal["empties", "drops_rows", "rewrites", "upserts", "adds_rows"]


class Probe(BaseModel):
    """A read-only query that tells whether an item's effect is already in the database.

    `present_when="rows"`: present if the query returns at least one row; `"no_rows"`: if it returns none."""

    model_config = ConfigDict(frozen=True)

    sql: str
    present_when: Literal["rows", "no_rows"] = "rows"
    reason: str


class Statement(BaseModel):
    """One statement of a step (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["statement"] = "statement"
    sql: str
    action: Literal["execute", "user_version"] = "execute"
    only_for: NodeKind | None = None
    already_present: Probe | None = None
    # ocore's `constants.bTestnet` conditions: the statement runs only on these networks (devnet and
    # private networks count as not-testnet, as in ocore).
    only_networks: tuple[NetworkName, ...] | None = None
    # bound parameters, by name of a per-network constant (NETWORK_CONSTANTS), e.g. ("v4UpgradeMci",)
    params: tuple[str, ...] = ()
    # what the statement does to existing rows, for verify's row counts (verify never parses SQL):
    # ("empties", t) and ("drops_rows", t): t holds no rows afterwards; ("rewrites", t): rows changed in
    # place, count kept; ("upserts", t) and ("adds_rows", t): rows added or replaced, never removed.
    effect: tuple[EffectKind, str] | None = None
    # Source tables whose rows the statement reads (catch-up's row patch, schema/patchplan.py): when they are
    # empty or absent in both snapshots, the statement does the same to green as to a fresh migration.
    depends_on: tuple[str, ...] = ()


class AtomicBlock(BaseModel):
    """Statements ocore runs between its own BEGIN TRANSACTION and COMMIT."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["atomic"] = "atomic"
    ocore_begin: str = "BEGIN TRANSACTION"
    ocore_commit: str = "COMMIT"
    statements: tuple[Statement, ...]
    already_present: Probe
    depends_on: tuple[str, ...] = ()  # as Statement.depends_on, for the whole block


class DataOperation(BaseModel):
    """A data-reading part of a step, run by the Python function `DATA_OPERATIONS[name]`."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["data_operation"] = "data_operation"
    name: str
    description: str
    effect: tuple[EffectKind, str] | None = None


class StatementGroup(BaseModel):
    """Statements ocore queues together under one condition (step 46's `units` columns: added only when
    `units`' CREATE text lacks `oversize_fee`); one probe decides for the whole group."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["group"] = "group"
    statements: tuple[Statement, ...]
    already_present: Probe


class KvOperation(BaseModel):
    """A step part that reads or rewrites the KV store (steps 34 and 39), run by `KV_OPERATIONS[name]`
    (bluegreen.schema.kvsteps). `only_for` as for statements."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["kv_operation"] = "kv_operation"
    name: str
    description: str
    only_for: NodeKind | None = None


StepItem = Statement | AtomicBlock | DataOperation | StatementGroup | KvOperation


class Step(BaseModel):
    """ocore's `if (version < N)` block: run when the database's version is below `version`."""

    model_config = ConfigDict(frozen=True)

    version: int
    items: tuple[StepItem, ...]
    history: str = ""


# ---------------------------------------------------------------- probes


def table_exists(table: str) -> Probe:
    """Present when the table exists."""
    return Probe(sql=f"SELECT 1 FROM sqlite_master WHERE type='table' AND name='{table}'", reason=f"table {table} exists")


def index_exists(index: str) -> Probe:
    """Present when an index of that name exists (whatever it indexes, as ocore's IF NOT EXISTS)."""
    return Probe(sql=f"SELECT 1 FROM sqlite_master WHERE type='index' AND name='{index}'", reason=f"index {index} exists")


def column_exists(table: str, column: str) -> Probe:
    """Present when the column exists in the table."""
    return Probe(
        sql=f"SELECT 1 FROM pragma_table_info('{table}') WHERE name='{column}'",
        reason=f"column {table}.{column} exists",
    )


def table_empty(table: str) -> Probe:
    """Present (nothing left to delete) when the table has no rows."""
    return Probe(sql=f"SELECT 1 FROM {table} LIMIT 1", present_when="no_rows", reason=f"table {table} is already empty")


def _create_table(table: str, sql: str, only_for: NodeKind | None = None) -> Statement:
    return Statement(sql=sql, only_for=only_for, already_present=table_exists(table))


def _create_index(index: str, sql: str) -> Statement:
    return Statement(sql=sql, already_present=index_exists(index))


def _add_column(table: str, column: str, sql: str) -> Statement:
    return Statement(sql=sql, already_present=column_exists(table, column))


def _delete_all(table: str) -> Statement:
    return Statement(sql=f"DELETE FROM {table}", already_present=table_empty(table), effect=("empties", table))


def _user_version(n: int) -> Statement:
    return Statement(sql=f"PRAGMA user_version={n}", action="user_version")


# ---------------------------------------------------------------- the steps

_ATTESTED_FIELDS_COLUMNS = """
    unit CHAR(44) NOT NULL,
    message_index TINYINT NOT NULL,
    attestor_address CHAR(32) NOT NULL,
    address CHAR(32) NOT NULL,
    `field` VARCHAR(50) NOT NULL,
    `value` VARCHAR(100) NOT NULL,
    PRIMARY KEY (unit, message_index, `field`),"""

# step 15 creates it; step 43 drops it (and its rows, as ocore does) and creates it again, the same DDL
_ASSET_METADATA_DDL = """CREATE TABLE IF NOT EXISTS asset_metadata (
    asset CHAR(44) NOT NULL PRIMARY KEY,
    metadata_unit CHAR(44) NOT NULL,
    registry_address CHAR(32) NULL,
    suffix VARCHAR(20) NULL,
    name VARCHAR(20) NULL,
    decimals TINYINT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (name, registry_address),
    FOREIGN KEY (asset) REFERENCES assets(unit),
    FOREIGN KEY (metadata_unit) REFERENCES units(unit)
)"""

_AA_RESPONSES_COLUMNS = """
    aa_response_id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    mci INT NOT NULL, -- mci of the trigger unit
    trigger_address CHAR(32) NOT NULL, -- trigger address
    aa_address CHAR(32) NOT NULL,
    trigger_unit CHAR(44) NOT NULL,
    bounced TINYINT NOT NULL,
    response_unit CHAR(44) NULL UNIQUE,
    response TEXT NULL, -- json
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (trigger_unit, aa_address),"""

STEPS: tuple[Step, ...] = (
    Step(
        version=1,
        items=(
            _create_index(
                "unitAuthorsIndexByAddressDefinitionChash",
                "CREATE INDEX IF NOT EXISTS unitAuthorsIndexByAddressDefinitionChash ON unit_authors(address, definition_chash)",
            ),
            _create_index("outputsIsSerial", "CREATE INDEX IF NOT EXISTS outputsIsSerial ON outputs(is_serial)"),
            _create_index("bySequence", "CREATE INDEX IF NOT EXISTS bySequence ON units(sequence)"),
        ),
    ),
    Step(
        version=2,
        items=(
            _create_index(
                "hcobyAddressMci",
                "CREATE UNIQUE INDEX IF NOT EXISTS hcobyAddressMci ON headers_commission_outputs(address, main_chain_index)",
            ),
            _create_index(
                "byWitnessAddressMci",
                "CREATE UNIQUE INDEX IF NOT EXISTS byWitnessAddressMci ON witnessing_outputs(address, main_chain_index)",
            ),
            _create_index(
                "inputsIndexByAddressTypeToMci",
                "CREATE INDEX IF NOT EXISTS inputsIndexByAddressTypeToMci ON inputs(address, type, to_main_chain_index)",
            ),
            _delete_all("known_bad_joints"),
        ),
    ),
    Step(
        version=5,
        items=(
            _create_table(
                "push_registrations",
                "CREATE TABLE IF NOT EXISTS push_registrations (registrationId TEXT, device_address TEXT NOT NULL, "
                "PRIMARY KEY (device_address))",
            ),
        ),
    ),
    Step(
        version=6,
        items=(
            _create_table(
                "chat_messages",
                """CREATE TABLE IF NOT EXISTS chat_messages (
    id INTEGER PRIMARY KEY,
    correspondent_address CHAR(33) NOT NULL,
    message LONGTEXT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_incoming INTEGER(1) NOT NULL,
    type CHAR(15) NOT NULL DEFAULT 'text',
    FOREIGN KEY (correspondent_address) REFERENCES correspondent_devices(device_address)
)""",
            ),
            _create_index(
                "chatMessagesIndexByDeviceAddress",
                "CREATE INDEX IF NOT EXISTS chatMessagesIndexByDeviceAddress ON chat_messages(correspondent_address, id)",
            ),
            _add_column(
                "correspondent_devices", "my_record_pref",
                "ALTER TABLE correspondent_devices ADD COLUMN my_record_pref INTEGER DEFAULT 1",
            ),
            _add_column(
                "correspondent_devices", "peer_record_pref",
                "ALTER TABLE correspondent_devices ADD COLUMN peer_record_pref INTEGER DEFAULT 1",
            ),
            _delete_all("known_bad_joints"),
        ),
    ),
    Step(
        version=8,
        items=(
            _create_index("bySequence", "CREATE INDEX IF NOT EXISTS bySequence ON units(sequence)"),
            _delete_all("known_bad_joints"),
        ),
    ),
    Step(
        version=9,
        items=(
            _create_table(
                "watched_light_units",
                "CREATE TABLE IF NOT EXISTS watched_light_units (peer VARCHAR(100) NOT NULL, unit CHAR(44) NOT NULL, "
                "creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (peer, unit))",
            ),
            _create_index("wlabyUnit", "CREATE INDEX IF NOT EXISTS wlabyUnit ON watched_light_units(unit)"),
        ),
    ),
    Step(
        version=10,
        items=(
            # Rebuild chat_messages with AUTOINCREMENT and ON DELETE CASCADE (ocore: own transaction).
            AtomicBlock(
                statements=(
                    Statement(sql="ALTER TABLE chat_messages RENAME TO chat_messages_old"),
                    Statement(
                        sql="""CREATE TABLE IF NOT EXISTS chat_messages (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    correspondent_address CHAR(33) NOT NULL,
    message LONGTEXT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_incoming INTEGER(1) NOT NULL,
    type CHAR(15) NOT NULL DEFAULT 'text',
    FOREIGN KEY (correspondent_address) REFERENCES correspondent_devices(device_address) ON DELETE CASCADE
)"""
                    ),
                    Statement(sql="INSERT INTO chat_messages SELECT * FROM chat_messages_old"),
                    Statement(sql="DROP TABLE chat_messages_old"),
                    Statement(sql="CREATE INDEX chatMessagesIndexByDeviceAddress ON chat_messages(correspondent_address, id);"),
                ),
                already_present=Probe(
                    sql=(
                        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='chat_messages' "
                        "AND sql LIKE '%AUTOINCREMENT%' "
                        "AND EXISTS (SELECT 1 FROM pragma_foreign_key_list('chat_messages') "
                        "WHERE \"table\"='correspondent_devices' AND on_delete='CASCADE') "
                        "AND EXISTS (SELECT 1 FROM sqlite_master WHERE type='index' "
                        "AND name='chatMessagesIndexByDeviceAddress' AND tbl_name='chat_messages') "
                        "AND NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name='chat_messages_old')"
                    ),
                    reason="chat_messages already has AUTOINCREMENT, the ON DELETE CASCADE key and its index",
                ),
            ),
            _delete_all("known_bad_joints"),
            _delete_all("unhandled_joints"),
            _delete_all("dependencies"),
            _delete_all("hash_tree_balls"),
            _delete_all("catchup_chain_balls"),
        ),
    ),
    Step(
        version=11,
        items=(
            _create_table(
                "bots",
                """CREATE TABLE IF NOT EXISTS bots (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    rank INTEGER NOT NULL DEFAULT 0,
    name VARCHAR(100) NOT NULL UNIQUE,
    pairing_code VARCHAR(200) NOT NULL,
    description LONGTEXT NOT NULL
);""",
            ),
        ),
    ),
    Step(version=12, items=(_delete_all("known_bad_joints"),)),
    Step(
        version=13,
        items=(
            _add_column("unit_authors", "_mci", "ALTER TABLE unit_authors ADD COLUMN _mci INT NULL"),
            _user_version(13),
        ),
    ),
    Step(
        version=14,
        items=(
            Statement(
                sql="UPDATE unit_authors SET _mci=(SELECT main_chain_index FROM units WHERE units.unit=unit_authors.unit)",
                already_present=Probe(
                    sql=(
                        "SELECT 1 FROM unit_authors WHERE _mci IS NOT "
                        "(SELECT main_chain_index FROM units WHERE units.unit=unit_authors.unit) LIMIT 1"
                    ),
                    present_when="no_rows",
                    reason="every unit_authors._mci already equals its unit's main_chain_index",
                ),
            ),
            _create_index(
                "unitAuthorsIndexByAddressMci",
                "CREATE INDEX IF NOT EXISTS unitAuthorsIndexByAddressMci ON unit_authors(address, _mci)",
            ),
        ),
    ),
    Step(
        version=15,
        items=(
            _create_table(
                "asset_metadata",
                _ASSET_METADATA_DDL,
            ),
        ),
    ),
    Step(
        version=16,
        items=(
            _create_table(
                "sent_mnemonics",
                """CREATE TABLE IF NOT EXISTS sent_mnemonics (
    unit CHAR(44) NOT NULL,
    address CHAR(32) NOT NULL,
    mnemonic VARCHAR(107) NOT NULL,
    textAddress VARCHAR(120) NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (unit) REFERENCES units(unit)
)""",
            ),
            _create_index("sentByAddress", "CREATE INDEX IF NOT EXISTS sentByAddress ON sent_mnemonics(address)"),
            _create_index("sentByUnit", "CREATE INDEX IF NOT EXISTS sentByUnit ON sent_mnemonics(unit)"),
            _delete_all("known_bad_joints"),
        ),
    ),
    Step(
        version=17,
        items=(
            _create_table(
                "private_profiles",
                """CREATE TABLE IF NOT EXISTS private_profiles (
    private_profile_id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    unit CHAR(44) NOT NULL,
    payload_hash CHAR(44) NOT NULL,
    attestor_address CHAR(32) NOT NULL,
    address CHAR(32) NOT NULL,
    src_profile TEXT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (unit) REFERENCES units(unit)
)""",
            ),
            _create_table(
                "private_profile_fields",
                """CREATE TABLE IF NOT EXISTS private_profile_fields (
    private_profile_id INTEGER NOT NULL ,
    `field` VARCHAR(50) NOT NULL,
    `value` VARCHAR(50) NOT NULL,
    blinding CHAR(16) NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (private_profile_id, `field`),
    FOREIGN KEY (private_profile_id) REFERENCES private_profiles(private_profile_id)
)""",
            ),
            _create_index("ppfByField", "CREATE INDEX IF NOT EXISTS ppfByField ON private_profile_fields(`field`)"),
        ),
    ),
    Step(
        version=18,
        history=(
            "attested_fields first (9cca91b, 2018-03-19) had the attestor_address -> addresses key for light "
            "nodes too; since 0a23b8b (2018-03-20) light nodes create it without that key."
        ),
        items=(
            _create_table(
                "attested_fields",
                "CREATE TABLE IF NOT EXISTS attested_fields (" + _ATTESTED_FIELDS_COLUMNS + """
    CONSTRAINT attestationsByAttestorAddress FOREIGN KEY (attestor_address) REFERENCES addresses(address),
    FOREIGN KEY (unit) REFERENCES units(unit)
)""",
                only_for="full",
            ),
            _create_table(
                "attested_fields",
                "CREATE TABLE IF NOT EXISTS attested_fields (" + _ATTESTED_FIELDS_COLUMNS + """
    FOREIGN KEY (unit) REFERENCES units(unit)
)""",
                only_for="light",
            ),
            _create_index(
                "attestedFieldsByAttestorFieldValue",
                "CREATE INDEX IF NOT EXISTS attestedFieldsByAttestorFieldValue ON attested_fields(attestor_address, `field`, `value`)",
            ),
            _create_index(
                "attestedFieldsByAddressField",
                "CREATE INDEX IF NOT EXISTS attestedFieldsByAddressField ON attested_fields(address, `field`)",
            ),
            _create_table(
                "original_addresses",
                """CREATE TABLE IF NOT EXISTS original_addresses (
    unit CHAR(44) NOT NULL,
    address CHAR(32) NOT NULL,
    original_address VARCHAR(100) NOT NULL,
    PRIMARY KEY (unit, address),
    FOREIGN KEY (unit) REFERENCES units(unit)
)""",
            ),
            DataOperation(
                name="backfill_attested_fields",
                description=(
                    "for every attestation message: each profile field (name <= 50 UTF-16 units) whose value is a "
                    "string of <= 100 UTF-16 units -> INSERT OR IGNORE INTO attested_fields"
                ),
                effect=("adds_rows", "attested_fields"),
            ),
        ),
    ),
    Step(
        version=19,
        items=(_create_index("outputsIsSerial", "CREATE INDEX IF NOT EXISTS outputsIsSerial ON outputs(is_serial)"),),
    ),
    Step(version=20, items=(_delete_all("known_bad_joints"),)),
    Step(
        version=21,
        items=(
            _add_column(
                "push_registrations", "platform",
                "ALTER TABLE push_registrations ADD COLUMN platform TEXT NOT NULL DEFAULT 'android'",
            ),
        ),
    ),
    Step(
        version=22,
        items=(
            _create_index(
                "sharedAddressSigningPathsByDeviceAddress",
                "CREATE INDEX IF NOT EXISTS sharedAddressSigningPathsByDeviceAddress ON shared_address_signing_paths(device_address);",
            ),
        ),
    ),
    Step(
        version=23,
        history=(
            "from fff06b5 (2019-02-21) to 8d30009 (2019-03-14) prosaic_contracts also had "
            "FOREIGN KEY (peer_device_address) REFERENCES correspondent_devices(device_address); "
            "nodes built from master in that window keep it."
        ),
        items=(
            _create_table(
                "peer_addresses",
                """CREATE TABLE IF NOT EXISTS peer_addresses (
    address CHAR(32) NOT NULL,
    signing_paths VARCHAR(255) NULL,
    device_address CHAR(33) NOT NULL,
    definition TEXT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (address),
    FOREIGN KEY (device_address) REFERENCES correspondent_devices(device_address)
)""",
            ),
            _create_table(
                "prosaic_contracts",
                """CREATE TABLE IF NOT EXISTS prosaic_contracts (
    hash CHAR(44) NOT NULL PRIMARY KEY,
    peer_address CHAR(32) NOT NULL,
    peer_device_address CHAR(33) NOT NULL,
    my_address  CHAR(32) NOT NULL,
    is_incoming TINYINT NOT NULL,
    creation_date TIMESTAMP NOT NULL,
    ttl INT NOT NULL DEFAULT 168, -- 168 hours = 24 * 7 = 1 week
    status TEXT CHECK (status IN('pending', 'revoked', 'accepted', 'declined')) NOT NULL DEFAULT 'active',
    title VARCHAR(1000) NOT NULL,
    `text` TEXT NOT NULL,
    shared_address CHAR(32),
    unit CHAR(44),
    cosigners VARCHAR(1500),
    FOREIGN KEY (my_address) REFERENCES my_addresses(address)
)""",
            ),
        ),
    ),
    Step(
        version=24,
        items=(
            # Add attestor_address to asset_attestors' primary key (ocore: own transaction).
            AtomicBlock(
                statements=(
                    Statement(
                        sql="""CREATE TABLE asset_attestors_new (
    unit CHAR(44) NOT NULL,
    message_index TINYINT NOT NULL,
    asset CHAR(44) NOT NULL, -- in the initial attestor list: same as unit
    attestor_address CHAR(32) NOT NULL,
    PRIMARY KEY (unit, message_index, attestor_address),
    UNIQUE (asset, attestor_address, unit),
    FOREIGN KEY (unit) REFERENCES units(unit),
    CONSTRAINT assetAttestorsByAsset FOREIGN KEY (asset) REFERENCES assets(unit)
)"""
                    ),
                    Statement(sql="INSERT INTO asset_attestors_new SELECT * FROM asset_attestors"),
                    Statement(sql="DROP TABLE asset_attestors"),
                    Statement(sql="ALTER TABLE asset_attestors_new RENAME TO asset_attestors"),
                ),
                already_present=Probe(
                    sql=(
                        "SELECT 1 FROM pragma_table_info('asset_attestors') WHERE name='attestor_address' AND pk>0 "
                        "AND NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name='asset_attestors_new')"
                    ),
                    reason="asset_attestors already has attestor_address in its primary key",
                ),
            ),
        ),
    ),
    Step(
        version=25,
        items=(
            _add_column(
                "correspondent_devices", "is_blackhole",
                "ALTER TABLE correspondent_devices ADD COLUMN is_blackhole TINYINT NOT NULL DEFAULT 0",
            ),
        ),
    ),
    Step(
        version=26,
        items=(
            _add_column(
                "correspondent_devices", "push_enabled",
                "ALTER TABLE correspondent_devices ADD COLUMN push_enabled TINYINT NOT NULL DEFAULT 1",
            ),
            _create_table(
                "correspondent_settings",
                """CREATE TABLE IF NOT EXISTS correspondent_settings (
    device_address CHAR(33) NOT NULL,
    correspondent_address CHAR(33) NOT NULL,
    push_enabled TINYINT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (device_address, correspondent_address)
)""",
            ),
            _user_version(26),
        ),
    ),
    Step(
        version=27,
        items=(
            _create_index("unqPayloadHash", "CREATE UNIQUE INDEX IF NOT EXISTS unqPayloadHash ON private_profiles(payload_hash)"),
        ),
    ),
    Step(
        version=28,
        items=(
            _add_column("units", "timestamp", "ALTER TABLE units ADD COLUMN timestamp INT NOT NULL DEFAULT 0"),
            _user_version(28),
        ),
    ),
    Step(version=29, items=(_delete_all("known_bad_joints"),)),
    Step(
        version=30,
        history=(
            "step 30 first appeared in 372267e (2019-05-31) with the aa_address -> aa_addresses key for light nodes "
            "too (removed for light in 8c7f012, 2019-06-26) and without the joints table (added in 1706c06, "
            "2019-06-27); a node built from master in that window can sit at 30 with those differences."
        ),
        items=(
            _create_table(
                "joints",
                """CREATE TABLE IF NOT EXISTS joints (
    unit CHAR(44) NOT NULL PRIMARY KEY,
    json TEXT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)""",
            ),
            _create_table(
                "aa_addresses",
                """CREATE TABLE IF NOT EXISTS aa_addresses (
    address CHAR(32) NOT NULL PRIMARY KEY,
    unit CHAR(44) NOT NULL, -- where it is first defined.  No index for better speed
    mci INT NOT NULL, -- it is available since this mci (mci of the above unit)
    definition TEXT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)""",
            ),
            _create_table(
                "aa_triggers",
                """CREATE TABLE IF NOT EXISTS aa_triggers (
    mci INT NOT NULL,
    unit CHAR(44) NOT NULL,
    address CHAR(32) NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (mci, unit, address),
    FOREIGN KEY (address) REFERENCES aa_addresses(address)
)""",
            ),
            _create_table(
                "aa_balances",
                """CREATE TABLE IF NOT EXISTS aa_balances (
    address CHAR(32) NOT NULL,
    asset CHAR(44) NOT NULL, -- 'base' for bytes (NULL would not work for uniqueness of primary key)
    balance BIGINT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (address, asset),
    FOREIGN KEY (address) REFERENCES aa_addresses(address)
--  FOREIGN KEY (asset) REFERENCES assets(unit)
)""",
            ),
            _create_table(
                "aa_responses",
                "CREATE TABLE IF NOT EXISTS aa_responses (" + _AA_RESPONSES_COLUMNS + """
    FOREIGN KEY (aa_address) REFERENCES aa_addresses(address),
    FOREIGN KEY (trigger_unit) REFERENCES units(unit)
--  FOREIGN KEY (response_unit) REFERENCES units(unit)
)""",
                only_for="full",
            ),
            _create_table(
                "aa_responses",
                "CREATE TABLE IF NOT EXISTS aa_responses (" + _AA_RESPONSES_COLUMNS + """
    FOREIGN KEY (trigger_unit) REFERENCES units(unit)
--  FOREIGN KEY (response_unit) REFERENCES units(unit)
)""",
                only_for="light",
            ),
            _create_index(
                "aaResponsesByTriggerAddress",
                "CREATE INDEX IF NOT EXISTS aaResponsesByTriggerAddress ON aa_responses(trigger_address)",
            ),
            _create_index("aaResponsesByAAAddress", "CREATE INDEX IF NOT EXISTS aaResponsesByAAAddress ON aa_responses(aa_address)"),
            _create_index("aaResponsesByMci", "CREATE INDEX IF NOT EXISTS aaResponsesByMci ON aa_responses(mci)"),
            _user_version(30),
        ),
    ),
)

LAST_SQL_STEP = 30  # step 31 is the KV migration (engine/), not a schema step

_STATE_VAR_BALANCES = """REPLACE INTO aa_balances (address, asset, balance)
    SELECT address, IFNULL(asset, 'base'), SUM(amount) AS balance
    FROM aa_addresses
    CROSS JOIN outputs USING(address)
    CROSS JOIN units ON outputs.unit=units.unit
    WHERE is_spent=0 {extra}AND (
        is_stable=1 AND sequence='good'
        OR EXISTS (SELECT 1 FROM unit_authors CROSS JOIN aa_addresses USING(address) WHERE unit_authors.unit=outputs.unit)
    )
    GROUP BY address, asset"""

_WAC_COLUMNS_43 = """
    hash CHAR(44) NOT NULL PRIMARY KEY,
    peer_address CHAR(32) NOT NULL,
    peer_device_address CHAR(33) NOT NULL,
    my_address  CHAR(32) NOT NULL,
    arbiter_address CHAR(32) NOT NULL,
    me_is_payer TINYINT NOT NULL,
    amount BIGINT NULL,
    asset CHAR(44) NULL,
    is_incoming TINYINT NOT NULL,
    me_is_cosigner TINYINT NULL,
    creation_date TIMESTAMP NOT NULL,
    ttl INT NOT NULL DEFAULT 168, -- 168 hours = 24 * 7 = 1 week
    status VARCHAR CHECK (status IN('pending', 'revoked', 'accepted', 'signed', 'declined', 'paid', 'in_dispute', 'dispute_resolved', 'in_appeal', 'appeal_approved', 'appeal_declined', 'cancelled', 'completed')) NOT NULL DEFAULT 'pending',
    title VARCHAR(1000) NOT NULL,
    text TEXT NOT NULL,
    my_contact_info TEXT NULL,
    peer_contact_info TEXT NULL,
    peer_pairing_code VARCHAR(200) NULL,
    shared_address CHAR(32) NULL UNIQUE,
    unit CHAR(44) NULL,
    cosigners VARCHAR(1500),
    resolution_unit CHAR(44) NULL,
    arbstore_address  CHAR(32) NULL,
    arbstore_device_address  CHAR(33) NULL,
    FOREIGN KEY (my_address) REFERENCES my_addresses(address)
"""

_WAC_COLUMN_LIST = (
    "hash, peer_address, peer_device_address, my_address, arbiter_address, me_is_payer, my_party_name, "
    "peer_party_name, amount, asset, is_incoming, me_is_cosigner, creation_date, ttl, status, title, text, "
    "my_contact_info, peer_contact_info, peer_pairing_code, shared_address, unit, cosigners, resolution_unit, "
    "arbstore_address, arbstore_device_address"
)

_UNITS_V4_COLUMNS = (
    ("oversize_fee", "INT"), ("tps_fee", "INT"), ("actual_tps_fee", "INT"), ("burn_fee", "INT"),
    ("max_aa_responses", "INT"), ("count_aa_responses", "INT"), ("is_aa_response", "TINYINT"),
    ("count_primary_aa_triggers", "TINYINT"),
)

KV_ERA_STEPS: tuple[Step, ...] = (
    Step(version=32, items=(
        _create_table("my_watched_addresses", """CREATE TABLE IF NOT EXISTS my_watched_addresses (
    address CHAR(32) NOT NULL PRIMARY KEY,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)"""),
    )),
    Step(version=33, items=(
        _add_column("aa_addresses", "storage_size", "ALTER TABLE aa_addresses ADD COLUMN storage_size INT NOT NULL DEFAULT 0"),
        _user_version(33),
    )),
    Step(version=34, items=(
        KvOperation(
            name="init_storage_sizes",
            description=(
                "for every `st\\n<aa>\\n<var>` key: storage_size += JS length of var + JS length of value "
                "(UTF-16 units, value before step 39 types it); UPDATE aa_addresses per AA found"
            ),
        ),
    )),
    Step(version=35, items=(
        Statement(sql=_STATE_VAR_BALANCES.format(extra=""), only_for="full", effect=("upserts", "aa_balances"),
                  depends_on=("aa_addresses",)),
    )),
    Step(version=36, items=(
        _create_table("watched_light_aas", """CREATE TABLE IF NOT EXISTS watched_light_aas (
    peer VARCHAR(100) NOT NULL,
    aa CHAR(32) NOT NULL,
    address CHAR(32) NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (peer, aa, address)
)"""),
        _create_index("wlaabyAA", "CREATE INDEX IF NOT EXISTS wlaabyAA ON watched_light_aas(aa)"),
    )),
    Step(version=37, items=(
        Statement(
            sql="ALTER TABLE aa_addresses ADD COLUMN base_aa CHAR(32) NULL CONSTRAINT aaAddressesByBaseAA "
                "REFERENCES aa_addresses(address)",
            only_for="full", already_present=column_exists("aa_addresses", "base_aa"),
        ),
        Statement(sql="ALTER TABLE aa_addresses ADD COLUMN base_aa CHAR(32) NULL", only_for="light",
                  already_present=column_exists("aa_addresses", "base_aa")),
        _user_version(37),
    )),
    Step(version=38, items=(_create_index("byBaseAA", "CREATE INDEX IF NOT EXISTS byBaseAA ON aa_addresses(base_aa)"),)),
    Step(version=39, items=(
        KvOperation(
            name="type_state_vars",
            only_for="full",
            description=(
                "every `st` value becomes `n\\n<value>` (getNumericFeedValue not null) or `s\\n<value>`; "
                "skipped when every `st` value already holds a newline (ocore's 'already upgraded' test)"
            ),
        ),
    )),
    Step(version=40, items=(
        _add_column("aa_addresses", "getters", "ALTER TABLE aa_addresses ADD COLUMN getters TEXT NULL"),
        _user_version(40),
    )),
    Step(version=41, items=(_delete_all("known_bad_joints"),)),
    Step(version=42, items=(
        Statement(sql="""CREATE TABLE IF NOT EXISTS unprocessed_addresses (
    address CHAR(32) NOT NULL PRIMARY KEY,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);""", only_for="light", already_present=table_exists("unprocessed_addresses")),
    )),
    Step(
        version=43,
        history="ocore drops asset_metadata and creates it again: its rows are lost (the node refetches them); "
                "we keep that and report the count.",
        items=(
            _create_table("arbiter_locations", """CREATE TABLE IF NOT EXISTS arbiter_locations (
    arbiter_address CHAR(32) NOT NULL PRIMARY KEY,
    arbstore_address CHAR(32) NOT NULL,
    unit CHAR(44) NULL
);"""),
            _create_table("wallet_arbiters", """CREATE TABLE IF NOT EXISTS wallet_arbiters (
    arbiter_address CHAR(32) NOT NULL PRIMARY KEY,
    real_name VARCHAR(250) NULL,
    device_pub_key VARCHAR(44) NULL
);"""),
            _create_table("wallet_arbiter_contracts",
                          "CREATE TABLE IF NOT EXISTS wallet_arbiter_contracts (" + _WAC_COLUMNS_43 + ")"),
            _create_index("wacStatus", "CREATE INDEX IF NOT EXISTS wacStatus ON wallet_arbiter_contracts(status)"),
            _create_index("wacArbiterAddress",
                          "CREATE INDEX IF NOT EXISTS wacArbiterAddress ON wallet_arbiter_contracts(arbiter_address)"),
            _create_index("wacPeerAddress", "CREATE INDEX IF NOT EXISTS wacPeerAddress ON wallet_arbiter_contracts(peer_address)"),
            _create_table("arbiter_disputes", """CREATE TABLE IF NOT EXISTS arbiter_disputes (
    contract_hash CHAR(44) NOT NULL PRIMARY KEY,
    plaintiff_address CHAR(32) NOT NULL,
    respondent_address CHAR(32) NOT NULL,
    plaintiff_is_payer TINYINT(1) NOT NULL,
    plaintiff_pairing_code VARCHAR(200) NOT NULL,
    respondent_pairing_code VARCHAR(200) NOT NULL,
    contract_content TEXT NOT NULL,
    contract_unit CHAR(44) NOT NULL,
    amount BIGINT NOT NULL,
    asset CHAR(44) NULL,
    arbiter_address CHAR(32) NOT NULL,
    service_fee_asset CHAR(44) NULL,
    arbstore_device_address CHAR(33) NOT NULL,
    status VARCHAR(40) CHECK (status IN('pending', 'resolved')) NOT NULL DEFAULT 'pending',
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    plaintiff_contact_info TEXT NULL,
    respondent_contact_info TEXT NULL,
    FOREIGN KEY (arbstore_device_address) REFERENCES correspondent_devices(device_address)
)"""),
            Statement(sql="DROP TABLE IF EXISTS asset_metadata", effect=("drops_rows", "asset_metadata")),
            Statement(sql=_ASSET_METADATA_DDL),
        ),
    ),
    Step(version=44, items=(
        Statement(sql=_STATE_VAR_BALANCES.format(extra="AND address='SLBA27JAT5UJBMQGDQLAT3FQ467XDOGF' "),
                  only_for="full", only_networks=("testnet",), effect=("upserts", "aa_balances"),
                  depends_on=("aa_addresses",)),
    )),
    Step(version=45, items=(
        _add_column("wallet_arbiter_contracts", "my_party_name",
                    "ALTER TABLE wallet_arbiter_contracts ADD COLUMN my_party_name VARCHAR(100) NULL"),
        _add_column("wallet_arbiter_contracts", "peer_party_name",
                    "ALTER TABLE wallet_arbiter_contracts ADD COLUMN peer_party_name VARCHAR(100) NULL"),
        _user_version(45),
    )),
    Step(
        version=46,
        history="the count_primary_aa_triggers UPDATE has `WHERE is_aa_response!=1`, never true for the NULL of "
                "non-response units: it changes nothing (kept as ocore, the node expects NULL).",
        items=(
            _create_table("system_votes", """CREATE TABLE IF NOT EXISTS system_votes (
    unit CHAR(44) NOT NULL,
    address CHAR(32) NOT NULL,
    subject VARCHAR(50) NOT NULL,
    value TEXT NOT NULL,
    timestamp INT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (unit, address, subject)
--  FOREIGN KEY (unit) REFERENCES units(unit)
)""", only_for="full"),
            Statement(sql="CREATE INDEX IF NOT EXISTS bySysVotesAddress ON system_votes(address)", only_for="full",
                      already_present=index_exists("bySysVotesAddress")),
            Statement(sql="CREATE INDEX IF NOT EXISTS bySysVotesSubjectAddress ON system_votes(subject, address)",
                      only_for="full", already_present=index_exists("bySysVotesSubjectAddress")),
            Statement(sql="CREATE INDEX IF NOT EXISTS bySysVotesSubjectTimestamp ON system_votes(subject, timestamp)",
                      only_for="full", already_present=index_exists("bySysVotesSubjectTimestamp")),
            _create_table("op_votes", """CREATE TABLE IF NOT EXISTS op_votes (
    unit CHAR(44) NOT NULL,
    address CHAR(32) NOT NULL,
    op_address CHAR(32) NOT NULL,
    timestamp INT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (address, op_address)
--  FOREIGN KEY (unit) REFERENCES units(unit)
)""", only_for="full"),
            Statement(sql="CREATE INDEX IF NOT EXISTS byOpVotesTs ON op_votes(timestamp)", only_for="full",
                      already_present=index_exists("byOpVotesTs")),
            _create_table("numerical_votes", """CREATE TABLE IF NOT EXISTS numerical_votes (
    unit CHAR(44) NOT NULL,
    address CHAR(32) NOT NULL,
    subject VARCHAR(50) NOT NULL,
    value DOUBLE NOT NULL,
    timestamp INT NOT NULL,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (address, subject)
--  FOREIGN KEY (unit) REFERENCES units(unit)
)""", only_for="full"),
            Statement(sql="CREATE INDEX IF NOT EXISTS byNumericalVotesSubjectTs ON numerical_votes(subject, timestamp)",
                      only_for="full", already_present=index_exists("byNumericalVotesSubjectTs")),
            _create_table("system_vars", """CREATE TABLE IF NOT EXISTS system_vars (
    subject VARCHAR(50) NOT NULL,
    value TEXT NOT NULL,
    vote_count_mci INT NOT NULL, -- applies since the next mci
    is_emergency TINYINT NOT NULL DEFAULT 0,
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (subject, vote_count_mci DESC)
)""", only_for="full"),
            _create_table("tps_fees_balances", """CREATE TABLE IF NOT EXISTS tps_fees_balances (
    address CHAR(32) NOT NULL,
    mci INT NOT NULL,
    tps_fee_balance INT NOT NULL DEFAULT 0, -- can be negative
    creation_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (address, mci DESC)
)""".replace("tps_fee_balance INT", "tps_fees_balance INT"), only_for="full"),
            _create_table("node_vars", """CREATE TABLE IF NOT EXISTS node_vars (
    name VARCHAR(30) NOT NULL PRIMARY KEY,
    value TEXT NOT NULL,
    last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)""", only_for="full"),
            Statement(sql="INSERT OR IGNORE INTO node_vars (name, value) VALUES ('last_temp_data_purge_mci', ?)",
                      only_for="full", params=("v4UpgradeMci",), effect=("adds_rows", "node_vars"),
                      depends_on=("node_vars",)),
            StatementGroup(
                statements=tuple(
                    Statement(sql=f"ALTER TABLE units ADD COLUMN {name} {kind} NULL") for name, kind in _UNITS_V4_COLUMNS
                ),
                already_present=Probe(
                    sql="SELECT 1 FROM sqlite_master WHERE type='table' AND name='units' AND instr(sql, 'oversize_fee')>0",
                    reason="units' CREATE statement already names oversize_fee (ocore tests the text)",
                ),
            ),
            Statement(sql="UPDATE units SET is_aa_response=1 WHERE unit IN (SELECT response_unit FROM aa_responses)",
                      effect=("rewrites", "units"), depends_on=("aa_responses",)),
            Statement(sql="""UPDATE units
    SET count_primary_aa_triggers=(SELECT COUNT(*) FROM aa_responses WHERE trigger_unit=unit)
    WHERE is_aa_response!=1 AND unit IN (SELECT trigger_unit FROM aa_responses)""", depends_on=("aa_responses",)),
            _user_version(46),
        ),
    ),
    Step(version=47, items=(
        Statement(sql="UPDATE aa_balances SET balance=23000 WHERE address='GZKVAR5Z2U4N6S2BIQDIY3HN5ZHVV45M' "
                      "AND asset='base' AND balance=46000",
                  only_for="full", only_networks=("mainnet", "devnet"), effect=("rewrites", "aa_balances"),
                  depends_on=("aa_balances",)),
    )),
    Step(version=48, items=(
        Statement(sql="DROP INDEX IF EXISTS hcobyAddressSpent"),
        Statement(sql="DROP INDEX IF EXISTS byWitnessAddressSpent"),
    )),
    Step(version=49, items=(
        AtomicBlock(
            statements=(
                Statement(sql="ALTER TABLE wallet_arbiter_contracts RENAME TO wallet_arbiter_contracts_old"),
                Statement(sql="CREATE TABLE wallet_arbiter_contracts (" + _WAC_COLUMNS_43.replace(
                    "    amount BIGINT NULL,", "    my_party_name VARCHAR(100) NULL,\n    peer_party_name VARCHAR(100) NULL,\n"
                    "    amount BIGINT NULL,").replace("status VARCHAR CHECK", "status VARCHAR(40) CHECK").replace(
                    "    FOREIGN KEY (my_address)",
                    "    FOREIGN KEY (shared_address) REFERENCES shared_addresses(shared_address),\n    FOREIGN KEY (my_address)")
                    + ")"),
                Statement(sql=f"INSERT INTO wallet_arbiter_contracts ({_WAC_COLUMN_LIST}) SELECT {_WAC_COLUMN_LIST} "
                              "FROM wallet_arbiter_contracts_old"),
                Statement(sql="DROP TABLE wallet_arbiter_contracts_old"),
                Statement(sql="CREATE INDEX wacStatus ON wallet_arbiter_contracts(status)"),
                Statement(sql="CREATE INDEX wacArbiterAddress ON wallet_arbiter_contracts(arbiter_address)"),
                Statement(sql="CREATE INDEX wacPeerAddress ON wallet_arbiter_contracts(peer_address)"),
            ),
            already_present=Probe(
                sql="SELECT 1 FROM pragma_foreign_key_list('wallet_arbiter_contracts') WHERE \"table\"='shared_addresses'",
                reason="wallet_arbiter_contracts already has its shared_addresses key",
            ),
            depends_on=("wallet_arbiter_contracts",),
        ),
    )),
    Step(version=50, items=(
        _add_column("wallet_arbiter_contracts", "my_pairing_code",
                    "ALTER TABLE wallet_arbiter_contracts ADD COLUMN my_pairing_code VARCHAR(200) NULL"),
        _user_version(50),
    )),
)

ALL_STEPS: tuple[Step, ...] = STEPS + KV_ERA_STEPS
KV_FILL_STEP = 31  # the v31 fill of unit JSON and data feeds (bluegreen.engine), with a unit selector
MAX_KNOWN_VERSION = 50
MIN_SOURCE_VERSION = 6
SUPPORTED_TARGETS: tuple[int, ...] = tuple(range(31, MAX_KNOWN_VERSION + 1))


def max_known_version() -> int:
    """The highest ocore schema version bluegreen migrates to (ocore 0.4.6's VERSION)."""
    return MAX_KNOWN_VERSION


def statement_applies(st: Statement, node: NodeKind, network: str) -> bool:
    """Whether ocore runs this statement on this node kind and network."""
    if st.only_for is not None and st.only_for != node:
        return False
    return st.only_networks is None or network in st.only_networks


def bound_params(st: Statement, network: str) -> tuple[object, ...]:
    """The values of `st.params` on `network` (unknown networks take mainnet's, as ocore without env)."""
    consts = NETWORK_CONSTANTS.get(network, NETWORK_CONSTANTS["mainnet"])
    return tuple(consts[name] for name in st.params)


def steps_between(from_version: int, to_version: int) -> tuple[Step, ...]:
    """The catalogue steps ocore runs to move a database from `from_version` to `to_version`, in order
    (step 31, the KV fill, is the engine's and not in this list)."""
    return tuple(s for s in ALL_STEPS if from_version < s.version <= to_version)


class DeclaredEffect(BaseModel):
    """What one catalogued statement or data operation does to the rows of a table that already exists."""

    model_config = ConfigDict(frozen=True)

    version: int
    kind: EffectKind
    table: str


def declared_effects(from_version: int, to_version: int, node: NodeKind,
                     network: str | None) -> tuple[DeclaredEffect, ...]:
    """The effects on existing rows of the steps from `from_version` to `to_version`, in order, on this node
    kind; `network=None` (not known) takes every network's statements, so nothing is left out."""
    found: list[DeclaredEffect] = []
    for step in steps_between(from_version, to_version):
        for item in step.items:
            parts = item.statements if isinstance(item, (AtomicBlock, StatementGroup)) else (item,)
            for part in parts:
                if isinstance(part, Statement):
                    if part.only_for is not None and part.only_for != node:
                        continue
                    if network is not None and part.only_networks is not None and network not in part.only_networks:
                        continue
                if isinstance(part, (Statement, DataOperation)) and part.effect is not None:
                    found.append(DeclaredEffect(version=step.version, kind=part.effect[0], table=part.effect[1]))
    return tuple(found)


# ---------------------------------------------------------------- data operations


class DataOperationResult(BaseModel):
    """What a data operation did: rows it considered writing, and rows it actually inserted."""

    model_config = ConfigDict(frozen=True)

    candidates: int
    inserted: int


def js_length(text: str) -> int:
    """JavaScript `String.prototype.length`: UTF-16 code units, not code points."""
    return len(text.encode("utf-16-le")) // 2


def _is_array_index(key: str) -> bool:
    return key.isascii() and key.isdigit() and (key == "0" or not key.startswith("0")) and int(key) < 2**32 - 1


def js_for_in_keys(obj: dict[str, object]) -> list[str]:
    """The order JavaScript's `for..in` visits a `JSON.parse`d object's own keys: integer-like keys
    ascending first, then the others in source order (Python keeps a duplicate key at its first position,
    with the last value, exactly like JSON.parse)."""
    keys = list(obj)
    return sorted((k for k in keys if _is_array_index(k)), key=int) + [k for k in keys if not _is_array_index(k)]


def attested_field_rows(payload: str, row_address: str, where: str) -> list[tuple[str, str]]:
    """(field, value) pairs step 18 indexes for one attestation payload, in ocore's insertion order.

    Raises SourceDataError when the payload is not a JSON object or names another address (ocore throws)."""
    try:
        attestation = json.loads(payload)
    except (TypeError, ValueError) as e:
        raise SourceDataError(f"{where}: attestation payload is not JSON ({e})", hint="repair or remove this unit") from e
    if not isinstance(attestation, dict):
        raise SourceDataError(f"{where}: attestation payload is not an object", hint="repair or remove this unit")
    if attestation.get("address") != row_address:
        raise SourceDataError(
            f"{where}: attestation.address {attestation.get('address')!r} != attestations.address {row_address!r}",
            hint="the attestations table disagrees with the message payload; repair the source database",
        )
    profile = attestation.get("profile")
    if isinstance(profile, dict):
        items = [(k, profile[k]) for k in js_for_in_keys(profile)]
    elif isinstance(profile, list):  # for..in over an array visits its indexes as strings
        items = [(str(i), v) for i, v in enumerate(profile)]
    else:  # validation only admits objects; a non-object has no enumerable fields worth indexing
        items = []
    return [
        (field, value)
        for field, value in items
        if js_length(field) <= MAX_PROFILE_FIELD_LENGTH
        and isinstance(value, str)
        and js_length(value) <= MAX_PROFILE_VALUE_LENGTH
    ]


def backfill_attested_fields(conn: apsw.Connection) -> DataOperationResult:
    """Step 18 data part: index the profile fields of every existing attestation into attested_fields.

    Reads `attestations CROSS JOIN messages USING(unit, message_index)` and runs INSERT OR IGNORE per field,
    as ocore does (its query reads the database before any queued statement runs; no step before 18 touches
    attestations or messages, so reading it here, after steps < 18, sees the same rows)."""
    candidates = inserted = 0
    rows = list(
        conn.execute(
            "SELECT unit, message_index, attestor_address, address, payload "
            "FROM attestations CROSS JOIN messages USING(unit, message_index)"
        )
    )
    for unit, message_index, attestor_address, address, payload in rows:
        where = f"unit {unit} message {message_index}"
        for field, value in attested_field_rows(payload, address, where):  # type: ignore[arg-type]
            candidates += 1
            conn.execute(
                "INSERT OR IGNORE INTO attested_fields (unit, message_index, attestor_address, address, field, value) "
                "VALUES (?,?,?,?,?,?)",
                (unit, message_index, attestor_address, address, field, value),
            )
            inserted += conn.changes()
    return DataOperationResult(candidates=candidates, inserted=inserted)


DATA_OPERATIONS: Mapping[str, Callable[[apsw.Connection], DataOperationResult]] = MappingProxyType(
    {"backfill_attested_fields": backfill_attested_fields}
)

"""Known, legitimate differences between a database migrated by ocore's steps and ocore's fresh v31 schema.

ocore changed its fresh schema (`initial-db/byteball-sqlite*.sql`, and the prebuilt
`initial.byteball*.sqlite` files a new node is copied from) several times without a migration step.
A node keeps the shape of the schema it was created with, so after every step has run it can still
differ from our v31 reference. Each drift below was found by migrating ocore's own empty databases
(the shared empty schemas, and ad hoc the prebuilt files of every ocore commit that changed them) and
is explained by the ocore commit that caused it. Nothing here is a tolerance for arbitrary damage:
only these exact differences are explained.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bluegreen.schema.reference import SchemaDifference


class KnownDrift(BaseModel):
    """One explained drift. `fresh_sql_versions` is the inclusive range of schema versions whose fresh
    `.sql` schema (= the shared empty databases) ends up with it after the steps; None if only ocore's
    prebuilt initial databases (`binaries`, by ocore commit) carry it. `light` None = both kinds."""

    model_config = ConfigDict(frozen=True)

    id: str
    explanation: str
    light: bool | None
    fresh_sql_versions: tuple[int, int] | None
    binaries: tuple[str, ...] = ()
    differences: tuple[SchemaDifference, ...]

    def applies_to(self, light: bool) -> bool:
        """True when the drift can exist on a node of this kind."""
        return self.light is None or self.light == light


def _col(table: str, column: str, found: tuple[object, ...], expected: tuple[object, ...]) -> SchemaDifference:
    return SchemaDifference(
        kind="changed", object="column", table=table, name=column,
        detail=f"(type, notnull, default, pk) {found} != expected {expected}",
    )


def _diff(kind: str, obj: str, table: str, name: str, detail: str) -> SchemaDifference:
    return SchemaDifference(kind=kind, object=obj, table=table, name=name, detail=detail)  # type: ignore[arg-type]


def _varchar(table: str, column: str, length: int, notnull: bool, pk: int) -> SchemaDifference:
    return _col(table, column, (f"VARCHAR({length})", notnull, None, pk), (f"CHAR({length})", notnull, None, pk))


# ocore commits whose prebuilt initial.byteball*.sqlite (what a new node is copied from) were checked:
# before 992eb98 (2018-03-20) they were at versions 0..11, then 18 until cdc0f8d (2019-03-29, version 27,
# which migrates to exactly our v31 reference).
_PREBUILT_BEFORE_2018 = ("242dc58", "1627774", "80917cb", "bb2be60", "d4e8807", "530109b", "6d28604", "b6eafaa",
                         "8ebc098", "6222da7", "1506592")
_PREBUILT_BEFORE_2019 = (*_PREBUILT_BEFORE_2018, "992eb98", "0b326df", "9f2c27c")

KNOWN_DRIFTS: tuple[KnownDrift, ...] = (
    KnownDrift(
        id="varchar-to-char-2018",
        explanation=(
            "ocore 6435ab1 (2018-03-19, 'varchar to char for known lengths') changed column types of the fresh "
            "schema from VARCHAR(n) to CHAR(n) with no step; same TEXT affinity in SQLite, no behaviour change"
        ),
        light=None,
        fresh_sql_versions=(0, 17),
        binaries=_PREBUILT_BEFORE_2018,
        differences=(
            _varchar("address_definition_changes", "definition_chash", 32, True, 0),
            _varchar("attestations", "attestor_address", 32, True, 0),
            _varchar("attestations", "address", 32, True, 0),
            _varchar("earned_headers_commission_recipients", "address", 32, True, 2),
            _varchar("messages", "payload_hash", 44, True, 0),
            _varchar("messages", "payload_uri_hash", 44, False, 0),
            _varchar("my_witnesses", "address", 32, True, 1),
            _varchar("outputs", "address", 32, False, 0),
            _varchar("unit_witnesses", "address", 32, True, 2),
        ),
    ),
    KnownDrift(
        id="poll-choice-length-2019",
        explanation=(
            "ocore e23f2d9 (2019-01-10, 'validate choice length') widened poll_choices.choice and votes.choice to "
            "VARCHAR(64) in the fresh schema only; SQLite does not enforce VARCHAR lengths"
        ),
        light=None,
        fresh_sql_versions=(0, 21),
        binaries=_PREBUILT_BEFORE_2019,
        differences=(
            _col("poll_choices", "choice", ("VARCHAR(32)", True, None, 0), ("VARCHAR(64)", True, None, 0)),
            _col("votes", "choice", ("VARCHAR(32)", True, None, 0), ("VARCHAR(64)", True, None, 0)),
        ),
    ),
    KnownDrift(
        id="prosaic-contracts-ttl-int",
        explanation=(
            "step 23 creates prosaic_contracts.ttl as INT while the fresh schema (ocore fff06b5, 2019-02-21) "
            "declares it REAL; a node that ran step 23 keeps INT (integer affinity)"
        ),
        light=None,
        fresh_sql_versions=(0, 22),
        binaries=_PREBUILT_BEFORE_2019,
        differences=(_col("prosaic_contracts", "ttl", ("INT", True, "168", 0), ("REAL", True, "168", 0)),),
    ),
    KnownDrift(
        id="push-platform-default",
        explanation=(
            "step 21 adds push_registrations.platform with DEFAULT 'android' (ALTER TABLE needs a default for a "
            "NOT NULL column); the fresh schema (ocore 5127a70, 2018-07-19) declares it without a default"
        ),
        light=None,
        fresh_sql_versions=(0, 20),
        binaries=_PREBUILT_BEFORE_2019,
        differences=(_col("push_registrations", "platform", ("TEXT", True, "'android'", 0), ("TEXT", True, None, 0)),),
    ),
    KnownDrift(
        id="sent-mnemonics-v16",
        explanation=(
            "the fresh v16 schema had sent_mnemonics(unit PRIMARY KEY, \"to\"); ocore d170187/bb261f7 "
            "(2017-11-30, 2017-12-04) reshaped it (textAddress, creation_date, no primary key, index sentByUnit) "
            "in the fresh schema only, and step 16 uses CREATE TABLE IF NOT EXISTS, so a node created at 16 keeps it"
        ),
        light=None,
        fresh_sql_versions=(16, 16),
        differences=(
            _diff("missing", "column", "sent_mnemonics", "textAddress", "expected ('VARCHAR(120)', True, None, 0)"),
            _diff("missing", "column", "sent_mnemonics", "creation_date", "expected ('TIMESTAMP', True, 'CURRENT_TIMESTAMP', 0)"),
            _diff("extra", "column", "sent_mnemonics", "to", "found ('VARCHAR(120)', True, None, 0)"),
            _col("sent_mnemonics", "unit", ("CHAR(44)", True, None, 1), ("CHAR(44)", True, None, 0)),
            _diff("missing", "index", "sent_mnemonics", "sentByUnit", "expected ('sent_mnemonics', ('unit',), False, False)"),
            _diff("extra", "index", "sent_mnemonics", "<pk:sent_mnemonics(unit)>", "found ('sent_mnemonics', ('unit',), True, False)"),
        ),
    ),
    KnownDrift(
        id="commission-output-indexes-2017",
        explanation=(
            "ocore 597ef5b (2017-04-29) replaced the (address, is_spent) indexes of witnessing_outputs and "
            "headers_commission_outputs by unique (address, is_spent, main_chain_index) ones in the fresh schema only"
        ),
        light=None,
        fresh_sql_versions=(6, 6),
        binaries=_PREBUILT_BEFORE_2018,
        differences=(
            _diff("missing", "index", "witnessing_outputs", "byWitnessAddressSpentMci",
                  "expected ('witnessing_outputs', ('address', 'is_spent', 'main_chain_index'), True, False)"),
            _diff("missing", "index", "headers_commission_outputs", "hcobyAddressSpentMci",
                  "expected ('headers_commission_outputs', ('address', 'is_spent', 'main_chain_index'), True, False)"),
            _diff("extra", "index", "witnessing_outputs", "byWitnessAddressSpent",
                  "found ('witnessing_outputs', ('address', 'is_spent'), False, False)"),
            _diff("extra", "index", "headers_commission_outputs", "hcobyAddressSpent",
                  "found ('headers_commission_outputs', ('address', 'is_spent'), False, False)"),
        ),
    ),
    KnownDrift(
        id="prosaic-contracts-peer-device-fk",
        explanation=(
            "the fresh schema of ocore fff06b5 (2019-02-21) gave prosaic_contracts a key peer_device_address -> "
            "correspondent_devices; 8d30009 (2019-03-14) removed it from the fresh schema and step 23, with a "
            "rebuild that was never enabled (`if (false)`), so nodes created at 23..26 keep it"
        ),
        light=None,
        fresh_sql_versions=(23, 26),
        differences=(
            _diff("extra", "foreign_key", "prosaic_contracts",
                  "(peer_device_address) -> correspondent_devices(device_address) on update NO ACTION on delete NO ACTION",
                  "foreign key not expected"),
        ),
    ),
    KnownDrift(
        id="light-asset-attestors-fk",
        explanation=(
            "step 24 rebuilds asset_attestors with the key asset -> assets for light nodes too, while the fresh "
            "light schema never had it: a light node that ran step 24 keeps it"
        ),
        light=True,
        fresh_sql_versions=(0, 23),
        binaries=_PREBUILT_BEFORE_2019,
        differences=(
            _diff("extra", "foreign_key", "asset_attestors",
                  "(asset) -> assets(unit) on update NO ACTION on delete NO ACTION", "foreign key not expected"),
        ),
    ),
    KnownDrift(
        id="binary-paid-witness-events",
        explanation=(
            "ocore's prebuilt initial.byteball*.sqlite up to 992eb98 (2018-03-20) still had the table "
            "paid_witness_events (dropped from the .sql by efa603a, 2016-11-25) and lacked the index "
            "inputsIndexByAssetType (added to the .sql by a782ee9, 2016-09-20); no step changes either"
        ),
        light=None,
        fresh_sql_versions=None,
        binaries=_PREBUILT_BEFORE_2018,
        differences=(
            _diff("extra", "table", "paid_witness_events", "paid_witness_events", "table not expected"),
            _diff("extra", "index", "paid_witness_events", "<pk:paid_witness_events(unit,address)>",
                  "found ('paid_witness_events', ('unit', 'address'), True, False)"),
            _diff("extra", "index", "paid_witness_events", "pweIndexByAddress",
                  "found ('paid_witness_events', ('address',), False, False)"),
            _diff("missing", "index", "inputs", "inputsIndexByAssetType", "expected ('inputs', ('asset', 'type'), False, False)"),
        ),
    ),
    KnownDrift(
        id="binary-chat-messages-v10",
        explanation=(
            "ocore's prebuilt initial databases of 6222da7 (2017-05-15) and 1506592 (2017-06-01) claim user_version "
            "10/11 but still have the pre-step-10 chat_messages (no AUTOINCREMENT), so step 10 never rebuilds it"
        ),
        light=None,
        fresh_sql_versions=None,
        binaries=("6222da7", "1506592"),
        differences=(
            _col("chat_messages", "id", ("INTEGER", False, None, 1), ("INTEGER", True, None, 1)),
            _diff("changed", "table", "chat_messages", "chat_messages", "AUTOINCREMENT False != expected True"),
        ),
    ),
    KnownDrift(
        id="binary-light-unit-authors-index",
        explanation=(
            "light nodes created from ocore's prebuilt light database before 992eb98 (2018-03-20) have the index "
            "unitAuthorsIndexByAddressDefinitionChash (step 1 also creates it); the fresh light .sql does not"
        ),
        light=True,
        fresh_sql_versions=None,
        binaries=_PREBUILT_BEFORE_2018,
        differences=(
            _diff("extra", "index", "unit_authors", "unitAuthorsIndexByAddressDefinitionChash",
                  "found ('unit_authors', ('address', 'definition_chash'), False, False)"),
        ),
    ),
    KnownDrift(
        id="binary-unhandled-private-payments-2016",
        explanation=(
            "ocore's very first prebuilt databases (242dc58, 2016-08-14; replaced 9 days later by 1627774) had "
            "unhandled_private_payments keyed by (unit, message_index) without output_index"
        ),
        light=None,
        fresh_sql_versions=None,
        binaries=("242dc58",),
        differences=(
            _diff("missing", "column", "unhandled_private_payments", "output_index", "expected ('TINYINT', True, None, 3)"),
            _diff("missing", "index", "unhandled_private_payments",
                  "<pk:unhandled_private_payments(unit,message_index,output_index)>",
                  "expected ('unhandled_private_payments', ('unit', 'message_index', 'output_index'), True, False)"),
            _diff("extra", "index", "unhandled_private_payments", "<pk:unhandled_private_payments(unit,message_index)>",
                  "found ('unhandled_private_payments', ('unit', 'message_index'), True, False)"),
        ),
    ),
    KnownDrift(
        id="light-aa-addresses-nullable-2019",
        explanation=(
            "ocore 2225721 (2019-06-09) made aa_addresses.unit and .mci nullable in the fresh light schema only; "
            "step 30 creates them NOT NULL, so every light node upgraded by the steps keeps NOT NULL (v50 target)"
        ),
        light=True,
        fresh_sql_versions=None,  # only against the v50 target; drifts_for_fresh_schema is the v31 list
        differences=(
            _col("aa_addresses", "unit", ("CHAR(44)", True, None, 0), ("CHAR(44)", False, None, 0)),
            _col("aa_addresses", "mci", ("INT", True, None, 0), ("INT", False, None, 0)),
        ),
    ),
    KnownDrift(
        id="wallet-arbiter-contracts-status-804182e",
        explanation=(
            "ocore 804182e (2021-05-29, 'Contracts with arbiter') created wallet_arbiter_contracts.status as "
            "VARCHAR(40) in the fresh schema but as plain VARCHAR in step 43; step 49 recreates the table with "
            "VARCHAR(40), so every node upgraded by the steps to a target 43..48 keeps VARCHAR (same TEXT "
            "affinity, same CHECK)"
        ),
        light=None,
        fresh_sql_versions=None,  # only against targets 43..48
        differences=(
            _col("wallet_arbiter_contracts", "status", ("VARCHAR", True, "'pending'", 0),
                 ("VARCHAR(40)", True, "'pending'", 0)),
        ),
    ),
    KnownDrift(
        id="light-wallet-arbiter-contracts-7bce12d",
        explanation=(
            "steps 49 and 50 add the shared_address -> shared_addresses key and my_pairing_code to "
            "wallet_arbiter_contracts for light nodes too, while the fresh light schema at 7bce12d (ocore 0.4.6, "
            "VERSION 50) lacks both (v50 target)"
        ),
        light=True,
        fresh_sql_versions=None,  # only against the v50 target
        differences=(
            _diff("extra", "column", "wallet_arbiter_contracts", "my_pairing_code", "found ('VARCHAR(200)', False, None, 0)"),
            _diff("extra", "foreign_key", "wallet_arbiter_contracts",
                  "(shared_address) -> shared_addresses(shared_address) on update NO ACTION on delete NO ACTION",
                  "foreign key not expected"),
        ),
    ),
)


def drifts_for_fresh_schema(version: int, light: bool) -> list[KnownDrift]:
    """The drifts a database created from ocore's fresh `.sql` schema at `version` shows once migrated to 31."""
    return [
        d for d in KNOWN_DRIFTS
        if d.applies_to(light) and d.fresh_sql_versions is not None
        and d.fresh_sql_versions[0] <= version <= d.fresh_sql_versions[1]
    ]


class ExplainedDifference(BaseModel):
    """A schema difference and the known drift that explains it."""

    difference: SchemaDifference
    drift: str


class DriftExplanation(BaseModel):
    """`compare()` output split into differences a known drift explains and those none does."""

    explained: list[ExplainedDifference]
    unexplained: list[SchemaDifference]


def explain(differences: list[SchemaDifference], *, light: bool) -> DriftExplanation:
    """Split differences against the v31 reference into explained (by a known drift of this node kind) and
    unexplained ones. Any creation history is assumed possible, since a database does not record it."""
    index: dict[SchemaDifference, str] = {}
    for drift in KNOWN_DRIFTS:
        if drift.applies_to(light):
            for diff in drift.differences:
                index.setdefault(diff, drift.id)
    explained = [ExplainedDifference(difference=d, drift=index[d]) for d in differences if d in index]
    return DriftExplanation(explained=explained, unexplained=[d for d in differences if d not in index])

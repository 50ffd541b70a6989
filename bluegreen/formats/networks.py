"""The three Obyte networks and how to tell from a database which one it belongs to.

A unit's `version` carries the network: no suffix on mainnet (`1.0`, `2.0`), `t` on testnet
(`2.0t`), `dev` on devnet (`2.0dev`). The first version of each network has no timestamp in its
hash (`versionWithoutTimestamp`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bluegreen.errors import SourceDataError

__all__ = [
    "DEVNET",
    "MAINNET",
    "NETWORKS",
    "TESTNET",
    "Network",
    "detect_network",
    "network_for_version",
    "with_genesis",
]


class Network(BaseModel):
    """Constants of one network that change the bytes we hash and write."""

    model_config = ConfigDict(frozen=True)

    name: Literal["mainnet", "testnet", "devnet"]
    version_without_timestamp: str
    genesis_unit: str | None


MAINNET = Network(
    name="mainnet",
    version_without_timestamp="1.0",
    genesis_unit="oj8yEksX9Ubq7lLc+p6F2uyHUuynugeVq4+ikT67X6E=",
)
TESTNET = Network(
    name="testnet",
    version_without_timestamp="1.0t",
    genesis_unit="TvqutGPz3T4Cs6oiChxFlclY92M2MvCvfXR5/FETato=",
)
# devnet's genesis changes with every devnet build: it must come from the data or an option
DEVNET = Network(name="devnet", version_without_timestamp="1.0dev", genesis_unit=None)

NETWORKS: dict[str, Network] = {n.name: n for n in (MAINNET, TESTNET, DEVNET)}

_VERSION = re.compile(r"[0-9]+\.[0-9]+(t|dev)?")


def network_for_version(version: str) -> Network:
    """The network a unit `version` string belongs to (`2.0` mainnet, `2.0t` testnet, `2.0dev` devnet)."""
    m = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if m is None:
        raise SourceDataError(
            f"unit version {version!r} is not an ocore unit version",
            hint="check that this is an Obyte node database (units.version looks like '2.0', '2.0t', '2.0dev')",
        )
    suffix = m.group(1)
    return TESTNET if suffix == "t" else DEVNET if suffix == "dev" else MAINNET


def detect_network(versions: Iterable[str], genesis_unit: str | None = None) -> Network:
    """The single network all `versions` (e.g. `SELECT DISTINCT version FROM units`) belong to.

    `genesis_unit`, when given, overrides the network's genesis (needed on devnet).
    Raises `SourceDataError` when there are no versions or they belong to different networks.
    """
    found: dict[str, list[str]] = {}
    for v in versions:
        found.setdefault(network_for_version(v).name, []).append(v)
    if not found:
        raise SourceDataError(
            "cannot tell the network: the database has no units",
            hint="an empty node database has nothing to migrate; let the node create it",
        )
    if len(found) > 1:
        detail = "; ".join(f"{name}: {', '.join(sorted(vs))}" for name, vs in sorted(found.items()))
        raise SourceDataError(
            f"units of more than one network in one database ({detail})",
            hint="this database mixes networks and cannot be a node's own; restore it from a backup",
        )
    network = NETWORKS[next(iter(found))]
    return with_genesis(network, genesis_unit) if genesis_unit is not None else network


def with_genesis(network: Network, unit: str) -> Network:
    """A copy of `network` whose genesis unit is `unit`."""
    return network.model_copy(update={"genesis_unit": unit})

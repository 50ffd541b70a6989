"""Networks: constants and detection from units.version."""

from __future__ import annotations

import pydantic
import pytest

from bluegreen.errors import SourceDataError
from bluegreen.formats.networks import (
    DEVNET,
    MAINNET,
    TESTNET,
    Network,
    detect_network,
    network_for_version,
    with_genesis,
)


def test_constants() -> None:
    assert MAINNET.version_without_timestamp == "1.0"
    assert TESTNET.version_without_timestamp == "1.0t"
    assert DEVNET.version_without_timestamp == "1.0dev"
    assert MAINNET.genesis_unit == "oj8yEksX9Ubq7lLc+p6F2uyHUuynugeVq4+ikT67X6E="
    assert TESTNET.genesis_unit == "TvqutGPz3T4Cs6oiChxFlclY92M2MvCvfXR5/FETato="
    assert DEVNET.genesis_unit is None


@pytest.mark.parametrize(
    ("version", "network"),
    [("1.0", MAINNET), ("4.0", MAINNET), ("1.0t", TESTNET), ("2.0t", TESTNET), ("1.0dev", DEVNET), ("4.0dev", DEVNET)],
)
def test_network_for_version(version: str, network: Network) -> None:
    assert network_for_version(version) == network


@pytest.mark.parametrize("bad", ["", "1", "2.0x", "2.0 t", "v2.0", "2.0tdev"])
def test_unknown_versions_are_refused(bad: str) -> None:
    with pytest.raises(SourceDataError) as e:
        network_for_version(bad)
    assert e.value.hint


def test_detect_network() -> None:
    assert detect_network(["1.0", "2.0", "3.0"]) == MAINNET
    assert detect_network(iter(["1.0t", "2.0t"])) == TESTNET
    dev = detect_network(["2.0dev"], genesis_unit="pLzHaCisvxkfgwyBDzgvZzhPp37ZKnuMOxiI3QwXxqM=")
    assert dev.name == "devnet"
    assert dev.genesis_unit == "pLzHaCisvxkfgwyBDzgvZzhPp37ZKnuMOxiI3QwXxqM="
    assert DEVNET.genesis_unit is None  # the constant is untouched


def test_mixed_or_missing_versions_are_errors() -> None:
    with pytest.raises(SourceDataError, match="more than one network"):
        detect_network(["2.0", "2.0t"])
    with pytest.raises(SourceDataError, match="no units"):
        detect_network([])


def test_networks_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        MAINNET.genesis_unit = "x"  # type: ignore[misc]
    assert with_genesis(MAINNET, "x").genesis_unit == "x"
    assert MAINNET.genesis_unit != "x"

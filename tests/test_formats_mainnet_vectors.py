"""Independent vectors from the public Obyte mainnet ledger (not produced by our code).

Unit oXGOcA9T... (mci 4123083, March 2019) is a version-1.0 unit: its id is the classic
(non-JSON) source-string hash of the stripped unit and its payload hash the classic hash of the
payload. It is the real-data check of the version-1 rules the generator and the engine rely on."""

from __future__ import annotations

from bluegreen.formats.hashing import get_ball_hash, get_base64_hash, get_unit_hash
from bluegreen.formats.jsvalues import js_parse, js_stringify
from bluegreen.formats.networks import MAINNET

MAINNET_V1_JOINT = (
    '{"unit":{"unit":"oXGOcA9TQx8Tl5Syjp1d5+mB4xicsRk3kbcE82YQAS0=","version":"1.0","alt":"1",'
    '"witness_list_unit":"J8QFgTLI+3EkuAxX+eL6a0q114PJ4h4EOAiHAzxUp24=",'
    '"last_ball_unit":"ichtuZ7mv93Jw26hksj8O4LnoNd8S+XCehVcFc8mbNg=",'
    '"last_ball":"KQyKskSkOpGG839zVBKLbSe2Q6q+VJ2oh1m+46A0p1I=","headers_commission":344,'
    '"payload_commission":197,"main_chain_index":4123083,"timestamp":1553853204,'
    '"parent_units":["4ne7myhibBARgaA/PPwynnK408bmY7ypL/+X+tp0IqU="],'
    '"authors":[{"address":"TU3Q44S6H2WXTGQO6BZAGWFKKJCF7Q3W","authentifiers":{"r":'
    '"deqAMOAKyn4mDOZlyBd2eHMPrIXiT8BsVh7/Ejuii+kUm90CCrcWU0adsTWGHhj/7j7/LGZn7SLzzISQ93QRlA=="}}],'
    '"messages":[{"app":"payment","payload_hash":"24J5BXJrAfoOub2g/auiK04Z0x3LfQJq71Zsv8M8GVQ=",'
    '"payload_location":"inline","payload":{"inputs":[{"unit":"ichtuZ7mv93Jw26hksj8O4LnoNd8S+XCehVcFc8mbNg=",'
    '"message_index":0,"output_index":0}],"outputs":[{"address":"2VOBZNQPXAO4POCXEUZXUJSRD53OMOTH",'
    '"amount":13729863},{"address":"TU3Q44S6H2WXTGQO6BZAGWFKKJCF7Q3W","amount":1543931896}]}}]},'
    '"ball":"nAgiWwtErFZ7Y2GNKbcrAJmN4qf4AeV++wlwNi1MTww="}'
)


def test_a_real_version_1_unit_hashes_to_its_id_without_its_timestamp() -> None:
    unit = js_parse(MAINNET_V1_JOINT)["unit"]
    assert get_unit_hash(unit, MAINNET) == "oXGOcA9TQx8Tl5Syjp1d5+mB4xicsRk3kbcE82YQAS0="
    # The timestamp is not part of a version-1 unit's hash; main_chain_index never is.
    changed = {**unit, "timestamp": 1, "main_chain_index": 7}
    assert get_unit_hash(changed, MAINNET) == unit["unit"]
    assert get_unit_hash({**unit, "headers_commission": 345}, MAINNET) == unit["unit"]
    assert get_unit_hash({**unit, "parent_units": [unit["last_ball_unit"]]}, MAINNET) != unit["unit"]


def test_a_real_version_1_payload_hashes_with_the_classic_source_string() -> None:
    message = js_parse(MAINNET_V1_JOINT)["unit"]["messages"][0]
    assert get_base64_hash(message["payload"], False) == message["payload_hash"]
    assert get_base64_hash(message["payload"], True) != message["payload_hash"]


def test_the_joint_text_round_trips_byte_for_byte() -> None:
    assert js_stringify(js_parse(MAINNET_V1_JOINT)) == MAINNET_V1_JOINT


def test_the_mainnet_genesis_ball() -> None:
    assert get_ball_hash("oj8yEksX9Ubq7lLc+p6F2uyHUuynugeVq4+ikT67X6E=", [], [], False) == \
        "CxK1luSnAk5+MaGyaE9wl26JdwAkSPFDqWJdYs9gRng="

"""Checks with the node's own npm libraries (level-rocksdb 5, sqlite3 5) that it reads what we wrote."""

from bluegreen.nodecompat.ocore import OcoreInfo, ocore_dir_for, parse_schema_version, read_ocore
from bluegreen.nodecompat.probe import (
    KvEntry,
    NodeApp,
    NodeProbeResult,
    find_node_app,
    find_node_modules,
    kv_digest,
    run_node_probe,
)

__all__ = ["KvEntry", "NodeApp", "NodeProbeResult", "OcoreInfo", "find_node_app", "find_node_modules", "kv_digest",
           "ocore_dir_for", "parse_schema_version", "read_ocore", "run_node_probe"]

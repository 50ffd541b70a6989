"""Checks with the node's own npm libraries (level-rocksdb 5, sqlite3 5) that it reads what we wrote."""

from bluegreen.nodecompat.probe import KvEntry, NodeProbeResult, find_node_modules, kv_digest, run_node_probe

__all__ = ["KvEntry", "NodeProbeResult", "find_node_modules", "kv_digest", "run_node_probe"]

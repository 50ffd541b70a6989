"""Realistic old ocore node data dirs for tests, demos and benchmarks (any schema version 6..29, light or
full, mainnet/testnet/devnet, and the stuck-at-30 seed failure)."""

from bluegreen.generator.nodedir import GeneratedNode, canonical_dump_sha256, generate_node_dir

__all__ = ["GeneratedNode", "canonical_dump_sha256", "generate_node_dir"]

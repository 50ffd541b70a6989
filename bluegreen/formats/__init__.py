"""ocore's data formats in pure Python: JS value semantics, canonical strings, hashes, addresses,
data-feed keys and network constants. Nothing here touches a database."""

"""The v31 migration engine: SQL steps + KV fill on a copy, all or nothing."""

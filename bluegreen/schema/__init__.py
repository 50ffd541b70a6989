"""ocore's SQL schema as data: reference snapshots of empty databases (reference), known drifts of real
nodes from those snapshots (drift), the schema steps below 31 (steps) and their runner (runner)."""

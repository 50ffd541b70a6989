"""`bluegreen-generate` / `scripts/generate`: make a realistic old node data dir."""

from __future__ import annotations

from pathlib import Path

import typer

from bluegreen.errors import BluegreenError
from bluegreen.generator.extend import extend_node_dir
from bluegreen.generator.nodedir import generate_node_dir

app = typer.Typer(add_completion=False, help="Generate an old ocore node data dir (schema 6..29, or stuck at 30), "
                                        "or continue one with --extend.")


@app.command()
def generate(
    out: Path | None = typer.Option(None, "--out", help="data dir to create (must not hold a database yet)"),
    extend: Path | None = typer.Option(None, "--extend", help="existing pre-31 SQLite-only full node data dir to add --units "
                                                                "units to (one SQLite transaction)"),
    units: int = typer.Option(2000, "--units", min=1, help="number of units, genesis included (with --extend: "
                                                           "units to add)"),
    version: int = typer.Option(28, "--version", help="schema version (user_version) 6..29"),
    light: bool = typer.Option(False, "--light", help="a light node (byteball-light.sqlite)"),
    network: str = typer.Option("mainnet", "--network", help="mainnet, testnet or devnet"),
    seed: int = typer.Option(1, "--seed", help="same seed, same data"),
    stuck_at_30: bool = typer.Option(False, "--stuck-at-30", help="schema at 30 and a half-filled rocksdb/"),
    json_out: bool = typer.Option(False, "--json", help="print the full summary as JSON"),
) -> None:
    """Generate the data dir (or extend one) and print what was made, with the units/s figure."""
    try:
        if (out is None) == (extend is None):
            from bluegreen.errors import BadInputError
            raise BadInputError("give exactly one of --out (a new node) or --extend (an existing one)",
                                "e.g. --out /tmp/node, or --extend /tmp/node --units 10")
        if extend is not None:
            r = extend_node_dir(extend, units=units, seed=seed)
            if json_out:
                typer.echo(r.model_dump_json(indent=2))
            else:
                typer.echo(f"extended {r.data_dir}: +{r.added_units} units ({r.units_before} -> {r.units_after}, "
                           f"max rowid {r.max_rowid}) newly_stable={r.newly_stable} voided={r.voided} "
                           f"peers={r.peers_added} last_stable_mci={r.last_stable_mci} "
                           f"min_retrievable_mci={r.min_retrievable_mci} time={r.seconds:.3f}s")
            return
        assert out is not None
        g = generate_node_dir(out, units=units, version=version, light=light, network=network, seed=seed,
                              stuck_at_30=stuck_at_30)
    except BluegreenError as e:
        typer.echo(f"error: {e.message}", err=True)
        if e.hint:
            typer.echo(f"  next step: {e.hint}", err=True)
        raise typer.Exit(e.exit_code) from None
    if json_out:
        typer.echo(g.model_dump_json(indent=2))
        return
    typer.echo(f"generated {g.out}: {g.db_path.name} user_version={g.user_version} network={g.network} "
               f"light={g.light} seed={g.seed}")
    typer.echo(f"units={g.units} unstable={g.unstable} null_mci={g.null_mci} final_bad={g.final_bad} "
               f"voided={g.voided} last_stable_mci={g.last_stable_mci} min_retrievable_mci={g.min_retrievable_mci}")
    typer.echo(f"genesis={g.genesis_unit} kv_joints={g.kv_joints}")
    typer.echo("messages: " + ", ".join(f"{k}={v}" for k, v in g.messages.items()))
    typer.echo(f"time={g.seconds:.2f}s units/s={g.units_per_second:.0f}")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()

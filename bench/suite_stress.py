"""``offload bench stress``: random migrations under accessors and injected faults,
then an integrity check."""

from __future__ import annotations

import sys

import click

from offload.errors import OffloadError
from offload.params import FiniteFloatRange


@click.command("stress")
@click.option(
    "--seconds",
    default=10.0,
    show_default=True,
    type=FiniteFloatRange(0.1, 86400),
    help="How long to run.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**32 - 1),
    help="Random seed (0 .. 2**32-1).",
)
@click.option("--policy", default="adaptive", show_default=True, help="Scheduler policy.")
@click.option("--verify", is_flag=True, help="Run the machine with verify=True.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def stress_cmd(seconds: float, seed: int, policy: str, verify: bool, as_json: bool) -> None:
    """Random migrations with accessor threads and fault injection, then an integrity check.

    Writers, a reader, a pinner and two migrating threads (move_pages, MOVE_ALL on a
    shared mapping, migrate_pages) run for --seconds over three nodes, while DMA
    descriptors fail, hang past their timeout and complete out of order, and allocations
    on random nodes fail. At the end every byte is compared with what was written last,
    and page accounting is checked. Even seeds migrate in batches of 256 pages, odd ones
    of 2048 (several large folios in one batch). Exit status 3 on any loss, 1 on an
    unexpected error.
    """
    import json

    from offload.scheduler import parse_policy

    from .stress import run_stress

    try:
        parse_policy(policy)
    except OffloadError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from None
    from offload.console import progress

    with progress("stress", int(seconds * 10), unit="tenths of a second") as bar:
        done = [0]

        def tick(t: float) -> None:
            step = int(t * 10) - done[0]
            if step > 0:
                bar.advance("running", step)
                done[0] += step

        rep = run_stress(seconds, seed, policy, verify, tick)
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        click.echo(f"stress: {seconds:g} s, seed {seed}, policy {policy}")
        click.echo(
            "operations:  " + ", ".join(f"{k} {v}" for k, v in sorted(rep["operations"].items()))
        )
        click.echo(f"pages moved: {rep['pages_moved']} (not moved: {rep['pages_not_moved']})")
        click.echo(
            "faults:      " + ", ".join(f"{k} {v}" for k, v in rep["faults_injected"].items())
        )
        click.echo(f"integrity:   {'ok' if rep['integrity_ok'] else 'FAILED'}")
        for e in rep["errors"]:
            click.echo(f"error: {e}")
    if not rep["integrity_ok"]:
        sys.exit(3)  # bytes or frames lost: a verification failure
    if not rep["ok"]:
        sys.exit(1)

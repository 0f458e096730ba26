"""The ``offload`` command line (click). ``offload bench`` is loaded on first use."""

from __future__ import annotations

import sys
from typing import Any

import click

from .errors import OffloadError
from .sizes import format_size

#: Exit status of an interrupted command (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130

#: Entry-point group of extra subcommands (``offload bench`` is one), loaded on use.
COMMANDS_GROUP = "offload.commands"


class _LazyGroup(click.Group):
    """A group whose extra subcommands come from the ``offload.commands`` entry points
    and are imported only when they are run or listed."""

    def _extra(self) -> dict:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._extra()))

    def main(self, *args: Any, standalone_mode: bool = True, **kw: Any) -> Any:
        """Run the command; in standalone mode, end with the documented exit status.

        0 done; 1 an error (its message, no traceback); 2 bad usage; 3 a benchmark's
        verification failed; 130 interrupted (Ctrl-C), after what was finished is shown.
        """
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kw)  # type: ignore[call-overload]
        try:
            rv = super().main(*args, standalone_mode=False, **kw)  # type: ignore[call-overload]
        except click.ClickException as exc:  # usage errors (2) and click's own
            exc.show()
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except OffloadError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)

    def get_command(self, ctx: click.Context, name: str):
        if name not in self.commands:
            ep = self._extra().get(name)
            if ep is not None:
                return ep.load()
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="folio-offload")
def main() -> None:
    """folio-offload: Linux page migration with batched, offloaded folio copy.

    A user-space model of the kernel series "Accelerate page migration with batch
    copying and hardware offload": memory nodes, processes, move_pages/migrate_pages,
    and pluggable copy backends (the kernel's migrators), with real data movement.

    \b
    Exit status: 0 done; 1 an error; 2 bad usage; 3 a benchmark's verification
    failed; 130 interrupted (what was finished is printed first); kernel-check adds 4
    (no real kernel reachable here).
    """


@main.command()
def backends() -> None:
    """List the copy backends, whether each can run here, and why not."""
    from . import registry

    for name, info in registry.available().items():
        state = "available" if info.available else "unavailable"
        click.echo(f"{name:14} {state:12} {info.reason}")
        if info.available:
            defaults = registry.defaults(name)
            for key, opt in registry.options(name).items():
                rng = "" if opt.min is None else f" [{opt.min:g}..{opt.max:g}]"
                d = defaults.get(key)
                dflt = "" if d is None else f" (default {d})"
                click.echo(f"{'':14}   option {key}={opt.type.__name__}{rng}: {opt.help}{dflt}")


@main.command()
@click.option(
    "--nodes",
    default="256M,256M",
    show_default=True,
    help="Node layout of the model machine to describe.",
)
def info(nodes: str) -> None:
    """Describe this host (CPUs, NUMA nodes, GPU) and a model machine's nodes."""
    from .hostinfo import host_info, numa_nodes
    from .machine import parse_nodes

    h = host_info()
    click.echo(f"cpu:        {h['cpu_model']} ({h['cpus']} usable)")
    click.echo(f"numa nodes: {numa_nodes() or 'unknown'}")
    click.echo(f"gpu:        {h['gpu']}")
    click.echo(f"numpy:      {h['numpy']}   python: {h['python']}")
    try:
        layout = parse_nodes(nodes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--nodes") from None
    click.echo(f"model machine --nodes {nodes}:")
    for i, (kind, size) in enumerate(layout):
        click.echo(f"  node {i}: {kind:6} {format_size(size):>6} ({size // 4096} pages)")


#: ``offload kernel-check`` exit code when no real kernel can be reached here
EXIT_NOT_RUN = 4


@main.command("kernel-check")
@click.option(
    "--kernel",
    "kernel",
    default=None,
    metavar="IMAGE",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    help="Kernel image to boot under qemu [default: the newest /boot/vmlinuz-*].",
)
@click.option(
    "--nodes",
    default=2,
    show_default=True,
    type=click.IntRange(2, 8),
    help="NUMA nodes of the guest (and of the model machine).",
)
@click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=click.FloatRange(10, 3600),
    help="Seconds the guest may run before it is killed (its console tail is shown).",
)
@click.option(
    "--native",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "always", "never"]),
    help="Run on this host's own kernel when it has enough NUMA nodes (needs root).",
)
@click.option(
    "--accel",
    default="tcg",
    show_default=True,
    type=click.Choice(["tcg", "kvm", "auto"]),
    help="qemu accelerator: tcg runs anywhere; kvm is faster where it works.",
)
@click.option("--only", multiple=True, metavar="NAME", help="Run only this scenario (repeatable).")
@click.option("--list", "list_", is_flag=True, help="List the scenarios and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show every scenario, matches included.")
def kernel_check(
    kernel: str | None,
    nodes: int,
    timeout: float,
    native: str,
    accel: str,
    only: tuple[str, ...],
    list_: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Compare the model's move_pages/migrate_pages with a real Linux kernel.

    Every scenario (processes, mappings, writes, pins, shares, forks, move_pages and
    migrate_pages calls) runs through the model and through a real kernel: natively
    on a host with two NUMA nodes, else a stock kernel booted under qemu with two NUMA
    nodes (~1 minute under TCG). Each scenario is a match, a departure the README
    documents (named), or a mismatch.

    Exit status: 0 no mismatch; 1 a mismatch or a scenario that could not run;
    2 bad usage; 4 no real kernel could be reached here (the message says what to
    install).
    """
    import json
    import sys

    from .kcheck import DEPARTURES, SCENARIOS, Unavailable, run_check

    by_name = {sc.name: sc for sc in SCENARIOS}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise click.BadParameter(f"no scenario {unknown[0]!r} (see --list)", param_hint="--only")
    chosen = [by_name[n] for n in only] if only else list(SCENARIOS)
    if list_:
        for sc in chosen:
            click.echo(f"{sc.name:36} {sc.source}")
        return
    click.echo(f"kernel-check: {len(chosen)} scenarios, {nodes} NUMA nodes ...", err=True)
    try:
        rep = run_check(
            chosen, kernel=kernel, nodes=nodes, timeout=timeout, native=native, accel=accel
        )
    except Unavailable as exc:
        click.echo(f"kernel-check: not run: {exc}", err=True)
        sys.exit(EXIT_NOT_RUN)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "how": rep.how,
                    "seconds": round(rep.seconds, 1),
                    "counts": rep.counts,
                    "verdicts": [
                        dict(
                            name=v.name,
                            source=v.source,
                            verdict=v.verdict,
                            departures=[dict(key=d, readme=DEPARTURES[d]) for d in v.departures],
                            differences=v.differences,
                        )
                        for v in rep.verdicts
                    ],
                },
                indent=1,
            )
        )
    else:
        click.echo(f"real kernel: {rep.how}, {rep.seconds:.0f} s")
        for v in rep.verdicts:
            if v.verdict == "match" and not verbose:
                continue
            click.echo(f"{v.verdict:10} {v.name:36} {v.source}")
            for d in v.departures:
                click.echo(f'{"":12}documented: README "{DEPARTURES[d]}"')
            for d in v.differences:
                click.echo(f"{'':12}{d}")
        c = rep.counts
        click.echo(
            f"{len(rep.verdicts)} scenarios: {c['match']} match, {c['departure']} "
            f"documented departures, {c['mismatch']} mismatches, {c['error']} errors"
        )
        kernel_side = any(d.startswith("kernel:") for v in rep.verdicts for d in v.differences)
        if kernel_side or rep.timed_out:
            if rep.timed_out:
                click.echo(f"the guest was killed after {timeout:g} s", err=True)
            click.echo("console tail:\n" + rep.console_tail[-1500:], err=True)
    if not rep.ok:
        sys.exit(1)

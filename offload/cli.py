"""The ``offload`` command line (click). ``offload bench`` is loaded on first use."""

from __future__ import annotations

import sys
from typing import Any

import click

from .errors import OffloadError
from .params import FiniteFloatRange
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

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands:
            ep = self._extra().get(name)
            if ep is not None:
                return ep.load()
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="folio-offload")
@click.option(
    "--width",
    type=click.IntRange(40, 1000),
    default=None,
    help="Columns to draw tables in (cells wrap to fit, nothing is cut) [default: COLUMNS, "
    "else the terminal's, else 100].",
)
def main(width: int | None) -> None:
    """folio-offload: Linux page migration with batched, offloaded folio copy.

    A user-space model of the kernel series "Accelerate page migration with batch
    copying and hardware offload": memory nodes, processes, move_pages/migrate_pages,
    and pluggable copy backends (the kernel's migrators), with real data movement.

    \b
    Exit status: 0 done; 1 an error; 2 bad usage; 3 a benchmark's verification
    failed; 130 interrupted (what was finished is printed first); kernel-check adds 4
    (no real kernel reachable here), gpu-check 4 (no usable GPU).
    """
    if width is not None:  # rich only where a table is drawn (gpu-check runs without it)
        from . import console

        console.WIDTH = width


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the backends as JSON.")
def backends(as_json: bool) -> None:
    """List the copy backends, whether each can run here, and why not, with their options
    (type, range, default)."""
    import json

    from . import console, registry

    out = []
    for name, info in registry.available().items():
        entry: dict[str, Any] = {
            "name": name,
            "available": info.available,
            "reason": info.reason,
            "options": {},
        }
        if info.available:
            defaults = registry.defaults(name)
            for key, opt in registry.options(name).items():
                entry["options"][key] = {
                    "type": opt.type.__name__,
                    "min": opt.min,
                    "max": opt.max,
                    "choices": list(opt.choices) if opt.choices else None,
                    "default": defaults.get(key),
                    "help": opt.help,
                }
        out.append(entry)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    rows = []
    for e in out:
        rows.append([e["name"], "yes" if e["available"] else "no", e["reason"] or ""])
        for key, o in e["options"].items():
            rng = "" if o["min"] is None else f" {o['min']:g}..{o['max']:g}"
            if o["choices"]:
                rng = " " + "|".join(o["choices"])
            dflt = "" if o["default"] is None else f", default {o['default']}"
            rows.append(["", "", f"  {key}={o['type']}{rng}{dflt}: {o['help']}"])
    console.print_table(["backend", "available", "why not / options"], rows, right=[])


@main.command()
@click.option(
    "--nodes",
    default="256M,256M",
    show_default=True,
    help="Node layout of the model machine to describe.",
)
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info(nodes: str, as_json: bool) -> None:
    """This host as numactl --hardware shows it (NUMA nodes, their CPUs, size, free
    memory, distances), its CPU and GPUs, and a model machine's nodes."""
    import json

    from . import console
    from .hostinfo import gpus, host_info, numa_hardware
    from .machine import parse_nodes

    try:
        layout = parse_nodes(nodes)
    except OffloadError as exc:
        raise click.BadParameter(str(exc), param_hint="--nodes") from None
    h = host_info()
    hw = numa_hardware()
    g = gpus()
    model: list[dict[str, Any]] = [
        {"node": i, "kind": kind, "size_bytes": size, "pages": size // 4096}
        for i, (kind, size) in enumerate(layout)
    ]
    if as_json:
        doc = {"host": h, "numa": hw, "gpus": g, "model_machine": {"nodes": nodes, "layout": model}}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"cpu: {h['cpu_model']} ({h['cpus']} usable)")
    click.echo(f"available: {len(hw)} nodes ({' '.join(str(n['node']) for n in hw) or '?'})")
    console.print_table(
        ["node", "cpus", "size", "free"],
        [
            [
                n["node"],
                ",".join(map(str, n["cpus"])) or "-",
                console.gib(n["size_bytes"]),
                console.gib(n["free_bytes"]),
            ]
            for n in hw
        ],
    )
    if hw:
        console.print_table(
            ["distances", *[str(n["node"]) for n in hw]],
            [[n["node"], *n["distances"]] for n in hw],
        )
    click.echo(f"gpu: {g['cupy']}")
    click.echo(f"nvidia driver: {g['driver'] or 'none found'}")
    click.echo(f"numpy {h['numpy']}, python {h['python']}, {h['platform']}")
    console.print_table(
        ["model node", "kind", "size", "pages"],
        [[m["node"], m["kind"], format_size(m["size_bytes"]), m["pages"]] for m in model],
        title=f"model machine --nodes {nodes}",
    )


#: ``offload kernel-check`` exit code when no real kernel can be reached here
EXIT_NOT_RUN = 4


@main.command("kernel-check")
@click.option(
    "--kernel",
    "kernel",
    multiple=True,
    metavar="IMAGE",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    help="Kernel image to boot under qemu (repeatable: one verdict column per kernel; the "
    "model follows each image's version) [default: the newest /boot/vmlinuz-*].",
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
    type=FiniteFloatRange(10, 3600),
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
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Run only this scenario (repeatable); memory-pressure scenarios (thp_split_on_enomem) run only when named.",
)
@click.option("--list", "list_", is_flag=True, help="List the scenarios and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show every scenario, matches included.")
def kernel_check(
    kernel: tuple[str, ...],
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

    from .kcheck import (
        DEPARTURES,
        PRESSURE_SCENARIOS,
        SCENARIOS,
        GuestFailed,
        Unavailable,
        run_check,
    )

    by_name = {sc.name: sc for sc in SCENARIOS + PRESSURE_SCENARIOS}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise click.BadParameter(f"no scenario {unknown[0]!r} (see --list)", param_hint="--only")
    chosen = [by_name[n] for n in only] if only else list(SCENARIOS)
    if list_:
        from . import console

        console.print_table(
            ["scenario", "source"], [[sc.name, sc.source] for sc in chosen], right=[]
        )
        return
    images: list[str | None] = list(kernel) if kernel else [None]
    click.echo(
        f"kernel-check: {len(chosen)} scenarios, {nodes} NUMA nodes, {len(images)} kernel(s) ...",
        err=True,
    )
    reps = []
    for image in images:
        try:
            reps.append(
                run_check(
                    chosen, kernel=image, nodes=nodes, timeout=timeout, native=native, accel=accel
                )
            )
        except Unavailable as exc:
            click.echo(f"kernel-check: not run ({image or 'default kernel'}): {exc}", err=True)
            sys.exit(EXIT_NOT_RUN)
        except GuestFailed as exc:
            click.echo(f"Error: kernel-check: {exc}", err=True)
            sys.exit(1)

    def as_dict(rep: Any) -> dict:
        return {
            "how": rep.how,
            "release": rep.release,
            "model_kernel": rep.kernel,
            "seconds": round(rep.seconds, 1),
            "counts": rep.counts,
            "verdicts": [
                dict(
                    name=v.name,
                    source=v.source,
                    verdict=v.verdict,
                    departures=[dict(key=d, readme=DEPARTURES[d]) for d in v.departures],
                    differences=v.differences,
                    evidence=v.evidence,
                )
                for v in rep.verdicts
            ],
        }

    if as_json:
        doc = as_dict(reps[0]) if len(reps) == 1 else {"kernels": [as_dict(r) for r in reps]}
        click.echo(json.dumps(doc, indent=1))
    elif len(reps) == 1:
        _print_report(reps[0], verbose, timeout)
    else:
        _print_reports(reps, verbose)
    if not all(r.ok for r in reps):
        sys.exit(1)


def _print_report(rep: Any, verbose: bool, timeout: float) -> None:
    """The verdict table of one kernel: what differs, and why where it is documented."""
    from . import console
    from .kcheck import DEPARTURES

    click.echo(
        f"real kernel: {rep.release or 'unknown release'} ({rep.how}, {rep.seconds:.0f} s); "
        f"model follows {rep.kernel or 'its default'}"
    )
    rows = []
    for v in rep.verdicts:
        if v.verdict == "match" and not verbose:
            continue
        rows.append([v.verdict, v.name, v.source])
        rows += [["", "", f'documented: README "{DEPARTURES[d]}"'] for d in v.departures]
        if verbose:
            rows += [["", "", f"evidence: {e}"] for e in v.evidence]
        rows += [["", "", d] for d in v.differences]
    if rows:
        console.print_table(["verdict", "scenario", "source / why"], rows, right=[])
    c = rep.counts
    click.echo(
        f"{len(rep.verdicts)} scenarios: {c['match']} match, {c['departure']} "
        f"documented departures, {c['flaky']} flaky, {c['mismatch']} mismatches, "
        f"{c['error']} errors"
    )
    kernel_side = any(d.startswith("kernel:") for v in rep.verdicts for d in v.differences)
    if kernel_side or rep.timed_out:
        if rep.timed_out:
            click.echo(f"the guest was killed after {timeout:g} s", err=True)
        click.echo("console tail:\n" + rep.console_tail[-1500:], err=True)


def _print_reports(reps: list, verbose: bool) -> None:
    """One verdict column per kernel; the differences of what is not a match below."""
    from . import console

    names = [r.release or f"kernel {i + 1}" for i, r in enumerate(reps)]
    rows = []
    notes = []
    for i, v0 in enumerate(reps[0].verdicts):
        cells = [r.verdicts[i] for r in reps]
        if not verbose and all(v.verdict == "match" for v in cells):
            continue
        rows.append(
            [v0.name]
            + [v.verdict + (f" ({', '.join(v.departures)})" if v.departures else "") for v in cells]
        )
        for name, v in zip(names, cells):
            notes += [f"{v0.name} on {name}: {d}" for d in v.differences]
    console.print_table(["scenario", *names], rows, right=[])
    for n in notes:
        click.echo(n)
    for name, r in zip(names, reps):
        c = r.counts
        click.echo(
            f"{name} (model {r.kernel or 'default'}, {r.how}, {r.seconds:.0f} s): "
            f"{c['match']} match, {c['departure']} documented departures, {c['flaky']} flaky, "
            f"{c['mismatch']} mismatches, {c['error']} errors"
        )

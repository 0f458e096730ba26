"""The ``offload`` command line (click). ``offload bench`` is loaded on first use."""

from __future__ import annotations

import click

from .sizes import format_size


class _LazyGroup(click.Group):
    """A group whose ``bench`` subcommand is imported only when it is run or listed."""

    _lazy = {"bench": ("bench.cli", "bench")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, name: str):
        if name in self._lazy:
            import importlib

            module, attr = self._lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="folio-offload")
def main() -> None:
    """folio-offload: Linux page migration with batched, offloaded folio copy.

    A user-space model of the kernel series "Accelerate page migration with batch
    copying and hardware offload": memory nodes, processes, move_pages/migrate_pages,
    and pluggable copy backends (the kernel's migrators), with real data movement.
    """


@main.command()
def backends() -> None:
    """List the copy backends, whether each can run here, and why not."""
    from . import registry

    for name, info in registry.available().items():
        state = "available" if info.available else "unavailable"
        click.echo(f"{name:14} {state:12} {info.reason}")
        if info.available:
            for key, opt in registry.options(name).items():
                rng = "" if opt.min is None else f" [{opt.min:g}..{opt.max:g}]"
                click.echo(f"{'':14}   option {key}={opt.type.__name__}{rng}: {opt.help}")


@main.command()
@click.option("--nodes", default="256M,256M", show_default=True,
              help="Node layout of the model machine to describe.")
def info(nodes: str) -> None:
    """Describe this host (CPUs, NUMA nodes, GPU) and a model machine's nodes."""
    from bench.hostinfo import host_info, numa_nodes

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

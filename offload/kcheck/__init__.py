"""Kernel parity: the model's move_pages(2) / migrate_pages(2) against a real kernel.

Each scenario of :mod:`offload.kcheck.catalog` runs through the model and through a
real kernel (natively on a host with two NUMA nodes, else a stock kernel booted under
qemu with two), and :func:`offload.kcheck.compare.compare` says, per scenario: match,
documented departure, or mismatch. ``offload kernel-check`` prints the table; the
``kernel`` pytest marker runs it in the test suite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from .catalog import NODE_MB, PRESSURE_SCENARIOS, SCENARIOS
from .compare import DEPARTURES, Verdict, compare
from .observe import Observation, parse_guest, run_model
from .realkernel import INSTALL_HINT, GuestFailed, GuestRun, Unavailable, run_real
from .scenario import Scenario, to_script

#: the node the catalog uses for "no memory" (the first node id past the last one)
NOMEM = 2


@dataclass
class Report:
    """The outcome of a comparison run."""

    verdicts: list = field(default_factory=list)
    how: str = ""
    seconds: float = 0.0
    console_tail: str = ""
    timed_out: bool = False
    release: str | None = None  #: the real kernel's release
    kernel: str | None = None  #: the version the model machine followed

    @property
    def counts(self) -> dict[str, int]:
        """Scenarios per verdict."""
        out = {"match": 0, "departure": 0, "flaky": 0, "mismatch": 0, "error": 0}
        for v in self.verdicts:
            out[v.verdict] += 1
        return out

    @property
    def ok(self) -> bool:
        """No mismatch and no scenario that failed to run."""
        c = self.counts
        return not (c["mismatch"] or c["error"]) and bool(self.verdicts)


def bind_nodes(sc: Scenario, nodes: int) -> Scenario:
    """*sc* for a machine of *nodes* nodes: the catalog's memoryless node 2 becomes *nodes*."""
    if nodes == NOMEM:
        return sc
    steps = []
    for s in sc.steps:
        a = dict(s.args)
        if s.op == "move" and a["nodes"] is not None:
            a["nodes"] = [nodes if n == NOMEM else n for n in a["nodes"]]
        elif s.op == "migrate":
            a["new"] = [nodes if n == NOMEM else n for n in a["new"]]
            a["old"] = [nodes if n == NOMEM else n for n in a["old"]]
        steps.append(dataclasses.replace(s, args=a))
    return dataclasses.replace(sc, steps=tuple(steps))


def model_nodes(nodes: int) -> str:
    """The model machine's node spec for a guest of *nodes* nodes."""
    return ",".join(f"{NODE_MB[min(i, 1)]}M" for i in range(nodes))


def model_kernel(release: str | None) -> str | None:
    """The version the model follows for a real kernel of *release* (None: unknown, the
    model's default). A release newer than every supported one is followed as the
    newest; one older than the oldest cannot be modelled (the error says so)."""
    if not release:
        return None
    from ..kernels import kernel

    return kernel(release).version


def run_check(
    scenarios: list[Scenario] | None = None,
    kernel: str | None = None,
    nodes: int = 2,
    timeout: float = 600.0,
    native: str = "auto",
    accel: str = "tcg",
    progress: Callable[[Scenario], object] | None = None,
    rerun: bool = True,
) -> Report:
    """Run *scenarios* (default: all) on the model and on a real kernel; compare.

    With *rerun*, a guest that never starts is booted once more, and the scenarios that
    differ (or fail to run) are run once more on the real kernel, in a fresh guest: one that then agrees with the model is ``flaky``
    (the kernel itself gave two answers; both are in its differences), one that differs
    again keeps its verdict.

    Raises
    ------
    Unavailable
        When no real kernel can be reached here (the message says what to install).
    GuestFailed
        When the guest never started its scenarios (qemu failed, the kernel did not boot).
    """
    chosen = [bind_nodes(sc, nodes) for sc in (scenarios or SCENARIOS)]

    def guest(scs: list[Scenario]) -> GuestRun:
        return run_real(
            to_script(scs),
            kernel=kernel,
            nodes=nodes,
            timeout=timeout,
            native=native,
            node_mb=[NODE_MB[min(i, 1)] for i in range(nodes)],
            accel=accel,
        )

    try:
        run = guest(chosen)
    except GuestFailed:
        if not rerun:
            raise
        run = guest(chosen)  # a guest that never started is booted once more, then errs
    rep = Report(
        how=run.how, seconds=run.seconds, console_tail=run.console_tail, timed_out=run.timed_out
    )
    spec = model_nodes(nodes)
    rep.release = run.release
    # the model follows the kernel it is compared with: a difference that is only
    # another version's behaviour is no departure
    rep.kernel = model_kernel(run.release)
    models = []
    for sc in chosen:
        model = run_model(sc, nodes=spec, kernel=rep.kernel)
        models.append(model)
        kern = parse_guest(sc, run.lines)
        if run.timed_out and kern.error:
            kern.error = f"the guest was killed after {timeout:g} s ({kern.error})"
        rep.verdicts.append(compare(sc, model, kern))
        if progress:
            progress(sc)
    again = [i for i, v in enumerate(rep.verdicts) if v.verdict in ("mismatch", "error")]
    if rerun and again and not run.timed_out:
        second = guest([chosen[i] for i in again])
        rep.seconds += second.seconds
        for i in again:
            v = rep.verdicts[i]
            v2 = compare(chosen[i], models[i], parse_guest(chosen[i], second.lines))
            if v2.verdict in ("match", "departure"):
                v.verdict = "flaky"
                v.differences = [f"first run: {d}" for d in v.differences] + [
                    "a second run, in a fresh guest, agreed with the model"
                ]
            else:
                v.differences.append("the same on a second run, in a fresh guest")
    return rep


__all__ = [
    "DEPARTURES",
    "INSTALL_HINT",
    "PRESSURE_SCENARIOS",
    "SCENARIOS",
    "GuestFailed",
    "Observation",
    "Report",
    "Scenario",
    "Unavailable",
    "Verdict",
    "compare",
    "parse_guest",
    "run_check",
    "run_model",
]

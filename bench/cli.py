"""``offload bench``: the benchmark suites, wired into one command group. Each suite
lives in its own module (``suite_*``): its options, its run and its output."""

from __future__ import annotations

from .common import default_backends, split_backends
from .suite_compare import compare_cmd
from .suite_cpu import cpu_cmd
from .suite_kernel import kernel_cmd
from .suite_latency import latency_cmd
from .suite_overhead import overhead_cmd
from .suite_scale import scale_cmd
from .suite_split import split_cmd
from .suite_stress import stress_cmd
from .suite_table import bench

for _cmd in (
    split_cmd,
    latency_cmd,
    cpu_cmd,
    overhead_cmd,
    kernel_cmd,
    scale_cmd,
    stress_cmd,
    compare_cmd,
):
    bench.add_command(_cmd)

__all__ = ["bench", "default_backends", "split_backends"]

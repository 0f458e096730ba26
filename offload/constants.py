"""Constants of the modelled kernel: page geometry, uapi flags, migration limits."""

from __future__ import annotations

PAGE_SHIFT: int = 12
#: Bytes in a base page.
PAGE_SIZE: int = 1 << PAGE_SHIFT
#: Largest folio order the model allocates (order 9 = 2 MiB = PMD order, "THP").
MAX_FOLIO_ORDER: int = 9
HPAGE_PMD_ORDER: int = 9

# uapi values of <linux/mempolicy.h>
MPOL_MF_STRICT: int = 1 << 0
MPOL_MF_MOVE: int = 1 << 1
MPOL_MF_MOVE_ALL: int = 1 << 2

#: Kernel default of the batch limit, in base pages (x86-64).
NR_MAX_BATCHED_MIGRATION: int = 512
#: Passes over a batch for -EAGAIN (ASYNC mode, and in all for SYNC).
NR_MAX_MIGRATE_PAGES_RETRY: int = 10
#: SYNC mode: batched ASYNC passes before going folio by folio.
NR_MAX_MIGRATE_ASYNC_RETRY: int = 3
#: Node ids must be below this (the kernel's MAX_NUMNODES with NODES_SHIFT=10).
MAX_NUMNODES: int = 1024

#: The migrate reasons of include/linux/migrate_mode.h, in bit order.
MIGRATE_REASONS: tuple[str, ...] = (
    "compaction",
    "memory_failure",
    "memory_hotplug",
    "syscall_or_cpuset",
    "mempolicy_mbind",
    "numa_misplaced",
    "contig_range",
    "longterm_pin",
    "demotion",
    "damon",
)
MR_SYSCALL: str = "syscall_or_cpuset"

#: The top of the user address space (x86-64, 4-level page tables: TASK_SIZE_MAX). An
#: address or range above it is no user memory: munmap refuses it (EINVAL), mmap has no
#: room there (ENOMEM), an access there faults (EFAULT).
TASK_SIZE: int = (1 << 47) - PAGE_SIZE

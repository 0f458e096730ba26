"""The hardware references each row is judged by: a compiled page loop and memcpy on as
many threads as the row's copy uses, timed in turn with the rows (one pass per timed
round, their memory idle meanwhile, as each row's is), with back-to-back passes as upper
bounds. A row is judged by the passes of its own rounds (those of its folio size): on a
shared host the speed of memory can change between the sizes' rounds. Each pass in turn
is followed by a check of its bytes, as each row's run is by its verification, so that
every timed copy starts after the same single-threaded read.

A reference on T threads is never reported below the one on fewer threads: the larger
is reported and the inversion is warned about (on a shared VM a second thread can
measure slower than one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from offload.providers import SEPARATOR, parse_providers
from offload.sizes import format_size

from .movepages import Case, VerificationError
from .roofline import Memcpy, PageLoop

#: The references copy at most this many bytes (their buffers sit beside the rows').
REFERENCE_BYTES = 256 << 20
KINDS = ("page_loop", "memcpy")
LABELS = {"page_loop": "C page loop", "memcpy": "memcpy"}


def _option(spec: str, key: str) -> int | None:
    from offload.registry import parse_spec

    try:
        _, opts = parse_spec(spec)
        return int(opts[key]) if key in opts else None
    except (ValueError, KeyError, TypeError, Exception):  # a spec the bench refuses later
        return None


def row_threads(case: Case, cpus: int) -> int | None:
    """CPUs the copy of *case*'s row can use: 1 for ``cpu-serial``, ``threads`` (default:
    every CPU) for ``cpu-batched``, ``channels`` (default 1) for ``dma-threads``, every
    CPU for a split policy, the sum of its engines' for several joined by ``+``; at
    most *cpus*. None where CPUs are not what copies (a GPU engine, a plugin): such a
    row has no CPU reference."""
    if case.policy is not None:
        return max(1, cpus)
    spec = case.backend
    if SEPARATOR in spec or "@" in spec:  # several engines: the threads of all of them
        parts = [str(p.backend) for p in parse_providers(spec)]
        each = [_spec_threads(p, cpus) for p in parts]
        return None if None in each else max(1, min(sum(each), cpus))  # type: ignore[arg-type]
    want = _spec_threads(spec, cpus)
    return None if want is None else max(1, min(want, cpus))


def _spec_threads(spec: str, cpus: int) -> int | None:
    """CPU threads one backend spec copies with (None: not CPUs)."""
    name = spec.split(":", 1)[0]
    if name == "cpu-serial":
        return 1
    if name == "cpu-batched":
        return _option(spec, "threads") or cpus
    if name in ("dma-threads", "emu"):  # channels played by CPU threads
        return _option(spec, "channels") or 1
    return None


def llc_bytes() -> int | None:
    """The largest CPU cache (the last level) this machine reports in sysfs, in bytes."""
    best = 0
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (d / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * scale)
    return best or None


class References:
    """The page loop (where a C compiler exists) and memcpy, ready to be timed on each of
    *threads* thread counts, over ``min(total, REFERENCE_BYTES)`` bytes."""

    def __init__(self, total: int, threads: list[int]) -> None:
        from offload import native

        self.bytes = min(total, REFERENCE_BYTES)
        self.threads = sorted(set(threads) | {1})
        self._refs: dict[str, Any] = {}
        if native.available():
            loop = PageLoop(self.bytes)
            self._refs["page_loop"] = loop
            # the memcpy copies between the loop's buffers: the memory is held once
            self._refs["memcpy"] = Memcpy(self.bytes, loop.buffers)
        else:
            self._refs["memcpy"] = Memcpy(self.bytes)
        self.in_turn: dict[tuple[str, int], list[float]] = {}
        #: the passes in turn of the rounds of each folio size: (kind, threads, size)
        self.by_size: dict[tuple[str, int, int], list[float]] = {}
        self.hot: dict[tuple[str, int], list[float]] = {}
        self.method = "back to back"

    @property
    def nbytes(self) -> int:
        """Memory the buffers hold."""
        return sum(r.nbytes for r in self._refs.values())

    def back_to_back(self, passes: int) -> None:
        """*passes* passes of each reference in a row (its memory never idle)."""
        for kind, ref in self._refs.items():
            for t in self.threads:
                self.hot[kind, t] = [ref.run(t) for _ in range(passes)]

    def turn(self, record: bool = True, size: int | None = None) -> None:
        """One pass of each reference, as one round of the rows taking turns, each pass
        followed by a check of its bytes; kept when *record* (a timed round), else only
        run, so that every round, warm-up ones too, gives the rows the same pause between
        their runs. *size*: the folio size of the rows of that round (their references
        are then those of their own rounds).

        Raises
        ------
        VerificationError
            A pass left wrong bytes (the compiled copy the rows use is broken too).
        """
        if record:
            self.method = "in turn"
        for t in self.threads:
            for kind, ref in self._refs.items():
                gbps = ref.run(t)
                # its bytes read back, as a row's are after each run: every timed copy,
                # a row's or a reference's, then starts right after such a read (timed
                # one after the other instead, the passes ran 2-6% faster here)
                if not ref.check():
                    raise VerificationError(
                        f"the {LABELS[kind]} reference on {t} thread(s) copied wrong bytes"
                    )
                if record:
                    self.in_turn.setdefault((kind, t), []).append(gbps)
                    if size is not None:
                        self.by_size.setdefault((kind, t, size), []).append(gbps)

    def release(self) -> None:
        """Free the buffers (the figures stay)."""
        for ref in self._refs.values():
            if ref is not None:
                ref.close()
        self._refs = dict.fromkeys(self._refs)

    def summary(self, total: int) -> dict:
        """The JSON ``references`` object: per kind and thread count the figure rows are
        judged by (``gbps``: the median of the passes in turn, else back to back, never
        below the figure on fewer threads), the passes, the back-to-back median; the
        warnings; whether the copies ran in the last-level cache."""
        out: dict[str, Any] = {"bytes": self.bytes, "method": self.method, "warnings": []}
        llc = llc_bytes()
        out["llc_bytes"] = llc
        out["cache_resident"] = bool(llc and min(total, self.bytes) * 2 <= llc)
        sizes = sorted({s for _, _, s in self.by_size})
        for kind in self._refs:
            per: dict[str, dict] = {}
            best, best_t = 0.0, 0
            # per folio size, the best so far over the thread counts (never reported lower)
            size_best = dict.fromkeys(sizes, 0.0)
            for t in self.threads:
                runs = self.in_turn.get((kind, t)) or self.hot.get((kind, t), [])
                if not runs:
                    continue
                measured = float(np.median(runs))
                if measured < best:
                    out["warnings"].append(
                        f"{LABELS[kind]} on {t} threads measured {measured:.2f} GB/s, below "
                        f"{best:.2f} on {best_t}: the larger is reported (a noisy machine?)"
                    )
                if measured > best:
                    best, best_t = measured, t
                per[str(t)] = {
                    "gbps": best,
                    "measured_gbps": measured,
                    "runs": runs,
                    "hot_gbps": float(np.median(self.hot[kind, t]))
                    if self.hot.get((kind, t))
                    else None,
                }
                by_size = {}
                for size in sizes:
                    passes = self.by_size.get((kind, t, size))
                    if passes:
                        m = float(np.median(passes))
                        size_best[size] = max(size_best[size], m)
                        by_size[str(size)] = {
                            "gbps": size_best[size],
                            "measured_gbps": m,
                            "runs": passes,
                        }
                if by_size:
                    per[str(t)]["by_size"] = by_size
                    out["warnings"] += _moved(kind, t, by_size)
            out[kind] = per
        if out["cache_resident"]:
            out["warnings"].append(
                f"--total {format_size(total)} fits in the last-level cache "
                f"({format_size(llc or 0)}): the rows and the references run at cache speed, "
                "not memory speed"
            )
        return out


#: Passes of one reference in the rounds of different folio sizes further apart than
#: this (the larger median over the smaller) are said to have moved.
MOVED = 1.15


def _moved(kind: str, t: int, by_size: dict[str, dict]) -> list[str]:
    """A warning where the medians of one reference differ this much between the rounds
    of the folio sizes (the machine's speed changed during the run)."""
    medians = [v["measured_gbps"] for v in by_size.values()]
    if len(medians) < 2 or max(medians) <= MOVED * min(medians):
        return []
    return [
        f"{LABELS[kind]} on {t} thread{'s' if t != 1 else ''} measured "
        f"{min(medians):.2f}-{max(medians):.2f} GB/s in the rounds of different folio "
        "sizes: the machine's speed changed during the run; each size's rows are judged by "
        "the passes of their own rounds"
    ]


def reference_for(refs: dict, kind: str, t: int, size: int) -> float | None:
    """The figure a row of *size* on *t* threads is judged by: that of the passes in its
    own rounds where there are some, else the reference over the whole run."""
    ref = refs.get(kind, {}).get(str(t))
    if not ref:
        return None
    own = ref.get("by_size", {}).get(str(size))
    return float(own["gbps"] if own else ref["gbps"])


def round_passes(refs: dict, kind: str, t: int, size: int) -> np.ndarray | None:
    """Per timed round of the rows of *size*: the reference's pass on *t* threads, or on
    fewer where that one was faster (the rule of :meth:`References.summary`, round by
    round); None where no passes were timed per size, or not as many on each count."""
    per = refs.get(kind, {})
    runs = [
        per[k]["by_size"][str(size)]["runs"]
        for k in sorted(per, key=int)
        if int(k) <= t and str(size) in per[k].get("by_size", {})
    ]
    if not runs or len({len(x) for x in runs}) != 1:
        return None
    return np.maximum.reduce([np.asarray(x, dtype=np.float64) for x in runs])


def add_limits(results: list[dict], cases: list[Case], refs: dict, cpus: int) -> list[str]:
    """Give each row its thread count, the page loop's and memcpy's GB/s on that many
    threads in its rounds (``page_loop_t_gbps``, ``memcpy_t_gbps``) and its ratios to
    them (``ratio_to_page_loop_t``, ``ratio_to_memcpy_t``): the median over the timed
    rounds of its run over the reference's pass in the same round, where they pair up
    (a change of the machine's speed between rounds then moves both sides of a ratio),
    else the ratio of the medians. Returns a warning per row faster than memcpy on its
    threads, its ceiling (the machine changed between the row's runs and the passes, or
    the row copies with other stores)."""
    by_row = {(c.backend, c.folio_size): c for c in cases}
    warnings = []
    for r in results:
        case = by_row.get((r["backend"], r["folio_size"]))
        t = row_threads(case, cpus) if case is not None else None
        r["threads"] = t
        for kind in KINDS:
            gbps = reference_for(refs, kind, t, r["folio_size"]) if t else None
            r[f"{kind}_t_gbps"] = gbps
            ratio = r["gbps_median"] / gbps if gbps else None
            passes = round_passes(refs, kind, t, r["folio_size"]) if t else None
            runs = r.get("gbps", [])
            if ratio is not None and passes is not None and len(runs) == passes.size:
                ratio = float(np.median(np.asarray(runs, dtype=np.float64) / passes))
            r[f"ratio_to_{kind}_t"] = ratio
        over = r["ratio_to_memcpy_t"]
        if over is not None and over > 1.0:
            warnings.append(
                f"{r['backend']} at {format_size(r['folio_size'])} ran at {over:.2f}x memcpy "
                f"on {t} thread{'s' if t != 1 else ''}, its ceiling: the machine's speed "
                "changed between its runs and the references' passes, or it copies with "
                "other stores than the references (cpu-serial's are plain)"
            )
    return warnings


def lines(refs: dict, sizes: list[int] | None = None) -> list[tuple[str, str | list[str]]]:
    """The table's reference rows: per kind and thread count, ``in turn / back to back``;
    with *sizes* (the table's columns) and passes timed per size, one figure per column."""
    out: list[tuple[str, str | list[str]]] = []
    for kind in KINDS:
        for t, ref in refs.get(kind, {}).items():
            label = f"{LABELS[kind]}, {t} thread{'s' if t != '1' else ''}"
            hot = ""
            if ref["hot_gbps"] is not None and refs["method"] == "in turn":
                hot = f" / {ref['hot_gbps']:.2f}"
            own = ref.get("by_size", {})
            if sizes and own:
                out.append(
                    (
                        label,
                        [
                            f"{own[str(s)]['gbps']:.2f}{hot}" if str(s) in own else "-"
                            for s in sizes
                        ],
                    )
                )
            else:
                out.append((label, f"{ref['gbps']:.2f}{hot}"))
    return out


__all__ = [
    "MOVED",
    "REFERENCE_BYTES",
    "References",
    "add_limits",
    "lines",
    "llc_bytes",
    "reference_for",
    "round_passes",
    "row_threads",
]

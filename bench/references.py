"""The hardware references each row is judged by: a compiled page loop and memcpy on as
many threads as the row's copy uses, timed in turn with the rows (one pass per timed
round, their memory idle meanwhile, as each row's is), with back-to-back passes as upper
bounds.

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

from .movepages import Case
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

    def turn(self, record: bool = True) -> None:
        """One pass of each reference, as one round of the rows taking turns; kept when
        *record* (a timed round), else only run, so that every round, warm-up ones too,
        gives the rows the same pause between their runs."""
        if record:
            self.method = "in turn"
        for t in self.threads:
            for kind, ref in self._refs.items():
                gbps = ref.run(t)
                if record:
                    self.in_turn.setdefault((kind, t), []).append(gbps)

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
        for kind in self._refs:
            per: dict[str, dict] = {}
            best, best_t = 0.0, 0
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
            out[kind] = per
        if out["cache_resident"]:
            out["warnings"].append(
                f"--total {format_size(total)} fits in the last-level cache "
                f"({format_size(llc or 0)}): the rows and the references run at cache speed, "
                "not memory speed"
            )
        return out


def add_limits(results: list[dict], cases: list[Case], refs: dict, cpus: int) -> None:
    """Give each row its thread count and its ratios to the page loop and to memcpy on
    that many threads (``ratio_to_page_loop_t``, ``ratio_to_memcpy_t``)."""
    by_row = {(c.backend, c.folio_size): c for c in cases}
    for r in results:
        case = by_row.get((r["backend"], r["folio_size"]))
        t = row_threads(case, cpus) if case is not None else None
        r["threads"] = t
        for kind in KINDS:
            ref = refs.get(kind, {}).get(str(t)) if t else None
            r[f"ratio_to_{kind}_t"] = r["gbps_median"] / ref["gbps"] if ref else None


def lines(refs: dict) -> list[tuple[str, str]]:
    """The table's reference rows: per kind and thread count, ``in turn / back to back``."""
    out = []
    for kind in KINDS:
        for t, ref in refs.get(kind, {}).items():
            label = f"{LABELS[kind]}, {t} thread{'s' if t != '1' else ''}"
            text = f"{ref['gbps']:.2f}"
            if ref["hot_gbps"] is not None and refs["method"] == "in turn":
                text += f" / {ref['hot_gbps']:.2f}"
            out.append((label, text))
    return out


__all__ = ["REFERENCE_BYTES", "References", "add_limits", "lines", "llc_bytes", "row_threads"]

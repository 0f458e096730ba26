"""The ``autotune`` policy: each batch's CPU share chosen from measured throughputs.

Intel DTO's autotune in the scheduler's terms: three ways to copy a batch (all on the
CPU, all offloaded, split so that both sides finish together) are measured on real
batches, the best is kept and the others are probed now and then. The default policy,
``adaptive``, fits a cost model of each side instead (:mod:`offload.multisplit`).
"""

from __future__ import annotations


def ewma(old: float, new: float, alpha: float = 0.5) -> float:
    """An exponentially weighted mean: *new* weighed *alpha* against *old* (0: none yet)."""
    return new if not old else (1 - alpha) * old + alpha * new


class Autotune:
    """The ``autotune`` policy: measured throughput decides each batch's CPU fraction.

    Three ways to copy a batch are measured (whole-batch GB/s, smoothed): all on the CPU,
    all offloaded, and split so that both sides finish together, the split fraction
    being corrected after every split batch from the two sides' measured GB/s, in steps
    of at most ``STEP`` (as Intel DTO's autotune corrects its fraction). After measuring
    each mode ``WARMUP`` times, each batch uses the best of the three (leaving the mode
    in use only for one ``MARGIN`` better); a probe batch re-measures the stalest mode,
    ``PROBE_EVERY`` batches after the last one, an interval that doubles (up to
    ``PROBE_MAX``) each time a probe confirms the choice and resets when it changes it,
    so that a change in either side's speed is noticed at a bounded cost. Failed
    offloads are not measured.
    """

    MODES = ("split", "cpu", "offload")
    STEP = 0.1
    PROBE_EVERY = 32
    PROBE_MAX = 512
    MARGIN = 0.05
    ALPHA = 0.3
    WARMUP = 2

    def __init__(self, split: float = 0.5) -> None:
        self.split = split
        self.gbps = dict.fromkeys(self.MODES, 0.0)
        self.seen = dict.fromkeys(self.MODES, -1)
        self.batches = 0
        self.mode = "split"
        self.current = "split"  #: the mode exploited between probes
        self.rates = (0.0, 0.0)  #: CPU and offload GB/s seen in split batches
        self.rates_seen = 0
        self.scored_at: float | None = None  #: the split fraction the split score is for
        self.interval = self.PROBE_EVERY  #: batches between probes (grows while confirmed)
        self.next_probe = self.PROBE_EVERY
        self.probed = False

    def fraction(self) -> float:
        """Choose this batch's mode; return its CPU fraction."""
        self.batches += 1
        if self.batches <= self.WARMUP * len(self.MODES):
            # measure every mode WARMUP times, round robin, before trusting any
            self.mode = self.MODES[(self.batches - 1) % len(self.MODES)]
            self.current = max(self.MODES, key=lambda m: self.gbps[m])
        elif self.batches >= self.next_probe:
            self.mode = min(self.MODES, key=lambda m: self.seen[m])
            self.probed = True
            self.next_probe = self.batches + self.interval
        else:
            best = max(self.MODES, key=lambda m: self.gbps[m])
            # hysteresis: leave the mode in use only for a clearly better one
            changed = self.gbps[best] > (1 + self.MARGIN) * self.gbps[self.current]
            if changed:
                self.current = best
            if self.probed:
                # a probe that confirmed the choice makes the next one wait twice as
                # long (a probe costs a batch copied the slower way); a change resets it
                self.probed = False
                self.interval = (
                    self.PROBE_EVERY if changed else min(self.PROBE_MAX, 2 * self.interval)
                )
                self.next_probe = self.batches + self.interval
            self.mode = self.current
        return {"split": self.split, "cpu": 1.0, "offload": 0.0}[self.mode]

    def learn(self, nbytes: int, wall: float, cpu_rate: float, off_rate: float, ok: bool) -> None:
        """Record the batch just copied in the chosen mode."""
        mode = self.mode
        self.seen[mode] = self.batches
        # while warming up, each new sample replaces the last: first runs are cold
        alpha = 1.0 if self.batches <= self.WARMUP * len(self.MODES) else self.ALPHA
        if mode == "split":
            used = self.split
            if ok and wall > 0 and nbytes:
                gbps = nbytes / wall / 1e9
                # a score measured at another fraction is stale: replace it, don't blend
                same = self.scored_at is not None and abs(used - self.scored_at) <= 0.05
                self.gbps["split"] = ewma(self.gbps["split"], gbps, alpha) if same else gbps
                self.scored_at = used
            elif not self.gbps["split"]:
                self.gbps["split"] = 1e-9
            if cpu_rate and off_rate:
                self.rates = (
                    ewma(self.rates[0], cpu_rate, self.ALPHA),
                    ewma(self.rates[1], off_rate, self.ALPHA),
                )
                rc, ro = self.rates
                target = rc / (rc + ro)
                # the first estimate is taken whole; later ones in bounded steps
                step = (
                    target - used
                    if self.rates_seen == 0
                    else max(-self.STEP, min(self.STEP, target - used))
                )
                self.split = min(0.98, max(0.02, used + step))
                self.rates_seen += 1
        elif ok and wall > 0 and nbytes:
            self.gbps[mode] = ewma(self.gbps[mode], nbytes / wall / 1e9, alpha)
        elif not self.gbps[mode]:
            self.gbps[mode] = 1e-9  # measured as failing: not chosen until probed again


__all__ = ["Autotune", "ewma"]

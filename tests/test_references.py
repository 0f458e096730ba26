"""The hardware references of the bench: which thread count judges a row, the rule that
a reference on more threads is never reported below one on fewer, the cache note."""

from __future__ import annotations

import pytest

from offload.bench import references as refs
from offload.bench.movepages import Case


@pytest.mark.parametrize(
    "spec, cpus, want",
    [
        ("cpu-serial", 8, 1),
        ("cpu-batched", 8, 8),
        ("cpu-batched:threads=2", 8, 2),
        ("cpu-batched:threads=16", 4, 4),
        ("dma-threads", 8, 1),
        ("dma-threads:channels=4", 8, 4),
        ("dma-threads:channels=4", 2, 2),
        ("cupy:channels=4", 8, None),
        ("some-plugin", 8, None),
        ("emu:channels=3", 8, 3),
        ("dma-threads:channels=2+emu:channels=3", 8, 5),  # several engines: all their threads
        ("dma-threads:channels=2+emu:channels=3@sizes=64K-", 4, 4),
        ("dma-threads+cupy", 8, None),
    ],
)
def test_a_row_is_judged_on_as_many_threads_as_its_copy_uses(spec, cpus, want):
    assert refs.row_threads(Case(spec, 4096, 1 << 20), cpus) == want


def test_a_split_policy_row_uses_every_cpu():
    case = Case(
        "adaptive", 4096, 1 << 20, cpu="cpu-batched", offload="dma-threads", policy="adaptive"
    )
    assert refs.row_threads(case, 6) == 6


def _fake(
    in_turn: dict, hot: dict, total: int = 1 << 30, by_size: dict | None = None
) -> refs.References:
    r = refs.References.__new__(refs.References)
    r.bytes, r.threads, r.method = total, sorted({t for _, t in in_turn}), "in turn"
    r._refs = {"memcpy": None, "page_loop": None}
    r.in_turn, r.hot, r.by_size = in_turn, hot, by_size or {}
    return r


def test_an_inverted_reference_reports_the_larger_and_warns(monkeypatch):
    monkeypatch.setattr(refs, "llc_bytes", lambda: 32 << 20)
    r = _fake(
        {
            ("memcpy", 1): [10.0, 12.0, 11.0],
            ("memcpy", 2): [9.0, 9.5, 8.0],
            ("page_loop", 1): [5.0],
            ("page_loop", 2): [9.0],
        },
        {("memcpy", 1): [13.0], ("memcpy", 2): [14.0], ("page_loop", 1): [6.0]},
    )
    s = r.summary(1 << 30)
    assert s["memcpy"]["1"]["gbps"] == 11.0 and s["memcpy"]["2"]["measured_gbps"] == 9.0
    assert s["memcpy"]["2"]["gbps"] == 11.0  # the larger, never below 1 thread
    assert s["page_loop"]["2"]["gbps"] == 9.0 and s["page_loop"]["2"]["hot_gbps"] is None
    assert s["memcpy"]["2"]["hot_gbps"] == 14.0
    assert len(s["warnings"]) == 1 and "memcpy on 2 threads" in s["warnings"][0]
    assert s["cache_resident"] is False and s["llc_bytes"] == 32 << 20
    results = [
        {"backend": "cpu-serial", "folio_size": 4096, "gbps_median": 5.5},
        {"backend": "cpu-batched:threads=2", "folio_size": 4096, "gbps_median": 9.9},
        {"backend": "cupy", "folio_size": 4096, "gbps_median": 30.0},
    ]
    cases = [Case(x["backend"], 4096, 1 << 30) for x in results]
    refs.add_limits(results, cases, s, 2)
    assert results[0]["threads"] == 1 and results[0]["ratio_to_memcpy_t"] == pytest.approx(0.5)
    assert results[1]["ratio_to_page_loop_t"] == pytest.approx(1.1)
    assert results[1]["ratio_to_memcpy_t"] == pytest.approx(0.9)
    assert results[2]["threads"] is None and results[2]["ratio_to_memcpy_t"] is None
    lines = dict(refs.lines(s))
    assert (
        lines["memcpy, 2 threads"] == "11.00 / 14.00"
        and lines["C page loop, 1 thread"] == "5.00 / 6.00"
    )


def test_each_size_is_judged_by_the_passes_of_its_own_rounds(monkeypatch):
    """A host whose memory speed doubled between the 4K rounds and the 2M ones: each
    size's rows are judged by their own rounds' passes (never below fewer threads),
    the move is warned about, and so is a row faster than memcpy on its threads."""
    monkeypatch.setattr(refs, "llc_bytes", lambda: 32 << 20)
    two_m = 2 << 20
    by_size = {
        ("memcpy", 1, 4096): [20.0, 21.0],
        ("memcpy", 1, two_m): [28.0, 29.0],
        ("memcpy", 2, 4096): [30.0, 31.0],
        ("memcpy", 2, two_m): [55.0, 56.0],
        ("page_loop", 1, 4096): [12.0],
        ("page_loop", 2, 4096): [11.0],  # inverted: the 1-thread figure judges
    }
    in_turn: dict = {}
    for (kind, t, _), runs in by_size.items():
        in_turn.setdefault((kind, t), []).extend(runs)
    s = _fake(in_turn, {}, by_size=by_size).summary(1 << 30)
    mem2 = s["memcpy"]["2"]["by_size"]
    assert mem2["4096"]["gbps"] == 30.5 and mem2[str(two_m)]["gbps"] == 55.5
    assert s["page_loop"]["2"]["by_size"]["4096"]["gbps"] == 12.0
    assert s["page_loop"]["2"]["by_size"]["4096"]["measured_gbps"] == 11.0
    moved = [w for w in s["warnings"] if "changed during the run" in w]
    assert len(moved) == 2 and "30.50-55.50" in moved[1]  # memcpy on 1 and on 2 threads
    results = [
        {"backend": "cpu-batched:threads=2", "folio_size": 4096, "gbps_median": 24.4},
        {"backend": "cpu-batched:threads=2", "folio_size": two_m, "gbps_median": 50.0},
        {"backend": "cpu-serial", "folio_size": two_m, "gbps_median": 30.0},
    ]
    cases = [Case(x["backend"], x["folio_size"], 1 << 30) for x in results]
    beat = refs.add_limits(results, cases, s, 2)
    assert results[0]["ratio_to_memcpy_t"] == pytest.approx(0.8)
    assert results[0]["memcpy_t_gbps"] == 30.5
    assert results[1]["ratio_to_memcpy_t"] == pytest.approx(50.0 / 55.5)
    assert results[1]["page_loop_t_gbps"] == 12.0  # none in its rounds: the whole run's
    assert results[2]["ratio_to_memcpy_t"] == pytest.approx(30.0 / 28.5)
    assert len(beat) == 1 and "cpu-serial at 2M ran at 1.05x memcpy on 1 thread" in beat[0]
    # where the rows' runs pair with the passes, each round's run is judged by that
    # round's pass (on T threads, or fewer where faster), and the ratio is their median
    paired = [
        {"backend": "cpu-batched:threads=2", "folio_size": 4096, "gbps": [15.0, 31.0]},
    ]
    paired[0]["gbps_median"] = 23.0
    refs.add_limits(paired, [Case(paired[0]["backend"], 4096, 1 << 30)], s, 2)
    assert paired[0]["ratio_to_memcpy_t"] == pytest.approx((15.0 / 30.0 + 31.0 / 31.0) / 2)
    assert paired[0]["ratio_to_page_loop_t"] == pytest.approx(23.0 / 12.0)  # unpaired
    lines = dict(refs.lines(s, [4096, two_m]))
    assert lines["memcpy, 2 threads"] == ["30.50", "55.50"]
    assert lines["C page loop, 2 threads"] == ["12.00", "-"]


def test_a_total_that_fits_the_last_level_cache_is_said(monkeypatch):
    monkeypatch.setattr(refs, "llc_bytes", lambda: 64 << 20)
    r = _fake({("memcpy", 1): [20.0]}, {}, total=16 << 20)
    s = r.summary(16 << 20)
    assert s["cache_resident"] is True
    assert any("fits in the last-level cache" in w for w in s["warnings"])


def test_the_last_level_cache_is_read_from_sysfs():
    llc = refs.llc_bytes()
    assert llc is None or llc >= 1 << 10


def test_the_overhead_suite_times_the_engine_with_the_copy_step_removed():
    """offload bench overhead: both paths, every phase, the schema."""
    import json

    import jsonschema
    from click.testing import CliRunner

    from offload.cli import main

    r = CliRunner().invoke(
        main, ["bench", "overhead", "--sizes", "4K,64K", "--total", "1M", "--repeat", "2", "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    with open("docs/bench-schema.json") as f:
        jsonschema.validate(doc, json.load(f))
    rows = doc["results"]
    assert [(x["path"], x["folio_size"]) for x in rows] == [
        ("cpu path", 4096),
        ("offload path", 4096),
        ("cpu path", 65536),
        ("offload path", 65536),
    ]
    for x in rows:
        parts = sum(
            x[k] for k in ("unmap_us_per_folio", "handoff_us_per_folio", "move_us_per_folio")
        )
        assert x["us_per_folio"] > 0 and parts <= x["us_per_folio"] * 1.5
        assert len(x["runs_s"]) == 2 and x["folios"] == (1 << 20) // x["folio_size"]


def test_malloc_is_tuned_once_and_can_be_left_alone(monkeypatch):
    """hostmem: glibc's thresholds are raised (the batched path's temporaries are kept
    in the heap); FOLIO_OFFLOAD_MALLOC=0 leaves malloc alone."""
    import platform

    from offload import hostmem

    monkeypatch.setattr(hostmem, "_done", None)
    monkeypatch.setenv("FOLIO_OFFLOAD_MALLOC", "0")
    assert hostmem.keep_temporaries() is False
    monkeypatch.setattr(hostmem, "_done", None)
    monkeypatch.delenv("FOLIO_OFFLOAD_MALLOC")
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert hostmem.keep_temporaries() is glibc


def test_every_field_of_the_bench_schema_is_described():
    """A reader of the JSON finds what every field means (conditions of the per-suite
    branches aside)."""
    import json

    with open("docs/bench-schema.json") as f:
        schema = json.load(f)
    missing = []

    def walk(node, path, in_if=False):
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and not in_if:
                missing.extend(f"{path}/{k}" for k, v in props.items() if "description" not in v)
            for k, v in node.items():
                walk(v, f"{path}/{k}", in_if or k == "if")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]", in_if)

    walk(schema, "")
    assert missing == []


@pytest.mark.parametrize("kind", ["memcpy", "page_loop"])
def test_every_pass_in_turn_is_checked_like_a_row(kind):
    """Each reference pass in turn is read back as a row's bytes are (so that every timed
    copy starts after such a read); a pass that left a wrong byte stops the bench."""
    from offload import native
    from offload.bench.movepages import VerificationError

    if kind == "page_loop" and not native.available():
        pytest.skip("no C compiler: no page loop reference on this machine")
    r = refs.References(1 << 20, [1, 2])
    try:
        r.turn(record=True, size=4096)  # clean passes pass their checks
        ref = r._refs[kind]
        assert ref.check()
        clean = ref.run

        def broken(threads: int = 1) -> float:
            gbps = clean(threads)
            if kind == "memcpy":
                ref._dst[12345] ^= 1
            else:
                ref._dst[ref._dp[3], 7] ^= 1
            return gbps

        ref.run = broken
        with pytest.raises(VerificationError, match=refs.LABELS[kind]):
            r.turn(record=True, size=4096)
    finally:
        r.release()

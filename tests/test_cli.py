"""The click CLI: help, backends, info, and a small verified bench run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from offload.cli import main


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_help_lists_commands(run):
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("backends", "bench", "info"):
        assert cmd in r.output


def test_backends_and_info(run):
    r = run("backends")
    assert r.exit_code == 0 and "cpu-serial" in r.output and "threads" in r.output
    r = run("info", "--nodes", "64M,dram:32M")
    assert r.exit_code == 0
    model = r.output.split("model machine")[1].splitlines()
    assert [x.split() for x in model if x[:1].isdigit()] == [
        ["0", "dram", "64M", "16384"],
        ["1", "dram", "32M", "8192"],
    ]
    assert CliRunner().invoke(main, ["info", "--nodes", "64Q"]).exit_code == 2


def test_bench_json_follows_the_schema(run):
    r = run(
        "bench",
        "--backends",
        "cpu-serial;cpu-batched:threads=2",
        "--sizes",
        "4K,64K",
        "--total",
        "4M",
        "--repeat",
        "2",
        "--json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "offload-bench/1"
    assert doc["roofline_gbps"] > 0 and doc["machine"]["cpus"] >= 1
    assert doc["layout"] == "aged" and all(x["layout"] == "aged" for x in doc["results"])
    from offload import native

    assert ("page_loop_gbps" in doc) == native.available()
    if native.available():
        # timed in turn with the rows: one pass per timed round (2 sizes x 2 runs)
        assert len(doc["page_loop_runs"]) == 4 and doc["page_loop_method"].startswith("one pass")
        assert doc["page_loop_gbps"] == pytest.approx(float(np.median(doc["page_loop_runs"])))
        assert doc["page_loop_hot_gbps"] > 0
    rows = doc["results"]
    assert [(x["backend"], x["folio_size"]) for x in rows] == [
        ("cpu-serial", 4096),
        ("cpu-serial", 65536),
        ("cpu-batched:threads=2", 4096),
        ("cpu-batched:threads=2", 65536),
    ]
    for x in rows:
        assert x["suite"] == "move_pages" and x["verified"] is True
        assert len(x["gbps"]) == 2 and x["gbps_median"] > 0
        assert x["total_bytes"] == 4 << 20 and x["folios"] == (4 << 20) // x["folio_size"]
        assert 0 < x["copy_fraction"] <= 1 and x["overhead_us_per_folio"] > 0
    assert rows[0]["ratio_to_serial"] == pytest.approx(1.0)
    # each row against the hardware on its own thread count, timed in turn
    refs = doc["references"]
    cpus = doc["machine"]["cpus"]
    assert refs["method"] == "in turn" and refs["bytes"] == 4 << 20
    kinds = ["memcpy"] + (["page_loop"] if native.available() else [])
    for x in rows:
        t = 1 if x["backend"] == "cpu-serial" else min(2, cpus)
        assert x["threads"] == t and 0 <= x["copy_cpu_utilization"] <= cpus + 0.5
        for kind in kinds:
            ref = refs[kind][str(t)]
            assert len(ref["runs"]) == 4  # one pass per timed round
            assert ref["measured_gbps"] == pytest.approx(float(np.median(ref["runs"])))
            # judged by the passes of its own rounds: two per folio size
            own = ref["by_size"][str(x["folio_size"])]
            assert len(own["runs"]) == 2 and set(own["runs"]) <= set(ref["runs"])
            assert x[f"{kind}_t_gbps"] == own["gbps"]
            # paired round by round with the passes on T threads or fewer (the faster)
            passes = np.maximum.reduce(
                [
                    refs[kind][k]["by_size"][str(x["folio_size"])]["runs"]
                    for k in refs[kind]
                    if int(k) <= t
                ]
            )
            want = float(np.median(np.array(x["gbps"]) / passes))
            assert x[f"ratio_to_{kind}_t"] == pytest.approx(want)
    for kind in kinds:  # never below the figure on fewer threads
        figures = [refs[kind][k]["gbps"] for k in sorted(refs[kind], key=int)]
        assert figures == sorted(figures)
        for size in ("4096", "65536"):
            figures = [refs[kind][k]["by_size"][size]["gbps"] for k in sorted(refs[kind], key=int)]
            assert figures == sorted(figures)
    assert doc["roofline_mt_gbps"] >= doc["roofline_gbps"]


def test_bench_table_and_csv(run):
    r = run("bench", "--backends", "cpu-serial", "--sizes", "4K", "--total", "1M", "--repeat", "1")
    assert (
        r.exit_code == 0
        and "memcpy roofline" in r.output
        and "C page loop" in r.output
        and "cpu-serial" in r.output
    )
    r = run(
        "bench",
        "--backends",
        "cpu-serial",
        "--sizes",
        "4K",
        "--total",
        "1M",
        "--repeat",
        "1",
        "--csv",
    )
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("suite,backend,folio_size") and len(lines) == 2


@pytest.mark.parametrize(
    "args, hint",
    [
        (["--backends", "nope"], "--backends"),
        (["--backends", "cpu-batched:threads=0"], "--backends"),
        (["--sizes", "3K"], "--sizes"),
        (["--sizes", "4M"], "--sizes"),
        (["--total", "6K", "--sizes", "4K"], "--total"),
        (["--total", "lots"], "--total"),
        (["--repeat", "0"], "--repeat"),
    ],
)
def test_bench_rejects_bad_options(run, args, hint):
    r = CliRunner().invoke(main, ["bench", *args])
    assert r.exit_code == 2 and hint in r.output


@pytest.mark.parametrize("gpu, dma", [(True, "cupy"), (False, "dma-threads")])
def test_bench_default_rows(monkeypatch, gpu, dma):
    from offload import registry
    from offload.bench import cli

    real = registry.info

    def info(name):
        if name == "cupy":
            return registry.BackendInfo("cupy", gpu, "" if gpu else "no GPU (test)")
        return real(name)

    monkeypatch.setattr(registry, "info", info)
    assert cli.split_backends(cli.default_backends()) == [
        "cpu-serial",
        "cpu-batched",
        f"{dma}:channels=1",
        f"{dma}:channels=2",
        f"{dma}:channels=4",
        "adaptive",
    ]


def test_bench_table_with_adaptive_and_published_rows(run):
    r = run(
        "bench",
        "--backends",
        "cpu-serial;adaptive",
        "--sizes",
        "4K,2M",
        "--total",
        "4M",
        "--repeat",
        "1",
        "--warmup",
        "0",
        "--published",
    )
    assert r.exit_code == 0, r.output
    assert "adaptive" in r.output and "published (kernel)" in r.output
    assert "27.16" in r.output and "RFC v4" in r.output
    r = run("bench", "--backends", "cpu-serial", "--sizes", "4K", "--total", "1M", "--repeat", "1")
    assert r.exit_code == 0 and "published (kernel)" not in r.output  # only when asked


def test_split_suite_rows_name_the_policies(run):
    r = run(
        "bench",
        "split",
        "--cpu",
        "cpu-batched:threads=1",
        "--offload",
        "dma-threads",
        "--sizes",
        "16K",
        "--total",
        "2M",
        "--repeat",
        "1",
        "--json",
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["results"]
    assert [x["backend"] for x in rows] == [
        "cpu-only",
        "offload-only",
        "static:0.25",
        "static:0.5",
        "static:0.75",
        "autotune",
        "adaptive",
        "offload-only x2",
        "adaptive x2",
    ]
    by = {x["backend"]: x for x in rows}
    # the two-engine rows: marked emulated (their second engine is), each engine listed
    two = by["adaptive x2"]
    assert two["emulated"] and not by["adaptive"]["emulated"]
    assert [p["spec"].split(":")[0] for p in two["providers"]] == ["dma-threads", "emu"]
    assert two["offload"].startswith("dma-threads+emu:")
    sides = two["cost_model"]["sides"]
    assert set(sides) >= {"cpu"} and len(sides) == 3
    cm = by["adaptive"]["cost_model"]
    # calibrated: no probe, but for one batch checking a calibrated side predicted close
    # to the chosen one
    assert cm["batches"] >= 3 and cm["probes"] <= 1
    assert all(side is not None for side in cm["sides"].values()) and len(cm["sides"]) == 2
    assert all("predicted_s" in b and b["measured_s"] > 0 for b in cm["log"])
    assert by["cpu-only"]["cpu_fraction"] == 1.0 and by["offload-only"]["cpu_fraction"] == 0.0
    assert 0.1 < by["static:0.25"]["cpu_fraction"] < 0.4
    assert all(x["suite"] == "split" and x["verified"] for x in rows)
    # every other row against the faster single side, round by round
    best = max(by["cpu-only"], by["offload-only"], key=lambda x: x["gbps_median"])
    for x in rows[2:]:
        assert x["best_single"] == best["backend"]
        assert x["ratio_to_best_single"] == pytest.approx(x["gbps_median"] / best["gbps_median"])
        assert x["ratio_to_best_single_paired"] == pytest.approx(x["gbps"][0] / best["gbps"][0])
    assert "best_single" not in by["cpu-only"]


def test_best_single_pairs_the_runs_of_a_round():
    from offload.bench.suite_split import best_single

    def row(name, gbps):
        return {"backend": name, "folio_size": 4096, "gbps": gbps, "gbps_median": sorted(gbps)[1]}

    # the host slowed down in round 2: paired by round, each run meets its own round's
    rows = [
        row("cpu-only", [10.0, 6.0, 10.4]),
        row("offload-only", [9.0, 9.2, 9.4]),
        row("adaptive", [9.5, 5.9, 10.3]),
    ]
    lines = best_single(rows, [4096, 65536])
    ada = rows[2]
    assert ada["best_single"] == "cpu-only"  # the faster by median: 10.0 against 9.2
    assert ada["ratio_to_best_single"] == pytest.approx(9.5 / 10.0)
    paired = float(np.median([9.5 / 10.0, 5.9 / 6.0, 10.3 / 10.4]))  # 0.983, not 0.95
    assert ada["ratio_to_best_single_paired"] == pytest.approx(paired)
    assert lines == [("adaptive / best single, by round", [f"{paired:.3f}x of cpu-only", "-"])]
    assert "best_single" not in rows[0] and "best_single" not in rows[1]
    # cells that ran one after another: no pairing, the ratio of the medians shown
    rows = [row("cpu-only", [10.0, 6.0, 10.4]), row("adaptive", [9.9, 5.9, 10.3])]
    lines = best_single(rows, [4096], in_turn=False)
    assert rows[1]["ratio_to_best_single_paired"] is None
    assert lines == [("adaptive / best single", ["0.990x of cpu-only"])]
    # no single side measured: nothing to judge by
    assert best_single([row("adaptive", [1.0, 1.0, 1.0])], [4096]) == []


def test_latency_suite(run):
    r = run(
        "bench",
        "latency",
        "--backends",
        "dma-threads:bandwidth=0.05",  # throttled: 20 us per 4 KiB page, whatever the host
        "--batches",
        "16,512",
        "--total",
        "2M",
        "--repeat",
        "1",
        "--json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    rows = doc["results"]
    assert [x["batch_pages"] for x in rows] == [16, 512]
    one = doc["one_page"]  # the model's one-page move_pages beside the host kernel's
    assert one["model_moving_us"] > 0 and one["model_in_place_us"] > 0
    assert one["host_kernel_in_place_us"] is None or one["host_kernel_in_place_us"] > 0
    small, big = rows
    # the first folio is usable once its batch is copied, and the throttle (20 us per
    # page) bounds that from below whatever the host does: all 512 pages for one batch,
    # 16 for the other; no upper bound is asserted (a busy host may be slower)
    page_us = 4096 / 0.05e9 * 1e6
    assert big["first_folio_us"] >= 0.95 * 512 * page_us
    assert small["first_folio_us"] >= 0.95 * 16 * page_us
    assert small["first_folio_us"] <= small["total_ms"] * 1e3
    assert run("bench", "latency", "--batches", "x").exit_code == 2


def test_cpu_suite(run):
    r = run(
        "bench",
        "cpu",
        "--backends",
        "cpu-serial;cpu-batched:threads=2",
        "--sizes",
        "64K",
        "--total",
        "4M",
        "--repeat",
        "1",
        "--json",
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["results"]
    assert all(x["cpu_s_per_gb"] > 0 and x["cpu_utilization"] > 0 for x in rows)
    r = run(
        "bench",
        "cpu",
        "--backends",
        "cpu-serial",
        "--sizes",
        "64K",
        "--total",
        "1M",
        "--repeat",
        "1",
    )
    assert "s/GB" in r.output


def test_kernel_suite_on_this_host(run):
    from offload.hostinfo import numa_nodes

    r = run("bench", "kernel", "--total", "4M", "--repeat", "1")
    assert r.exit_code == 0
    if len(numa_nodes()) < 2:
        assert "needs at least two" in r.output


def test_kernel_move_pages_through_ctypes_query_mode():
    import mmap

    import numpy as np

    from offload.bench import kernel

    if kernel.syscall_number() is None:
        pytest.skip("move_pages syscall number unknown on this architecture")
    region = kernel.Region(8 * 4096, huge=False)
    try:
        addrs = region.addr + np.arange(0, 8 * 4096, 4096, dtype=np.uint64)
        try:
            ret, status = kernel.move_pages(addrs, None)
        except OSError as exc:
            if exc.errno in (1, 38):  # EPERM / ENOSYS: a seccomp filter forbids the call
                pytest.skip(f"this sandbox refuses move_pages(2): {exc}")
            raise
        assert ret == 0 and (status >= 0).all()  # every page is on some node
        from offload.hostinfo import numa_nodes

        assert set(status.tolist()) <= set(numa_nodes() or [0])
        with pytest.raises(OSError):
            kernel.move_pages(addrs, None, flags=1 << 10)  # EINVAL from the kernel
    finally:
        region.close()
    del mmap


def test_plot_output_or_a_clear_message(run, tmp_path):
    out = tmp_path / "bench.png"
    args = [
        "bench",
        "--backends",
        "cpu-serial;cpu-batched",
        "--sizes",
        "4K",
        "--total",
        "1M",
        "--repeat",
        "1",
        "--plot",
        str(out),
    ]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "folio-offload[plot]" in r.output
    else:
        r = run(*args)
        assert r.exit_code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_fresh_layout_is_said(run):
    r = run(
        "bench",
        "--backends",
        "cpu-serial",
        "--sizes",
        "4K",
        "--total",
        "4M",
        "--repeat",
        "1",
        "--layout",
        "fresh",
    )
    assert r.exit_code == 0, r.output
    assert "fresh memory" in r.output


def test_scale_suite(run):
    r = run(
        "bench", "scale", "--counts", "1K,4K", "--mappings", "100,1K", "--repeat", "1", "--json"
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["results"]
    folios = [x for x in rows if x["suite"] == "scale"]
    maps = [x for x in rows if x["suite"] == "mappings"]
    assert [x["folios"] for x in folios] == [1024, 4096]
    assert all(0 < x["metadata_bytes_per_page"] < 64 for x in folios)
    assert folios[0]["cost_vs_smallest"] == 1.0 and all(x["us_per_folio"] > 0 for x in folios)
    from offload import native

    if native.available():  # the hardware's own growth, and the model's over it
        assert folios[0]["page_loop_vs_smallest"] == 1.0
        for x in folios:
            assert x["page_loop_us_per_page"] > 0
            want = x["cost_vs_smallest"] / x["page_loop_vs_smallest"]
            assert x["cost_vs_smallest_over_page_loop"] == pytest.approx(want)
    assert [x["mappings"] for x in maps] == [100, 1024]
    assert run("bench", "scale", "--counts", "0").exit_code == 2

"""Kernel parity: the scenarios against a real kernel (marker ``kernel``), and the harness
itself (the catalogue, the script, the guest's output format, the comparator)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from offload.cli import main
from offload.kcheck import DEPARTURES, PRESSURE_SCENARIOS, SCENARIOS, Unavailable, run_check
from offload.kcheck.compare import compare
from offload.kcheck.observe import parse_guest, run_model
from offload.kcheck.scenario import script_lines, to_script

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_catalogue_is_large_and_covers_what_it_must():
    names = [sc.name for sc in SCENARIOS]
    assert len(names) >= 60 and len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in names)
    ops = {s.op for sc in SCENARIOS for s in sc.steps}
    assert {
        "spawn",
        "mmap",
        "write",
        "read",
        "pin",
        "unpin",
        "share",
        "fork",
        "munmap",
        "move",
        "migrate",
        "fill",
    } <= ops
    sources = " ".join(sc.source for sc in SCENARIOS)
    for src in (
        "man move_pages",
        "man migrate_pages",
        "LTP move_pages",
        "LTP migrate_pages",
        "selftests mm/migration.c",
        "mm/migrate.c",
    ):
        assert src in sources
    # a scenario cites the man page, LTP, the selftests or the kernel's code, never an
    # issue of this project
    assert not any("issue" in sc.source for sc in SCENARIOS + PRESSURE_SCENARIOS)


def test_every_documented_departure_is_in_the_readme():
    for key, line in DEPARTURES.items():
        assert line in README, f"{key}: README lacks {line!r}"


def test_the_model_runs_every_scenario():
    for sc in SCENARIOS:
        obs = run_model(sc)
        assert not obs.error, (sc.name, obs.error)
        assert len(obs.final) == sum(1 for _, t in script_lines(sc) if t[0] == "observe")


def test_the_script_names_every_step():
    text = to_script(SCENARIOS[:3])
    assert text.count("scenario ") == 3 and text.count("\nend\n") == 3
    assert "on 0 move -1 2 1 4 0:0:0 0:1:0 0:2:0 0:3:0" in text  # a query of 4 pages


def test_guest_output_is_parsed_and_compared():
    sc = next(s for s in SCENARIOS if s.name == "move_unmapped_entry")
    model = run_model(sc)
    lines = []
    for i, (_line, tag) in enumerate(script_lines(sc)):
        if tag[0] == "step" and sc.steps[tag[1]].op == "move":
            lines.append(f"KC {sc.name} {i} ret=0 errno=0 status=1,-14,1")
        elif tag[0] == "vmstat":
            lines.append(f"KC {sc.name} {i} vmstat=2,0,0,0,0")
        elif tag[0] == "observe":
            f = model.final[tag[1:]]
            lines.append(
                f"KC {sc.name} {i} where={','.join(map(str, f['where']))} thp_kb=0 "
                f"hash={','.join(map(str, f['hash']))}"
            )
        else:
            lines.append(f"KC {sc.name} {i} ok")
    lines.append(f"KC {sc.name} - done=0")
    kern = parse_guest(sc, lines)
    v = compare(sc, model, kern)
    # the kernel does not count the -EFAULT entry in ret; the model does
    assert v.verdict == "departure" and v.departures == ["ret_counts_entries"], v
    # a real difference is a mismatch
    lines[-2] = lines[-2].replace("where=1,1", "where=0,1")
    assert compare(sc, model, parse_guest(sc, lines)).verdict == "mismatch"
    # a guest that died says so
    assert compare(sc, model, parse_guest(sc, lines[:2])).verdict == "error"


def test_kernel_check_lists_and_validates():
    r = CliRunner().invoke(main, ["kernel-check", "--list"])
    assert r.exit_code == 0 and "move_bad_node_middle" in r.output
    r = CliRunner().invoke(main, ["kernel-check", "--only", "nope"])
    assert r.exit_code == 2 and "--only" in r.output


def test_kernel_check_says_what_is_missing(monkeypatch):
    import offload.kcheck.realkernel as rk

    monkeypatch.setattr(rk, "QEMU", "qemu-that-is-not-installed")
    monkeypatch.setattr(rk, "host_numa_nodes", lambda: [0])
    r = CliRunner().invoke(main, ["kernel-check", "--only", "move_basic"])
    assert r.exit_code == 4
    assert "apt-get install qemu-system-x86 linux-image-amd64" in r.output


#: the kernels people run: Debian 12's (the system's /boot), 13's and sid's (fetched by
#: tools/fetch-kernels, which .ci/run calls, into the cache)
KERNELS = ["6.1", "6.12", "7.x"]


def _image(series: str) -> str | None:
    import offload.kcheck.realkernel as rk

    if series == "6.1":
        try:
            return rk.find_kernel()
        except Unavailable as exc:
            pytest.skip(f"no real kernel here: {exc}")
    from offload.kernels import parse_version

    cached = rk.cached_kernels()
    keys = sorted(
        (k for k in cached if (k.startswith("7.") if series == "7.x" else k == series)),
        key=parse_version,
    )
    if not keys:
        pytest.skip(
            f"no {series} kernel image in {rk.kernel_cache()}: run tools/fetch-kernels "
            "(apt-get download of Debian's image package, nothing installed)"
        )
    return cached[keys[-1]]


@pytest.fixture(scope="module", params=KERNELS)
def report(request):
    image = _image(request.param)
    try:
        return run_check(SCENARIOS, kernel=image, timeout=900)
    except Unavailable as exc:
        pytest.skip(f"no real kernel here: {exc}")


@pytest.mark.kernel
def test_the_model_agrees_with_the_real_kernel(report):
    bad = [
        (v.name, v.verdict, v.differences)
        for v in report.verdicts
        if v.verdict in ("mismatch", "error")
    ]
    assert not bad, (
        f"{len(bad)} scenarios differ from the real kernel ({report.how}):\n"
        + "\n".join(f"{n} [{k}]: {d}" for n, k, d in bad)
        + "\n"
        + report.console_tail[-800:]
    )
    assert report.counts["match"] >= 40  # most scenarios match outright
    # the model followed the kernel it was compared with
    assert report.release and report.kernel == ".".join(report.release.split(".")[:2])


@pytest.mark.kernel
def test_a_hung_guest_is_killed_and_its_console_shown():
    import offload.kcheck.realkernel as rk

    try:
        rk.find_kernel()
    except Unavailable as exc:
        pytest.skip(f"no real kernel here: {exc}")
    if rk.shutil.which(rk.QEMU) is None:
        pytest.skip(f"{rk.QEMU} is not installed")
    # a guest given 2 seconds cannot finish booting under TCG: one error, with the end of
    # its console, not a run of scenario errors
    import time

    t0 = time.monotonic()
    with pytest.raises(rk.GuestFailed, match="killed after"):
        rk.run_in_qemu(to_script(SCENARIOS[:1]), timeout=2)
    assert time.monotonic() - t0 < 30


def test_a_difference_that_does_not_repeat_in_a_fresh_guest_is_flaky(monkeypatch):
    """The real kernel may answer twice differently (a race of its own): a scenario that
    differs is run once more in a fresh guest; agreeing then, it is ``flaky``, shown
    with both answers, and does not fail the check. Differing again, it stays a mismatch."""
    import dataclasses

    import offload.kcheck as kc
    from offload.kcheck.realkernel import GuestRun

    chosen = [s for s in SCENARIOS if s.name in ("move_basic", "move_unmapped_entry")]
    models = {sc.name: run_model(sc) for sc in chosen}
    runs: list[str] = []

    def fake_run_real(script, **kw):
        runs.append(script)
        return GuestRun([f"run{len(runs)}"], "", "qemu-tcg", 1.0, release="7.2.13")

    def fake_parse(sc, lines):
        obs = dataclasses.replace(models[sc.name])
        # the first run: both differ; the second: move_basic agrees, the other does not
        if lines == ["run1"] or sc.name == "move_unmapped_entry":
            obs = dataclasses.replace(obs, vmstat=(99, 99, 99, 99, 99))
        return obs

    monkeypatch.setattr(kc, "run_real", fake_run_real)
    monkeypatch.setattr(kc, "parse_guest", fake_parse)
    monkeypatch.setattr(kc, "run_model", lambda sc, **kw: models[sc.name])
    rep = run_check(chosen)
    by = {v.name: v for v in rep.verdicts}
    assert len(runs) == 2 and "move_basic" in runs[1] and "move_unmapped_entry" in runs[1]
    assert by["move_basic"].verdict == "flaky"
    assert any(d.startswith("first run:") for d in by["move_basic"].differences)
    assert by["move_unmapped_entry"].verdict == "mismatch"
    assert "second run" in by["move_unmapped_entry"].differences[-1]
    assert rep.counts["flaky"] == 1 and not rep.ok  # one real mismatch is left
    rep = run_check(chosen, rerun=False)  # one run only (run3: move_basic agrees)
    assert len(runs) == 3 and rep.counts["mismatch"] == 1 and rep.counts["flaky"] == 0


def test_a_guest_that_never_started_is_booted_once_more(monkeypatch):
    import offload.kcheck as kc
    from offload.kcheck.realkernel import GuestFailed, GuestRun

    sc = next(s for s in SCENARIOS if s.name == "move_basic")
    model = run_model(sc)
    boots: list[int] = []

    def flaky_boot(script, **kw):
        boots.append(1)
        if len(boots) == 1:
            raise GuestFailed("qemu (tcg) never started the scenarios")
        return GuestRun(["ok"], "", "qemu-tcg", 1.0, release="7.2.13")

    monkeypatch.setattr(kc, "run_real", flaky_boot)
    monkeypatch.setattr(kc, "parse_guest", lambda s, lines: model)
    monkeypatch.setattr(kc, "run_model", lambda s, **kw: model)
    rep = run_check([sc])
    assert len(boots) == 2 and rep.ok

    def never(script, **kw):
        boots.append(1)
        raise GuestFailed("qemu (tcg) never started the scenarios")

    monkeypatch.setattr(kc, "run_real", never)
    boots.clear()
    with pytest.raises(GuestFailed):
        run_check([sc])
    assert len(boots) == 2  # once more, then the error
    boots.clear()
    with pytest.raises(GuestFailed):
        run_check([sc], rerun=False)
    assert len(boots) == 1

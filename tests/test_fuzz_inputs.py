"""Fuzzing every parser a user reaches: sizes, backend specs, policies, node layouts and
every option of every CLI command. Invalid input gets one clear error, never a crash."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload import OffloadError, registry
from offload.cli import main
from offload.machine import parse_nodes
from offload.scheduler import parse_policy
from offload.sizes import parse_size

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

#: text that looks like what users type: sizes, specs, numbers, separators, junk
TOKENS = st.sampled_from(
    [
        "4K",
        "2M",
        "1G",
        "0",
        "-1",
        "1e3",
        "nan",
        "inf",
        ":",
        ",",
        ";",
        "=",
        "cpu-serial",
        "cpu-batched",
        "dma-threads",
        "cupy",
        "threads",
        "channels",
        "static",
        "threshold",
        "adaptive",
        "dram",
        "device",
        "99999999999999999999",
        " ",
        "\x00",
        "é",
        "T",
        "KiB",
    ]
)
USERISH = st.one_of(st.text(max_size=24), st.lists(TOKENS, max_size=6).map("".join))


@FUZZ
@given(USERISH)
def test_sizes_parse_or_fail_clearly(text):
    try:
        n = parse_size(text, "total")
    except OffloadError as exc:
        assert "total" in str(exc)
    else:
        assert isinstance(n, int) and n >= 0


@FUZZ
@given(USERISH)
def test_backend_specs_parse_or_fail_clearly(text):
    try:
        mig = registry.create(text)
    except OffloadError as exc:
        assert str(exc)
    else:
        mig.close()


@FUZZ
@given(USERISH)
def test_policies_and_node_layouts_parse_or_fail_clearly(text):
    for parse in (parse_policy, parse_nodes):
        try:
            parse(text)
        except OffloadError as exc:
            assert str(exc)


class Reached(Exception):
    """Raised where a command would start its real work: the input was valid."""


def _options(cmd: click.Command, path: tuple[str, ...]):
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.is_flag and p.name != "help":
            yield path, max(p.opts, key=len)
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            yield from _options(cmd.get_command(ctx, name), path + (name,))


OPTIONS = sorted(set(_options(main, ())))


@pytest.fixture
def no_work(monkeypatch):
    import offload.bench.kernel
    import offload.bench.movepages
    import offload.bench.scale
    import offload.bench.stress
    import offload.kcheck

    def reached(*a, **k):
        raise Reached

    monkeypatch.setattr(offload.bench.movepages, "pattern", reached)
    monkeypatch.setattr(offload.bench.stress, "run_stress", reached)
    monkeypatch.setattr(offload.bench.kernel, "run", reached)
    monkeypatch.setattr(offload.kcheck, "run_check", reached)
    monkeypatch.setattr(offload.bench.scale, "folio_scaling", reached)


def test_every_option_is_fuzzed():
    names = {(" ".join(p), o) for p, o in OPTIONS}
    assert {
        ("bench", "--total"),
        ("bench", "--sizes"),
        ("bench stress", "--seed"),
        ("bench split", "--policies"),
        ("info", "--nodes"),
    } <= names


@pytest.mark.parametrize(
    "path, option", OPTIONS, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x
)
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=USERISH)
def test_cli_options_fail_with_one_clear_line(no_work, path, option, value):
    r = CliRunner().invoke(main, [*path, f"{option}={value}"])
    if isinstance(r.exception, Reached) or r.exit_code == 0:
        return  # valid: the command got as far as its real work
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output

"""The qemu runner of kernel-check: a qemu that fails to start is one clear error, and
an interrupt never leaves qemu running."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from offload.kcheck import realkernel

needs_cc = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="no C compiler to build the guest program",
)


def _fake_qemu(tmp_path, body: str):
    path = tmp_path / "qemu"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    image = tmp_path / "vmlinuz"
    image.write_bytes(b"\0" * 4096)
    return str(path), str(image)


@needs_cc
def test_a_qemu_that_fails_to_start_is_one_clear_error(tmp_path, monkeypatch):
    qemu, image = _fake_qemu(tmp_path, 'echo "qemu: error: could not open /dev/kvm" >&2\nexit 1\n')
    monkeypatch.setattr(realkernel, "QEMU", qemu)
    with pytest.raises(realkernel.GuestFailed, match="could not open /dev/kvm"):
        realkernel.run_in_qemu("scenario x\nend\n", kernel=image, accel="tcg", timeout=30)
    from offload.cli import main

    r = CliRunner().invoke(main, ["kernel-check", "--kernel", image, "--only", "query_populated"])
    assert r.exit_code == 1
    assert r.output.count("Error:") == 1 and "could not open /dev/kvm" in r.output


@needs_cc
def test_an_interrupt_kills_qemu_at_once(tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    qemu, image = _fake_qemu(tmp_path, f"echo $$ > {pidfile}\nexec sleep 60\n")
    monkeypatch.setattr(realkernel, "QEMU", qemu)

    def interrupt() -> None:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        realkernel.run_in_qemu("scenario x\nend\n", kernel=image, accel="tcg", timeout=60)
    assert time.monotonic() - t0 < 10
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # gone: killed and reaped
        os.kill(pid, 0)


@needs_cc
def test_an_interrupt_while_qemu_starts_still_kills_it(tmp_path, monkeypatch):
    """Ctrl-C that lands inside Popen (before the runner holds qemu) is held, not lost."""
    pidfile = tmp_path / "pid"
    qemu, image = _fake_qemu(tmp_path, f"echo $$ > {pidfile}\nexec sleep 60\n")
    monkeypatch.setattr(realkernel, "QEMU", qemu)
    real_popen = realkernel.subprocess.Popen

    def popen_then_interrupt(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        if args[0][0] != qemu:  # the guest program's compiler
            return proc
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here, before Popen's caller has the process
        return proc

    monkeypatch.setattr(realkernel.subprocess, "Popen", popen_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        realkernel.run_in_qemu("scenario x\nend\n", kernel=image, accel="tcg", timeout=60)
    monkeypatch.undo()
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

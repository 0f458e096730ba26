"""Whether CuPy and a CUDA device are usable, found without touching CUDA here.

The check runs in a child process (initialising CUDA has side effects: a context, GPU
memory, forked children that can no longer use CUDA) and its answer is cached for the
life of this process.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys

INSTALL = "pip install 'folio-offload[cuda12x]' (or [cuda13x] for CUDA 13)"

_CHILD = r"""
import json
try:
    import cupy
    rt = cupy.cuda.runtime
    out = {"devices": rt.getDeviceCount(), "driver": rt.driverGetVersion(),
           "runtime": rt.runtimeGetVersion(), "cupy": cupy.__version__}
    if out["devices"]:
        out["name"] = rt.getDeviceProperties(0)["name"].decode(errors="replace")
except Exception as exc:
    out = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
"""


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str, dict]:
    """(usable, reason when not, details) for CuPy on device 0.

    The reason says first what the machine lacks, then what to install.
    """
    driver = _driver()
    if importlib.util.find_spec("cupy") is None:
        if driver is None:
            return (
                False,
                "no NVIDIA GPU or driver found on this machine (no /dev/nvidia*, no "
                f"/proc/driver/nvidia); on a machine with one: {INSTALL}",
                {},
            )
        return False, f"NVIDIA driver found ({driver}) but CuPy is not installed: {INSTALL}", {}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120
        )
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError) as exc:
        return False, f"the CUDA check failed: {exc!r}", {}
    if "error" in info:
        err = info["error"]
        if "insufficient" in err.lower() or "driver version" in err.lower():
            return False, f"the NVIDIA driver is too old for this CuPy: {err}", info
        if "no cuda-capable device" in err.lower() or "NoDevice" in err:
            where = "" if driver else " (no NVIDIA driver found on this machine)"
            return False, f"no CUDA device is visible{where}", info
        return False, f"CuPy cannot use CUDA: {err}", info
    if not info.get("devices"):
        return False, "no CUDA device is visible", info
    return True, "", info


def _driver() -> str | None:
    """The NVIDIA kernel driver's version line, or a device node's name, or None."""
    from offload.hostinfo import nvidia_devices, nvidia_driver

    dev = nvidia_devices()
    return nvidia_driver() or (dev[0] if dev else None)

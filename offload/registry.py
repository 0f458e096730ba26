"""The backend registry, filled lazily from the ``offload.backends`` entry-point group.

Nothing is imported until a backend is asked for; a backend whose module fails to
import, or whose hardware is missing, is listed as unavailable with the reason.
Specs are ``NAME[:key=value,...]``, validated against the options the backend declares.
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, NamedTuple

from .errors import BackendUnavailable, SpecError, UnknownBackend
from .migrator import Migrator, Option, option_defaults

GROUP = "offload.backends"

#: What to install when an import fails, by missing top-level module.
_INSTALL_HINTS = {
    "cupy": "install CuPy: pip install 'folio-offload[cuda12x]' (or [cuda13x] for CUDA 13)",
    "cupy_backends": "install CuPy: pip install 'folio-offload[cuda12x]' (or [cuda13x] for CUDA 13)",
}


class BackendInfo(NamedTuple):
    """A backend as ``available()`` lists it."""

    name: str
    available: bool
    reason: str = ""


class Registry:
    """Name -> backend factory, discovered from entry points on first use."""

    def __init__(self, group: str = GROUP) -> None:
        self.group = group
        self._targets: dict[str, str | Callable[..., Migrator]] = {}
        self._loaded: dict[str, Callable[..., Migrator]] = {}
        self._errors: dict[str, str] = {}
        self._discovered = False
        self._lock = threading.RLock()

    def _discover(self) -> None:
        with self._lock:
            if self._discovered:
                return
            found = {ep.name: ep.value for ep in entry_points(group=self.group)}
            for name, target in found.items():
                self._targets.setdefault(name, target)
            self._discovered = True

    def refresh(self) -> None:
        """Forget what was discovered and loaded (after installing a plugin)."""
        with self._lock:
            self._targets = {k: v for k, v in self._targets.items() if callable(v)}
            self._loaded = {k: v for k, v in self._loaded.items() if k in self._targets}
            self._errors.clear()
            self._discovered = False

    def register(self, name: str, factory: Callable[..., Migrator] | str) -> None:
        """Add a backend by hand: a factory, or a ``"module:attr"`` string."""
        if not isinstance(name, str) or not name or ":" in name or "," in name:
            raise SpecError(
                f"name: backend names are non-empty and hold no ':' or ',', got {name!r}"
            )
        with self._lock:
            self._discover()
            self._targets[name] = factory
            self._loaded.pop(name, None)
            self._errors.pop(name, None)

    def names(self) -> list[str]:
        """Every registered backend name, sorted."""
        self._discover()
        return sorted(self._targets)

    def load(self, name: str) -> Callable[..., Migrator]:
        """The factory of backend *name*, importing its module if needed.

        Raises
        ------
        UnknownBackend
            No backend of that name.
        BackendUnavailable
            Its module failed to import (the message says what to install).
        """
        self._discover()
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            if name not in self._targets:
                known = ", ".join(sorted(self._targets))
                hint = (
                    f"known: {known}"
                    if known
                    else f"no backend is registered under the entry-point group {self.group!r}:"
                    " install folio-offload (pip install -e .) so that its metadata exists"
                )
                raise UnknownBackend(f"backend: unknown backend {name!r} ({hint})")
            if name in self._errors:
                raise BackendUnavailable(f"backend {name!r} is unavailable: {self._errors[name]}")
            target = self._targets[name]
            try:
                factory = _resolve(target) if isinstance(target, str) else target
            except Exception as exc:  # ImportError and anything a plugin's import raises
                self._errors[name] = _explain(exc)
                raise BackendUnavailable(
                    f"backend {name!r} is unavailable: {self._errors[name]}"
                ) from exc
            self._loaded[name] = factory
            return factory

    def info(self, name: str) -> BackendInfo:
        """Whether backend *name* can run here, and why not."""
        try:
            factory = self.load(name)
        except BackendUnavailable:
            return BackendInfo(name, False, self._errors.get(name, "failed to load"))
        if not callable(factory):
            return BackendInfo(name, False, f"its entry point names {factory!r}, not a class")
        if isinstance(factory, type) and not issubclass(factory, Migrator):
            return BackendInfo(
                name,
                False,
                f"{factory.__module__}.{factory.__qualname__} is not a subclass of "
                "offload.Migrator",
            )
        probe = getattr(factory, "available", None)
        if probe is None:
            return BackendInfo(name, True, "")
        try:
            ok, reason = probe()
        except Exception as exc:
            return BackendInfo(name, False, f"availability check failed: {exc!r}")
        return BackendInfo(name, bool(ok), "" if ok else str(reason))

    def available(self) -> dict[str, BackendInfo]:
        """Every backend, name -> BackendInfo(name, available, reason)."""
        return {name: self.info(name) for name in self.names()}

    def options(self, name: str) -> dict[str, Option]:
        """The options backend *name* declares."""
        return dict(getattr(self.load(name), "options", {}) or {})

    def defaults(self, name: str) -> dict[str, object]:
        """The default of each option of backend *name* (from its constructor)."""
        return option_defaults(self.load(name))

    def create(self, spec: str) -> Migrator:
        """Build a backend from ``"NAME[:key=value,...]"``.

        Raises
        ------
        SpecError
            Malformed spec, unknown option, bad value.
        UnknownBackend, BackendUnavailable
            As :meth:`load`.
        """
        name, raw = parse_spec(spec)
        factory = self.load(name)
        info = self.info(name)
        if not info.available:
            raise BackendUnavailable(f"backend {name!r} is unavailable here: {info.reason}")
        opts = validate_options(name, raw, getattr(factory, "options", {}) or {})
        declared = getattr(factory, "options", {}) or {}
        for key, value in option_defaults(factory).items():
            # a default the signature cannot give (``**kwargs``) comes from the Option
            if (
                key not in opts
                and value is not None
                and value is getattr(declared[key], "default", None)
            ):
                opts[key] = value
        backend = factory(**opts)
        if not isinstance(backend, Migrator):
            raise BackendUnavailable(
                f"backend {name!r}: its factory returned {type(backend).__name__}, not a Migrator"
            )
        return backend


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"NAME[:key=value,...]"`` into the name and raw option strings."""
    if not isinstance(spec, str):
        raise SpecError(
            f"spec: expected a string such as 'cpu-batched:threads=2', got {type(spec).__name__}"
        )
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise SpecError(f"spec: missing backend name in {spec!r}")
    raw: dict[str, str] = {}
    if sep and rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key or not value:
                raise SpecError(f"spec {spec!r}: expected key=value, got {item.strip()!r}")
            if key in raw:
                raise SpecError(f"spec {spec!r}: option {key!r} given twice")
            raw[key] = value
    elif sep:
        raise SpecError(f"spec {spec!r}: ':' must be followed by key=value options")
    return name, raw


def validate_options(name: str, raw: dict[str, str], declared: dict[str, Option]) -> dict[str, Any]:
    """Convert and check raw option strings against the declared options."""
    out: dict[str, Any] = {}
    for key, text in raw.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise SpecError(f"backend {name!r}: unknown option {key!r} (options: {known})")
        opt = declared[key]
        value = _convert(name, key, text, opt)
        if isinstance(value, float) and not math.isfinite(value):
            # NaN passes every range check (it compares false), and no option means inf
            raise SpecError(f"backend {name!r}: option {key}={text} is not a finite number")
        if (opt.min is not None and value < opt.min) or (opt.max is not None and value > opt.max):
            raise SpecError(
                f"backend {name!r}: option {key}={text} is out of range [{opt.min}, {opt.max}]"
            )
        if opt.choices is not None and value not in opt.choices:
            raise SpecError(f"backend {name!r}: option {key}={text} is not one of {opt.choices}")
        out[key] = value
    return out


def _convert(name: str, key: str, text: str, opt: Option) -> Any:
    try:
        if opt.type is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if opt.type is int:
            return int(text, 0)
        return opt.type(text)
    except ValueError:
        raise SpecError(
            f"backend {name!r}: option {key}={text!r} is not a valid {opt.type.__name__}"
        ) from None


def _resolve(target: str) -> Callable[..., Migrator]:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _explain(exc: BaseException) -> str:
    if isinstance(exc, ImportError) and exc.name:
        top = exc.name.split(".")[0]
        if top in _INSTALL_HINTS:
            return f"{exc.name} is not installed: {_INSTALL_HINTS[top]}"
        return f"cannot import {exc.name}: {exc}"
    return f"{type(exc).__name__}: {exc}"


_default = Registry()
available = _default.available
create = _default.create
load = _default.load
names = _default.names
register = _default.register
refresh = _default.refresh
info = _default.info
options = _default.options
defaults = _default.defaults

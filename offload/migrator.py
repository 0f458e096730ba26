"""The offload interface: the ``Migrator`` ABC that every copy backend implements."""

from __future__ import annotations

import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from .batch import FolioBatch
from .counters import counters


@dataclass(frozen=True)
class Option:
    """An option a backend accepts in its spec string (``NAME:key=value``).

    The default of an option is the default of the constructor's keyword argument of
    the same name (:func:`option_defaults`): write it once, in the signature. ``default``
    is only for a factory whose signature cannot say it (``**kwargs``).

    Parameters
    ----------
    type : type
        ``int``, ``float``, ``bool`` or ``str``.
    default : Any
        Used only when the factory's signature gives no default for the option.
    min, max : float, optional
        Inclusive range for numbers.
    help : str
        One line for ``offload backends``.
    choices : tuple, optional
        Allowed values for strings.
    """

    type: type
    default: Any = None
    min: float | None = None
    max: float | None = None
    help: str = ""
    choices: tuple | None = None


def option_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """The default of each declared option of *factory* (a Migrator class or a function
    returning one), read from its signature, else the option's ``default``."""
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        params = {}
    out = {}
    for name, opt in (getattr(factory, "options", {}) or {}).items():
        p = params.get(name)
        if p is not None and p.default is not inspect.Parameter.empty:
            out[name] = p.default
        else:
            out[name] = getattr(opt, "default", None)
    return out


@runtime_checkable
class CopyHandle(Protocol):
    """What :meth:`Migrator.submit` returns: something to wait on."""

    def result(self, timeout: float | None = None) -> Any: ...

    def done(self) -> bool: ...


class Migrator(ABC):
    """A backend that copies folio batches (the kernel's ``struct migrator``).

    Subclasses implement :meth:`offload_copy`; everything else has a default, and a
    subclass needs no state of ours (calling ``super().__init__()`` is optional).
    The counters ``folios_migrated`` and ``folios_failures`` are kept by the machine
    that uses the migrator (folios it marked copied, folios it was given and did not);
    ``verify_failures`` counts folios it marked but got wrong, when the machine verifies.
    All of them and more are in :func:`offload.counters.counters`.
    """

    #: Registry name of the backend.
    name: ClassVar[str] = "migrator"
    #: Options accepted in the spec string.
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self) -> None:
        """Nothing to set up: a subclass may skip ``super().__init__()``."""

    # The counters live outside the plugin (offload.counters), so that a subclass needs
    # no state of ours; assigning one (``mig.folios_failures = 0``) resets it.
    folios_migrated = property(
        lambda self: counters(self).folios_migrated,
        lambda self, v: setattr(counters(self), "folios_migrated", v),
        doc="Folios this migrator marked copied (trusted marks).",
    )
    folios_failures = property(
        lambda self: counters(self).folios_failures,
        lambda self, v: setattr(counters(self), "folios_failures", v),
        doc="Folios it was given and did not copy.",
    )
    verify_failures = property(
        lambda self: counters(self).verify_failures,
        lambda self, v: setattr(counters(self), "verify_failures", v),
        doc="Folios it marked copied but got wrong (verify mode).",
    )

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the backend can run on this machine, and why not.

        Must be cheap and free of side effects (no device initialisation).
        """
        return True, ""

    @property
    def spec(self) -> str:
        """The spec string that recreates this backend."""
        opts = ",".join(
            f"{k}={getattr(self, k)}" for k in self.options if getattr(self, k, None) is not None
        )
        return f"{self.name}:{opts}" if opts else self.name

    @abstractmethod
    def offload_copy(self, batch: FolioBatch) -> None:
        """Copy the batch; set ``batch.copied[i]`` for each folio fully copied.

        Raising, or leaving folios unmarked, is allowed: the engine copies whatever is
        unmarked on the CPU, so a failure here changes speed, never outcomes.
        """

    def should_batch(self, batch: FolioBatch) -> bool:
        """Whether to take this batch at all (False: the CPU copies it)."""
        return True

    def can_access(self, node: Any) -> bool:
        """Whether this backend can read and write *node* (a ``Node``)."""
        return getattr(node, "kind", "dram") == "dram"

    def submit(self, batch: FolioBatch) -> CopyHandle:
        """Start copying *batch*; return a handle whose ``result()`` waits for it.

        The default runs :meth:`offload_copy` on a new daemon thread and returns a
        :class:`concurrent.futures.Future`. The machine itself calls backends on its own
        workers, with a deadline; it calls ``submit`` only when a subclass overrides it
        (an engine with a native asynchronous interface).
        """
        fut: Future = Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(self.offload_copy(batch))
            except BaseException as exc:
                fut.set_exception(exc)

        threading.Thread(target=run, daemon=True, name=f"{self.name}-submit").start()
        return fut

    def close(self) -> None:
        """Release threads, device memory and other resources (default: nothing)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r}>"


@dataclass(frozen=True)
class Shipped:
    """How the copy pipeline treats a class that folio-offload ships.

    Attributes
    ----------
    plain_copy : bool
        Its copy of a folio is a plain memcpy and it keeps no state of its own, so a
        one-folio migration may copy in its place (and count it for it).
    """

    plain_copy: bool = False


#: The classes folio-offload ships, by identity. Their calls run on the calling thread
#: and their marks are read from the batch they were handed. Every other class, a
#: subclass of one of these included, is a plugin: it runs on a worker with a deadline,
#: gets its own copy of the batch, and only a bool array of the batch's length in the
#: object the scheduler gave it counts as marks.
SHIPPED: dict[type, Shipped] = {}

_M = TypeVar("_M", bound=type)


def shipped(*, plain_copy: bool = False) -> Callable[[_M], _M]:
    """Class decorator: list a Migrator class in :data:`SHIPPED` (folio-offload's own
    backends only; a plugin that uses it gives up every guard of the pipeline)."""

    def mark(cls: _M) -> _M:
        SHIPPED[cls] = Shipped(plain_copy=plain_copy)
        return cls

    return mark


def shipped_as(mig: object) -> Shipped | None:
    """How the pipeline treats *mig*: its class's :data:`SHIPPED` entry, or None for a
    plugin. Asks the class, never the instance (whose look-ups are plugin code)."""
    return SHIPPED.get(type(mig))


def safe_name(mig: object) -> str:
    """*mig*'s ``name`` for messages, or its class name when asking raises."""
    try:
        name = mig.name  # type: ignore[attr-defined]
    except Exception:
        name = None
    return name if isinstance(name, str) else type(mig).__name__


def safe_spec(mig: object) -> str:
    """*mig*'s ``spec`` for reports, or its name when asking raises."""
    try:
        spec = mig.spec  # type: ignore[attr-defined]
    except Exception:
        spec = None
    return spec if isinstance(spec, str) else safe_name(mig)


__all__ = [
    "SHIPPED",
    "CopyHandle",
    "Migrator",
    "Option",
    "Shipped",
    "safe_name",
    "safe_spec",
    "shipped",
    "shipped_as",
]

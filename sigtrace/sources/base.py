"""The Source contract: attach to one library, translate its signals into engine events, detach cleanly.

Subclasses implement :meth:`Source.attach` with :meth:`connect` (blinker-style signals, held
strongly) and :meth:`patch` (``wrapt`` wrappers around library entry points); :meth:`detach`
undoes both in reverse order, so a source never has to remember what it did.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar

import wrapt
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import Meter

from sigtrace.core import safety
from sigtrace.core.engine import Engine

__all__ = ["Source"]


class Source:
    """Base class of every source. One instance per installation."""

    #: Registry name (``sources=[...]``, ``exclude=["source:..."]``, ``sigtrace.source`` attribute).
    name: ClassVar[str] = ""

    def __init__(self, engine: Engine, options: Any = None) -> None:
        self.engine = engine
        self.options = options
        #: The installation's meter, for a source's own instruments (``None`` with metrics off).
        self.meter: Meter | None = None
        self._undo: list[Callable[[], None]] = []

    def attach(self) -> None:
        """Connect receivers and install patches."""
        raise NotImplementedError

    def detach(self) -> None:
        """Disconnect every receiver and remove every patch, newest first."""
        while self._undo:
            undo = self._undo.pop()
            with safety.guard(f"source.{self.name}.detach"):
                undo()

    # --- helpers for attach() ---

    def connect(self, signal: Any, receiver: Callable[..., Any], sender: Any = None, **options: Any) -> None:
        """Connect ``receiver`` strongly (blinker drops weak receivers silently) and remember to disconnect it."""
        if sender is None:
            signal.connect(receiver, weak=False, **options)
            self._undo.append(lambda: signal.disconnect(receiver))
        else:
            signal.connect(receiver, sender=sender, weak=False, **options)
            self._undo.append(lambda: signal.disconnect(receiver, sender=sender))

    def patch(self, module: str | Any, name: str, wrapper: Callable[..., Any]) -> None:
        """Wrap ``module.name`` (``name`` may be ``"Class.method"``) with a wrapt wrapper, undone on detach."""
        owner = importlib.import_module(module) if isinstance(module, str) else module
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        parent_name, _, attr = name.rpartition(".")
        parent = owner
        for part in parent_name.split(".") if parent_name else ():
            parent = getattr(parent, part)
        self._undo.append(lambda: unwrap(parent, attr))

    def on_detach(self, undo: Callable[[], None]) -> None:
        """Register any other clean-up step."""
        self._undo.append(undo)

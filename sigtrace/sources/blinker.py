"""Generic blinker source: any pair of blinker signals (sync ``send`` or ``send_async``) as operations,
and any single signal as a span event plus an audit event.

Pairs are declared with :func:`sigtrace.trace_signals` / :func:`sigtrace.trace_signal`, before or
after ``install()``; the source connects every declaration while installed. Receivers are held
strongly: blinker's default weak references would drop them silently.
"""

from __future__ import annotations

import inspect
import threading
import uuid
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.util.types import AttributeValue

from sigtrace.core import safety
from sigtrace.core.correlation import identity_key
from sigtrace.core.operation import Operation
from sigtrace.sources.kit import Source

__all__ = [
    "BlinkerSource",
    "SignalPair",
    "SingleSignal",
    "declare",
    "trace_signal",
    "trace_signals",
    "undeclare",
]

KeyFunc = Callable[..., Hashable]
NameSpec = str | Callable[..., str] | None
AttributesSpec = Mapping[str, AttributeValue] | Callable[..., Mapping[str, AttributeValue]] | None


def _signal_name(signal: Any) -> str:
    return str(getattr(signal, "name", None) or f"signal@{id(signal):x}")


def _default_key(sender: Any, **_: Any) -> Hashable:
    return identity_key(sender)


def _operation_name(pre: Any) -> str:
    name = _signal_name(pre)
    for prefix in ("pre_", "pre-", "before_"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


@dataclass(eq=False)
class SignalPair:
    """A traced pair of signals: an operation starts at ``pre`` and ends at ``post``."""

    pre: Any
    post: Any
    key: KeyFunc = _default_key
    name: NameSpec = None
    attributes: AttributesSpec = None
    model: str | None = None
    collection: str | None = None
    source: str = "blinker"
    asynchronous: bool = False
    write: bool = True
    activate: bool = True
    #: The source instance that connected this pair, if installed.
    _attached: BlinkerSource | None = field(default=None, repr=False)

    def untrace(self) -> None:
        """Stop tracing this pair (disconnects its receivers if installed)."""
        undeclare(self)


@dataclass(eq=False)
class SingleSignal:
    """A traced single signal (no pre/post pair): an event on the current span and an audit event."""

    signal: Any
    name: NameSpec = None
    attributes: AttributesSpec = None
    model: str | None = None
    source: str = "blinker"
    asynchronous: bool = False
    write: bool = True
    _attached: BlinkerSource | None = field(default=None, repr=False)

    def untrace(self) -> None:
        undeclare(self)


Declaration = SignalPair | SingleSignal
_lock = threading.Lock()
_declared: list[Declaration] = []
_active: list[BlinkerSource] = []


def declare(declaration: Declaration) -> Declaration:
    """Remember a declaration and connect it at once if sigtrace is installed."""
    with _lock:
        _declared.append(declaration)
        sources = list(_active)
    for source in sources:
        source.connect_declaration(declaration)
    return declaration


def undeclare(declaration: Declaration) -> None:
    with _lock:
        if declaration in _declared:
            _declared.remove(declaration)
    source = declaration._attached
    if source is not None:
        source.disconnect_declaration(declaration)


def _resolve(spec: NameSpec, default: str, sender: Any, kwargs: Mapping[str, Any]) -> str:
    if spec is None:
        return default
    if isinstance(spec, str):
        return spec
    return str(spec(sender, **kwargs))


def _resolve_attributes(spec: AttributesSpec, sender: Any, kwargs: Mapping[str, Any]) -> dict[str, AttributeValue]:
    if spec is None:
        return {}
    if callable(spec):
        return dict(spec(sender, **kwargs))
    return dict(spec)


def _model_of(sender: Any) -> str | None:
    if sender is None:
        return None
    cls = sender if inspect.isclass(sender) else type(sender)
    return cls.__name__


class BlinkerSource(Source):
    """Connects the declared signal pairs and single signals."""

    name = "blinker"

    def __init__(self, engine: Any, options: Any = None) -> None:
        super().__init__(engine, options)
        self._receivers: dict[int, list[tuple[Any, Callable[..., Any]]]] = {}

    def attach(self) -> None:
        with _lock:
            _active.append(self)
            declarations = list(_declared)
        self.on_detach(self._deactivate)
        for declaration in declarations:
            self.connect_declaration(declaration)

    def _deactivate(self) -> None:
        with _lock:
            if self in _active:
                _active.remove(self)
        for receivers in self._receivers.values():
            for signal, receiver in receivers:
                signal.disconnect(receiver)
        self._receivers.clear()

    # --- connecting ---

    def connect_declaration(self, declaration: Declaration) -> None:
        if id(declaration) in self._receivers:
            return
        if isinstance(declaration, SignalPair):
            pairs = self._pair_receivers(declaration)
        else:
            pairs = [(declaration.signal, self._single_receiver(declaration))]
        for signal, receiver in pairs:
            signal.connect(receiver, weak=False)
        self._receivers[id(declaration)] = pairs
        declaration._attached = self

    def disconnect_declaration(self, declaration: Declaration) -> None:
        for signal, receiver in self._receivers.pop(id(declaration), []):
            signal.disconnect(receiver)
        declaration._attached = None

    def _pair_receivers(self, pair: SignalPair) -> list[tuple[Any, Callable[..., Any]]]:
        engine = self.engine
        pre_name = _signal_name(pair.pre)
        post_name = _signal_name(pair.post)
        default_op = _operation_name(pair.pre)

        # Receivers catch with try/except + safety.report: the net of ``with safety.guard``, fewer calls per signal.
        def on_pre(sender: Any, **kwargs: Any) -> None:
            try:
                model = pair.model or _model_of(sender)
                op = Operation(
                    source=pair.source,
                    name=_resolve(pair.name, default_op, sender, kwargs),
                    model=model,
                    collection=pair.collection,
                    signal=pre_name,
                    write=pair.write,
                    attributes=_resolve_attributes(pair.attributes, sender, kwargs),
                )
                key = pair.key(sender, **kwargs)
                op.correlation_id = _correlation_id(key)
                engine.begin(op, (id(pair), key), activate=pair.activate)
            except Exception as exc:  # noqa: BLE001 - the safety net
                safety.report("source.blinker.pre", exc)

        def on_post(sender: Any, **kwargs: Any) -> None:
            try:
                key = pair.key(sender, **kwargs)
                engine.end((id(pair), key), signal=post_name)
            except Exception as exc:  # noqa: BLE001 - the safety net
                safety.report("source.blinker.post", exc)

        if not pair.asynchronous:
            return [(pair.pre, on_pre), (pair.post, on_post)]

        async def on_pre_async(sender: Any, **kwargs: Any) -> None:
            on_pre(sender, **kwargs)

        async def on_post_async(sender: Any, **kwargs: Any) -> None:
            on_post(sender, **kwargs)

        return [(pair.pre, on_pre_async), (pair.post, on_post_async)]

    def _single_receiver(self, single: SingleSignal) -> Callable[..., Any]:
        engine = self.engine
        signal_name = _signal_name(single.signal)

        def on_signal(sender: Any, **kwargs: Any) -> None:
            with safety.guard("source.blinker.single"):
                op = Operation(
                    source=single.source,
                    name=_resolve(single.name, signal_name, sender, kwargs),
                    model=single.model or _model_of(sender),
                    signal=signal_name,
                    write=single.write,
                    attributes=_resolve_attributes(single.attributes, sender, kwargs),
                )
                engine.record_event(op)

        if not single.asynchronous:
            return on_signal

        async def on_signal_async(sender: Any, **kwargs: Any) -> None:
            on_signal(sender, **kwargs)

        return on_signal_async


def _correlation_id(key: Hashable) -> str | None:
    """A key that identifies a request (UUID, string, number) is shown; an identity key is not."""
    if isinstance(key, str | int | uuid.UUID) and not isinstance(key, bool):
        return str(key)
    return None


# --- declaring signals (re-exported as sigtrace.trace_signals / sigtrace.trace_signal) ---


def trace_signals(
    pre: Any,
    post: Any,
    *,
    key: Callable[..., Hashable] | None = None,
    name: str | Callable[..., str] | None = None,
    attributes: Mapping[str, AttributeValue] | Callable[..., Mapping[str, AttributeValue]] | None = None,
    model: str | None = None,
    collection: str | None = None,
    source: str = "blinker",
    asynchronous: bool = False,
    write: bool = True,
    activate: bool = True,
) -> SignalPair:
    """Trace a pair of blinker signals: an operation starts at ``pre`` and ends at ``post``.

    ``key(sender, **kwargs)`` correlates the two (default: the sender's identity). ``name`` and
    ``attributes`` may be values or callables of the same arguments. ``asynchronous=True`` for
    signals sent with ``send_async``. Works before or after ``install()``; returns a handle whose
    ``untrace()`` disconnects the pair.
    """
    pair = SignalPair(
        pre,
        post,
        name=name,
        attributes=attributes,
        model=model,
        collection=collection,
        source=source,
        asynchronous=asynchronous,
        write=write,
        activate=activate,
    )
    if key is not None:
        pair.key = key
    declare(pair)
    return pair


def trace_signal(
    signal: Any,
    *,
    name: str | Callable[..., str] | None = None,
    attributes: Mapping[str, AttributeValue] | Callable[..., Mapping[str, AttributeValue]] | None = None,
    model: str | None = None,
    source: str = "blinker",
    asynchronous: bool = False,
    write: bool = True,
) -> SingleSignal:
    """Trace a single signal (no pre/post pair): an event on the current span plus an audit event."""
    single = SingleSignal(
        signal, name=name, attributes=attributes, model=model, source=source, asynchronous=asynchronous, write=write
    )
    declare(single)
    return single

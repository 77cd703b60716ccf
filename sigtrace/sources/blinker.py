"""Generic blinker source: any pair of blinker signals (sync ``send`` or ``send_async``) as operations,
and any single signal as a span event plus an audit event.

Pairs are declared with :func:`sigtrace.trace_signals` / :func:`sigtrace.trace_signal`, before or
after ``install()``: declarations live in one :class:`~sigtrace.sources.kit.Declarations`, and an
installed source listens to it, connecting each declaration as it comes and disconnecting it at
``untrace()``. What is specific to blinker is here: the operation a pair's receivers build from
``(sender, **kwargs)``, and the key that correlates them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.util.types import AttributeValue

from sigtrace.core.correlation import identity_key
from sigtrace.core.operation import Operation
from sigtrace.sources.kit import Declarations, Source

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

    def untrace(self) -> None:
        undeclare(self)


Declaration = SignalPair | SingleSignal
#: Every declaration of the process; installed sources listen to it.
DECLARATIONS: Declarations[Declaration] = Declarations()


def declare(declaration: Declaration) -> Declaration:
    """Remember a declaration; an installed source connects it at once."""
    return DECLARATIONS.add(declaration)


def undeclare(declaration: Declaration) -> None:
    """Forget a declaration; an installed source disconnects it."""
    DECLARATIONS.remove(declaration)


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
    return (sender if isinstance(sender, type) else type(sender)).__name__


def _correlation_id(key: Hashable) -> str | None:
    """A key that identifies a request (UUID, string, number) is shown; an identity key is not."""
    if isinstance(key, str | int | uuid.UUID) and not isinstance(key, bool):
        return str(key)
    return None


Receivers = list[tuple[Any, Callable[..., Any]]]


class BlinkerSource(Source):
    """Connects the declared signal pairs and single signals, and those declared while it is installed."""

    name = "blinker"

    def __init__(self, engine: Any, options: Any = None) -> None:
        super().__init__(engine, options)
        #: id(declaration) -> the (signal, guarded receiver) pairs connected for it.
        self._receivers: dict[int, Receivers] = {}
        #: A declaration made while attaching is both listed and announced: connected once.
        self._lock = threading.Lock()

    def attach(self) -> None:
        self.on_detach(self._disconnect_all)
        self.on_detach(DECLARATIONS.listen(self._declared))
        for declaration in DECLARATIONS.all():
            self._connect(declaration)

    def _declared(self, declaration: Declaration, added: bool) -> None:
        if added:
            self._connect(declaration)
        else:
            self._disconnect(declaration)

    def _connect(self, declaration: Declaration) -> None:
        with self._lock:
            if id(declaration) in self._receivers:
                return
            if isinstance(declaration, SignalPair):
                receivers = self._pair_receivers(declaration)
            else:
                receivers = [(declaration.signal, self._single_receiver(declaration))]
            for signal, receiver in receivers:
                signal.connect(receiver, weak=False)
            self._receivers[id(declaration)] = receivers

    def _disconnect(self, declaration: Declaration) -> None:
        with self._lock:
            receivers = self._receivers.pop(id(declaration), ())
        for signal, receiver in receivers:
            signal.disconnect(receiver)

    def _disconnect_all(self) -> None:
        with self._lock:
            connected, self._receivers = self._receivers, {}
        for receivers in connected.values():
            for signal, receiver in receivers:
                signal.disconnect(receiver)

    # --- the receivers (guarded by the kit: ``source.blinker.pre`` / ``.post`` / ``.single``) ---

    def _pair_receivers(self, pair: SignalPair) -> Receivers:
        begin = self.engine.begin
        end = self.engine.end
        pair_id = id(pair)
        pre_name = _signal_name(pair.pre)
        post_name = _signal_name(pair.post)
        default_op = _operation_name(pair.pre)

        def on_pre(sender: Any, **kwargs: Any) -> None:
            # The hot path: the common cases (no name or attributes callable) spelled inline.
            name, attributes = pair.name, pair.attributes
            key = pair.key(sender, **kwargs)
            op = Operation(
                source=pair.source,
                name=default_op if name is None else _resolve(name, default_op, sender, kwargs),
                model=pair.model or _model_of(sender),
                collection=pair.collection,
                correlation_id=None if type(key) is tuple else _correlation_id(key),
                signal=pre_name,
                post_signal=post_name,
                write=pair.write,
                attributes={} if attributes is None else _resolve_attributes(attributes, sender, kwargs),
            )
            begin(op, (pair_id, key), activate=pair.activate)

        def on_post(sender: Any, **kwargs: Any) -> None:
            end((pair_id, pair.key(sender, **kwargs)), signal=post_name)

        if pair.asynchronous:

            async def on_pre_async(sender: Any, **kwargs: Any) -> None:
                on_pre(sender, **kwargs)

            async def on_post_async(sender: Any, **kwargs: Any) -> None:
                on_post(sender, **kwargs)

            return [(pair.pre, self.receiver("pre", on_pre_async)), (pair.post, self.receiver("post", on_post_async))]
        return [(pair.pre, self.receiver("pre", on_pre)), (pair.post, self.receiver("post", on_post))]

    def _single_receiver(self, single: SingleSignal) -> Callable[..., Any]:
        record_event = self.engine.record_event
        signal_name = _signal_name(single.signal)

        def on_signal(sender: Any, **kwargs: Any) -> None:
            record_event(
                Operation(
                    source=single.source,
                    name=_resolve(single.name, signal_name, sender, kwargs),
                    model=single.model or _model_of(sender),
                    signal=signal_name,
                    write=single.write,
                    attributes=_resolve_attributes(single.attributes, sender, kwargs),
                )
            )

        if single.asynchronous:

            async def on_signal_async(sender: Any, **kwargs: Any) -> None:
                on_signal(sender, **kwargs)

            return self.receiver("single", on_signal_async)
        return self.receiver("single", on_signal)


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

"""The :class:`Source` base: attach to one library, translate what it does into engine calls, detach cleanly.

A source module keeps only what is specific to its library. Everything else is here and spelled
once: the safety net around every receiver and entry point (:meth:`Source.receiver`,
:meth:`Source.entry`, :meth:`Source.async_entry`, :meth:`Source.guard`), the patches and
connections that :meth:`Source.detach` undoes newest first, and the installation options a
source reads. A source never writes ``try/except`` around its own hooks: the kit does, and
names the error ``source.<name>.<kind>`` (counted in ``sigtrace.internal_errors``, raised under
``SIGTRACE_STRICT=1``).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ClassVar, TypeVar

import wrapt
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import Meter

from sigtrace._config import Options
from sigtrace.core import safety
from sigtrace.core.engine import Engine, EntryScope
from sigtrace.core.operation import Operation

__all__ = ["After", "Build", "Entry", "Failed", "Source", "Wrapper"]

#: What an entry point's operation is before the call: the operation and the key its pre signal
#: will carry (``None``: no signal claims it; the call's return ends it).
Entry = tuple[Operation, Hashable | None]
#: Builds the :data:`Entry` of one call from the wrapped method's ``(instance, args, kwargs)``;
#: ``None``: this call is not traced (the library runs as if sigtrace were not there).
Build = Callable[[Any, tuple[Any, ...], dict[str, Any]], Entry | None]
#: Fills in what only the call's result tells: ``(operation, instance, args, kwargs, result)``.
#: Runs only while the operation is still open (no post signal ended it).
After = Callable[[Operation, Any, tuple[Any, ...], dict[str, Any], Any], None]
#: Takes back what a failed call must not report: ``(operation, instance, args, kwargs, error)``, run before
#: the error ends the operation (e.g. a fact a hook recorded for a write that then failed).
Failed = Callable[[Operation, Any, tuple[Any, ...], dict[str, Any], BaseException], None]
#: A ``wrapt`` wrapper: ``(wrapped, instance, args, kwargs) -> result``.
Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

_MISSING = object()
F = TypeVar("F", bound=Callable[..., Any])


def _call_hook(
    hook: Callable[..., None],
    where: str,
    op: Operation,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    value: Any,
) -> None:
    """An entry wrapper's ``after`` or ``failed`` hook under the safety net (reported as ``where``)."""
    try:
        hook(op, instance, args, kwargs, value)
    except Exception as exc:  # noqa: BLE001 - the safety net
        safety.report(where, exc)


def _named(guarded: F, function: Callable[..., Any]) -> F:
    """The guarded receiver under the receiver's own name (what a library's receiver list shows)."""
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        with contextlib.suppress(AttributeError, TypeError):
            setattr(guarded, attr, getattr(function, attr))
    return guarded


class Source:
    """Base class of every source; one instance per installation.

    Subclasses set :attr:`name` and implement :meth:`attach` with :meth:`connect` (signals,
    held strongly, each receiver guarded) and :meth:`patch` (``wrapt`` wrappers around library
    entry points, usually made by :meth:`entry` or :meth:`async_entry`).
    """

    #: Registry name (``sources=[...]``, ``exclude=["source:..."]``, ``sigtrace.source`` attribute).
    name: ClassVar[str] = ""

    def __init__(self, engine: Engine, options: Options | None = None) -> None:
        self.engine = engine
        self.options = options
        #: ``capture_values``: field values go to the audit event (always through redaction).
        self.capture_values = bool(options is not None and options.capture_values)
        #: ``audit_reads``: reads reach the audit log too.
        self.audit_reads = bool(options is not None and options.audit_reads)
        #: Whether writes wait for their transaction (``Engine.holds_writes``): without, a source mirrors
        #: no transaction (spans only: the span says what the call did, nothing waits for the commit).
        self.holds_writes = engine.holds_writes
        #: The installation's meter, for a source's own instruments (``None`` with metrics off).
        self.meter: Meter | None = None
        self._undo: list[Callable[[], None]] = []
        self._guards: dict[str, safety.guard] = {}

    def attach(self) -> None:
        """Connect receivers and install patches."""
        raise NotImplementedError

    def detach(self) -> None:
        """Disconnect every receiver and remove every patch, newest first."""
        while self._undo:
            undo = self._undo.pop()
            with self.guard("detach"):
                undo()

    # --- the safety net ---

    def where(self, kind: str) -> str:
        """The internal-error kind of this source's ``kind`` of hook: ``source.<name>.<kind>``."""
        return f"source.{self.name}.{kind}"

    def guard(self, kind: str) -> safety.guard:
        """``with self.guard("kind"):`` a block whose errors never reach the application (one per kind)."""
        found = self._guards.get(kind)
        if found is None:
            found = self._guards[kind] = safety.guard(self.where(kind))
        return found

    def receiver(self, kind: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` under the safety net, as a receiver the library may call (sync or async alike).

        A coroutine function stays one (blinker's ``send_async`` and Edgy's broadcaster await it).
        """
        where = self.where(kind)
        report = safety.report
        if inspect.iscoroutinefunction(function):

            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await function(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - the safety net
                    report(where, exc)
                    return None

            return _named(guarded_async, function)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the safety net
                report(where, exc)
                return None

        return _named(guarded, function)

    # --- connecting and patching (undone by detach) ---

    def connect(
        self,
        signal: Any,
        receiver: Callable[..., Any],
        sender: Any = None,
        *,
        kind: str | None = None,
        guard: bool = True,
        **options: Any,
    ) -> Callable[..., Any]:
        """Connect ``receiver`` guarded (as ``kind``, default its name) and strongly; returns what was connected.

        Strongly: blinker drops a weakly held receiver silently once nothing else holds it. ``guard=False``:
        the receiver is its own safety net (it reports as ``source.<name>.<kind>``), connected as it is: no
        second frame per signal (a coroutine receiver's wrapper is one more coroutine resumed per send).
        """
        name = kind or getattr(receiver, "__name__", "receiver").lstrip("_")
        guarded = self.receiver(name, receiver) if guard else receiver
        if sender is None:
            signal.connect(guarded, weak=False, **options)
            self._undo.append(lambda: signal.disconnect(guarded))
        else:
            signal.connect(guarded, sender=sender, weak=False, **options)
            self._undo.append(lambda: signal.disconnect(guarded, sender=sender))
        return guarded

    def patch(self, module: str | Any, name: str, wrapper: Wrapper) -> None:
        """Wrap ``module.name`` (``name`` may be ``"Class.method"``) with a wrapt wrapper, undone on detach."""
        owner = importlib.import_module(module) if isinstance(module, str) else module
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        parent_name, _, attr = name.rpartition(".")
        parent = owner
        for part in parent_name.split(".") if parent_name else ():
            parent = getattr(parent, part)
        self._undo.append(lambda: unwrap(parent, attr))

    def replace(self, owner: Any, attr: str, value: Any) -> None:
        """Set ``owner.attr`` to ``value``, restored on detach (deleted again if ``owner`` had none of its own)."""
        previous = owner.__dict__.get(attr, _MISSING) if hasattr(owner, "__dict__") else getattr(owner, attr, _MISSING)
        setattr(owner, attr, value)

        def restore() -> None:
            if previous is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, previous)

        self._undo.append(restore)

    def on_detach(self, undo: Callable[[], None]) -> None:
        """Register any other clean-up step."""
        self._undo.append(undo)

    # --- entry points ---

    def entry(
        self, kind: str, build: Build, after: After | None = None, *, failed: Failed | None = None, track: bool = False
    ) -> Wrapper:
        """A wrapt wrapper that runs a library call inside the engine's entry scope for ``build``'s operation.

        The operation's span is the caller's child and current for the whole call (driver spans
        nest under it); the call's pre signal claims it by its key; an exception leaving the call
        ends it as an error at once; the call's return ends it if no post signal did. A failing
        ``build`` or ``after`` is reported as ``source.<name>.<kind>`` and the call runs untraced.
        ``track``: a call no pre signal claims (SQLAlchemy's flush) is claimed by its key as it
        starts, so that it is in flight and reaped as an orphan if it never returns. ``failed`` runs
        when the call raises, before the error ends the operation (``source.<name>.<kind>.failed``).
        """
        engine = self.engine
        where = self.where(kind)
        where_after = f"{where}.after"
        where_failed = f"{where}.failed"
        report = safety.report

        def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                entry = build(instance, args, kwargs)
            except Exception as exc:  # noqa: BLE001 - the safety net (a with-block costs two calls)
                report(where, exc)
                entry = None
            if entry is None:
                return wrapped(*args, **kwargs)
            op, expect = entry
            with EntryScope(engine, op, expect) as scope:  # engine.entry(), without its frame
                if track and expect is not None and scope.op is not None:
                    engine.claim(expect)
                try:
                    result = wrapped(*args, **kwargs)
                except BaseException as error:
                    own = scope.op
                    if failed is not None and own is not None and not own.done:
                        _call_hook(failed, where_failed, own, instance, args, kwargs, error)
                    raise
                own = scope.op
                if after is not None and own is not None and not own.done:
                    try:  # _call_hook, without its frame: every call that returns
                        after(own, instance, args, kwargs, result)
                    except Exception as exc:  # noqa: BLE001 - the safety net
                        report(where_after, exc)
            return result

        return wrapper

    def current_entry(self) -> Operation | None:
        """The operation of this source's entry call running in this context (or a task it gathered), if any.

        For a hook inside the call (a receiver, a transaction the library begins) that must know which
        call it belongs to. It may have ended already (``op.done``): a second post signal of one call.
        """
        op = self.engine.current(ended=True)
        return op if op is not None and op.source == self.name else None

    def async_entry(self, kind: str, build: Build, after: After | None = None) -> Wrapper:
        """:meth:`entry` for a coroutine method: the operation is built when the call runs, not when it is made.

        The wrapper is a plain function returning the scoped coroutine: one coroutine frame between
        the caller and the library, resumed at every await of the call.
        """
        engine = self.engine
        where = self.where(kind)
        where_after = f"{where}.after"
        report = safety.report

        async def scoped(
            wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            try:
                entry = build(instance, args, kwargs)
            except Exception as exc:  # noqa: BLE001 - the safety net
                report(where, exc)
                entry = None
            if entry is None:
                return await wrapped(*args, **kwargs)
            op, expect = entry
            # engine.entry() entered and exited by hand, not ``async with``: its __aenter__ and __aexit__ are
            # two more coroutines created and run per call, and they only call __enter__ and __exit__.
            scope = EntryScope(engine, op, expect).__enter__()
            try:
                result = await wrapped(*args, **kwargs)
                own = scope.op
                if after is not None and own is not None and not own.done:
                    try:  # _call_hook, without its frame: every call that returns
                        after(own, instance, args, kwargs, result)
                    except Exception as exc:  # noqa: BLE001 - the safety net
                        report(where_after, exc)
            except BaseException as error:
                scope.__exit__(type(error), error, error.__traceback__)
                raise
            scope.__exit__(None, None, None)
            return result

        def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return scoped(wrapped, instance, args, kwargs)

        return wrapper

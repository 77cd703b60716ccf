"""Malformed rows and batches handed to the Flask-SignalBus source's send wrappers (hypothesis).

Flask-SignalBus sends no signals: its "receivers" are sigtrace's wrappers around the models'
``send_signalbus_message(s)``. Whatever the row or batch looks like (None, hostile objects whose every
attribute raises, dead weak proxies, plain values), the wrapped send runs exactly once with the
arguments it was given, its result comes back, and nothing raised inside sigtrace reaches the caller
(strict mode off, as in production; what sigtrace caught is counted).
"""

from __future__ import annotations

import weakref
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigtrace.core import safety
from sigtrace.testing import capture


class Dead:
    pass


def dead_proxy() -> Any:
    obj = Dead()
    proxy = weakref.proxy(obj)
    del obj
    return proxy


class Hostile:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"hostile {name}")

    def __str__(self) -> str:
        raise RuntimeError("hostile str")

    __repr__ = __str__


rows = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.builds(Hostile),
    st.builds(dead_proxy),
    st.builds(object),
    st.just(Dead),
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@given(row=rows, args=st.lists(rows, max_size=3))
@FUZZ
def test_send_wrapper_never_raises_into_the_caller(row: Any, args: list[Any]) -> None:
    calls: list[tuple[Any, ...]] = []

    def send(*given: Any, **kwargs: Any) -> str:
        calls.append(given)
        return "sent"

    with safety.strict(False), capture(sources=["signalbus"]) as cap:
        assert cap.installation is not None
        source: Any = cap.installation.sources["signalbus"]
        assert source._send_wrapper(send, row, tuple(args), {}) == "sent"
    assert calls == [tuple(args)]


@given(owner=rows, batch=st.lists(rows, max_size=4))
@FUZZ
def test_batch_wrapper_never_raises_into_the_caller(owner: Any, batch: list[Any]) -> None:
    calls: list[list[Any]] = []

    def send_many(items: Any, *rest: Any) -> str:
        calls.append(list(items))
        return "sent"

    with safety.strict(False), capture(sources=["signalbus"]) as cap:
        assert cap.installation is not None
        source: Any = cap.installation.sources["signalbus"]
        assert source._batch_wrapper(send_many, owner, (iter(batch),), {}) == "sent"
    assert calls == [batch]  # an iterator is read once and the same items reach the library

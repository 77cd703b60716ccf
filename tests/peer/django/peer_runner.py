"""A Django test runner that writes each test's outcome to ``SIGTRACE_PEER_OUTCOMES`` (JSON), for tests/peer/run.py.

Django's runtests prints outcomes only as dots (or ``-v 2`` lines mixed with the tests' own output): this
records them from the unittest result itself. It also counts how often Django sent the model signals sigtrace
turns into write operations, so the harness can set them beside the audit events sigtrace wrote.
"""

from __future__ import annotations

import json
import os
import unittest
from collections.abc import Callable
from typing import Any, ClassVar

from django.db.models import signals
from django.test.runner import DiscoverRunner

#: The signals whose sends are counted (each call of ``send``, receivers or not).
COUNTED = ("pre_save", "post_save", "pre_delete", "post_delete", "m2m_changed")


class RecordingResult(unittest.TextTestResult):
    #: Shared by every result of the run (Django builds one per suite run): test id -> outcome and detail.
    outcomes: ClassVar[dict[str, dict[str, str]]] = {}

    def _set(self, test: Any, outcome: str, detail: str = "") -> None:
        key = test.id()
        previous = self.outcomes.get(key)
        if previous is not None and previous["outcome"] == "failed" and outcome == "passed":
            return  # a failed subtest keeps the test failed
        self.outcomes[key] = {"outcome": outcome, "detail": detail[-2000:]}

    def addSuccess(self, test: Any) -> None:  # noqa: N802 - unittest's names
        super().addSuccess(test)
        self._set(test, "passed")

    def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addFailure(test, err)
        self._set(test, "failed", self._exc_info_to_string(err, test))

    def addError(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addError(test, err)
        self._set(test, "failed", self._exc_info_to_string(err, test))

    def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)
        self._set(test, "skipped", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addExpectedFailure(test, err)
        self._set(test, "passed", "expected failure")

    def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)
        self._set(test, "failed", "unexpected success")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set(test, "failed", f"{subtest}: {self._exc_info_to_string(err, test)}")


def _count_sends(counts: dict[str, int], by_model: dict[str, dict[str, int]]) -> None:
    """Wrap each counted signal's ``send`` on the instance (the class and its receivers stay as they are).

    ``by_model``: per signal, the sends per sender model (``app_label.ModelName``; the through model for m2m).
    """
    for name in COUNTED:
        signal = getattr(signals, name)
        original: Callable[..., Any] = signal.send
        per_model = by_model.setdefault(name, {})

        def send(
            sender: Any,
            *args: Any,
            _name: str = name,
            _original: Callable[..., Any] = original,
            _per_model: dict[str, int] = per_model,
            **kwargs: Any,
        ) -> Any:
            counts[_name] = counts.get(_name, 0) + 1
            meta = getattr(sender, "_meta", None)
            label = str(getattr(meta, "label", None) or getattr(sender, "__name__", "?"))
            _per_model[label] = _per_model.get(label, 0) + 1
            return _original(sender, *args, **kwargs)

        signal.send = send


class RecordingRunner(DiscoverRunner):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends: dict[str, int] = {}
        self.sends_by_model: dict[str, dict[str, int]] = {}
        _count_sends(self.sends, self.sends_by_model)

    def get_resultclass(self) -> type[unittest.TextTestResult]:
        return RecordingResult

    def run_suite(self, suite: Any, **kwargs: Any) -> Any:
        try:
            return super().run_suite(suite, **kwargs)
        finally:
            path = os.environ.get("SIGTRACE_PEER_OUTCOMES")
            if path:
                with open(path, "w", encoding="utf-8") as out:
                    payload = {"outcomes": RecordingResult.outcomes, "sends": self.sends}
                    json.dump({**payload, "sends_by_model": self.sends_by_model}, out)

"""Run Edgy's own migration tooling (alembic under edgy.cli.base) with sigtrace installed; print what it captured.

Run as a script in a scratch directory (``python migrate_run.py <database url>``): Edgy's migration
commands read process-wide settings (migrations directory, the app instance) and run their own
event loop, so the test runs them in a process of their own.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import edgy
from edgy.cli import base as cli

from sigtrace.testing import capture


def main(url: str) -> None:
    database = edgy.Database(url)
    reg = edgy.Registry(database=database)

    class Invoice(edgy.Model):
        number: str = edgy.CharField(max_length=20)

        class Meta:
            registry = reg

    edgy.monkay.set_instance(edgy.Instance(registry=reg))
    out: dict[str, Any] = {}
    with capture(sources=["edgy"]) as cap:
        cli.init()
        cli.migrate(message="create invoices")  # revision --autogenerate
        cli.upgrade()
        cli.downgrade()
        try:
            cli.upgrade(revision="does-not-exist")
        except Exception as exc:  # noqa: BLE001 - reported in the output
            out["failure"] = type(exc).__qualname__
        assert cap.installation is not None
        out["in_flight"] = cap.installation.in_flight()
    out["spans"] = [
        {
            "name": span.name,
            "status": span.status.status_code.name,
            "attributes": dict(span.attributes or {}),
            "span_id": format(span.get_span_context().span_id, "016x"),  # type: ignore[union-attr]
            "parent": format(span.parent.span_id, "016x") if span.parent else None,
        }
        for span in cap.spans
    ]
    out["audit"] = cap.audit_events
    print("SIGTRACE-RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1])

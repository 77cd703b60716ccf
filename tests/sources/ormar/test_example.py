"""Runs examples/ormar/app.py: HTTP span -> ormar span -> SQL spans, and the audit events of the requests."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from opentelemetry.trace import SpanKind, StatusCode

import sigtrace
from sigtrace.testing import Capture
from tests.examples import load_example
from tests.sources.async_orm import attrs, children, parent_of, span_id


def test_request_tree_and_audit(tmp_path: Path) -> None:
    cap = Capture()
    app = load_example("ormar").create_app(
        f"sqlite+aiosqlite:///{tmp_path / 'albums.sqlite'}",
        cap.tracer_provider,
        meter_provider=cap.meter_provider,
        audit=cap.record_audit,
    )
    try:
        with TestClient(app) as client:  # runs the lifespan: sigtrace.install(), connect, instrument
            created = client.post("/albums", json={"name": "Blue Train"}, headers={"x-user": "alice"})
            assert created.status_code == 201
            album_id = created.json()["id"]
            assert client.post("/albums", json={"name": "Blue Train"}).status_code == 409
            assert client.patch(f"/albums/{album_id}", json={"play_count": 5}).status_code == 200
            assert client.post("/albums/reset-plays").json() == {"rows": 1}
            assert client.delete(f"/albums/{album_id}", headers={"x-user": "bob"}).status_code == 204
        assert not sigtrace.is_installed()  # the lifespan uninstalled it
    finally:
        sigtrace.uninstall()

    http = [s for s in cap.spans if s.kind == SpanKind.SERVER]

    def status(span: object) -> object:
        a = attrs(span)  # type: ignore[arg-type]
        return a.get("http.response.status_code", a.get("http.status_code"))

    (post,) = [s for s in http if s.name == "POST /albums" and status(s) == 201]
    saves = cap.spans_named("save albums")
    ok_save = next(s for s in saves if s.status.status_code != StatusCode.ERROR)
    assert parent_of(ok_save) == span_id(post)
    sql = children(cap, ok_save)
    assert any(s.name.startswith("INSERT") for s in sql), [s.name for s in sql]
    failed = next(s for s in saves if s.status.status_code == StatusCode.ERROR)
    assert attrs(failed)["error.type"] == "IntegrityError"

    ops = [(e["operation"], e["outcome"], e.get("actor")) for e in cap.audit_events]
    assert ops == [
        ("save", "ok", "alice"),
        ("save", "error", None),
        ("update", "ok", None),
        ("update", "ok", None),
        ("delete", "ok", "bob"),
    ]
    assert cap.audit_events[2]["changed_fields"] == ["play_count"]

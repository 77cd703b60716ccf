"""Runs examples/edgy/app.py: HTTP span -> Edgy span -> SQL spans, and the audit events of the requests."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.trace import SpanKind, StatusCode
from starlette.testclient import TestClient

import sigtrace
from sigtrace.testing import Capture
from tests.examples import load_example
from tests.sources.edgy.helpers import attrs, parent_id, span_id


def test_request_tree_and_audit(tmp_path: Path) -> None:
    cap = Capture()
    app = load_example("edgy").create_app(
        f"sqlite+aiosqlite:///{tmp_path / 'users.sqlite'}",
        cap.tracer_provider,
        meter_provider=cap.meter_provider,
        audit=cap.record_audit,
    )
    try:
        with TestClient(app) as client:  # runs the lifespan: sigtrace.install(), connect, instrument
            created = client.post("/users", json={"name": "ada"}, headers={"x-user": "alice"})
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
            assert client.post("/users", json={"name": "ada"}).status_code == 409
            assert client.post("/users/import", json={"names": ["bo", "cy"]}).status_code == 201
            assert client.patch(f"/users/{user_id}", json={"karma": 5}).status_code == 200
            assert client.post(f"/users/{user_id}/teams", json={"team": "core"}, headers={"x-user": "bob"}).is_success
            assert client.post("/users/reset-karma").json() == {"rows": 1}
            assert client.delete(f"/users/{user_id}", headers={"x-user": "bob"}).status_code == 204
        assert not sigtrace.is_installed()  # the lifespan uninstalled it
    finally:
        sigtrace.uninstall()

    servers = [s for s in cap.spans if s.kind == SpanKind.SERVER]

    def server(method_path: str, code: int) -> object:
        found = [
            s
            for s in servers
            if s.name == method_path
            and attrs(s).get("http.response.status_code", attrs(s).get("http.status_code")) == code
        ]
        assert len(found) == 1, [(s.name, attrs(s)) for s in servers]
        return found[0]

    def under(op_name: str, parent: object) -> object:
        (op,) = [s for s in cap.spans_named(op_name) if parent_id(s) == span_id(parent)]  # type: ignore[arg-type]
        return op

    post = server("POST /users", 201)
    save = under("save users", post)
    sql = [s for s in cap.spans if parent_id(s) == span_id(save)]  # type: ignore[arg-type]
    assert any(s.name.startswith("INSERT") for s in sql), [s.name for s in sql]
    failed = under("save users", server("POST /users", 409))
    assert failed.status.status_code == StatusCode.ERROR  # type: ignore[attr-defined]
    bulk = under("bulk_create users", server("POST /users/import", 201))
    assert any(parent_id(s) == span_id(bulk) for s in cap.spans)  # the INSERT of the bulk
    join = server(f"POST /users/{user_id}/teams", 200)
    under("relation_add userteamsthrough", join)
    under("save teams", join)  # get_or_create
    under("update users", server("POST /users/reset-karma", 200))
    under("delete users", server(f"DELETE /users/{user_id}", 204))

    events = cap.audit_events
    assert [(e["operation"], e["outcome"]) for e in events] == [
        ("save", "ok"),
        ("save", "error"),
        ("bulk_create", "ok"),
        ("update", "ok"),
        ("save", "ok"),
        ("relation_add", "ok"),
        ("update", "ok"),
        ("delete", "ok"),
    ]
    assert events[0]["actor"] == "alice" and events[-1]["actor"] == "bob" and events[5]["actor"] == "bob"
    assert events[1]["error_type"] == "IntegrityError"

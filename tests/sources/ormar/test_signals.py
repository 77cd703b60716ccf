"""Every ormar signal, on SQLite and PostgreSQL: spans, parenting, audit events, failures."""

from __future__ import annotations

import contextvars
import gc
from typing import Any

import ormar
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import StatusCode
from ormar.exceptions import ModelPersistenceError
from sqlalchemy.exc import IntegrityError

import sigtrace
from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.sources.ormar import trace_custom_signal, trace_custom_signals
from sigtrace.testing import Capture, capture
from tests.sources.async_orm import attrs, children, hex_id, parent_of, span_id, spans_of
from tests.sources.ormar.models import Models


@pytest.fixture
def cap() -> Any:
    with capture(sources=["ormar"]) as cap:
        yield cap


def audit_of(cap: Capture, span: Any) -> dict[str, Any]:
    (event,) = cap.audit_for(span)
    return event


async def test_save_update_delete_spans_and_audit(cap: Capture, make_models: Any, db_url: str) -> None:
    m: Models = await make_models()  # defined after install
    tracer = cap.tracer_provider.get_tracer("test")
    with sigtrace.actor("alice"), tracer.start_as_current_span("request") as request:
        artist = await m.Artist(name="Nina").save()
        artist.name = "Nina S."
        await artist.update()
        await artist.update(name="Nina Simone")
        await artist.delete()
    save = cap.span("save artists")
    updates = cap.spans_named("update artists")
    delete = cap.span("delete artists")
    assert len(updates) == 2
    for span in (save, *updates, delete):
        assert parent_of(span) == request.get_span_context().span_id
        assert attrs(span)[semconv.SIGTRACE_PK] == str(artist.pk)
        assert attrs(span)[semconv.DB_COLLECTION_NAME] == "artists"
        assert attrs(span)[semconv.SIGTRACE_MODEL] == "Artist"
        assert attrs(span)[semconv.DB_SYSTEM_NAME] == ("postgresql" if "postgresql" in db_url else "sqlite")
        event = audit_of(cap, span)
        assert event["outcome"] == "ok" and event["actor"] == "alice" and event["pk"] == str(artist.pk)
    if "postgresql" in db_url:
        assert attrs(save)[semconv.DB_NAMESPACE] == "sigtrace_ormar"
    assert attrs(save)[semconv.SIGTRACE_SIGNAL] == "post_save"
    assert attrs(delete)[semconv.SIGTRACE_SIGNAL] == "post_delete"
    first, second = (audit_of(cap, s) for s in updates)
    # ormar tracks attribute sets only for models with onupdate fields: it writes every column.
    assert first["changed_fields"] == ["name"] and first["changed_fields_inferred"] is True
    assert second["changed_fields"] == ["name"] and "changed_fields_inferred" not in second
    assert "changed_fields" not in audit_of(cap, save)
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_models_defined_before_install(make_models: Any) -> None:
    m: Models = await make_models()
    with capture(sources=["ormar"]) as cap:
        await m.Tag(name="jazz").save()
        assert len(cap.spans_named("save tags")) == 1


async def test_abstract_base_and_proxy_model_without_duplicates(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    seen: list[str] = []

    async def on_album_pre_save(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(sender.__name__)

    m.Album.ormar_config.signals.pre_save.connect(on_album_pre_save)
    track = await m.Track(title="So What").save()
    special = await m.SpecialAlbum(name="Kind of Blue").save()
    await special.update(play_count=3)
    # emit_parent_signals still reaches the parent's receivers...
    assert seen == ["Album"]
    # ...but each operation is traced once, under the proxy model's name.
    (save,) = cap.spans_named("save albums")
    assert attrs(save)[semconv.SIGTRACE_MODEL] == "SpecialAlbum"
    assert attrs(save)[semconv.SIGTRACE_PK] == str(special.pk)
    assert len(cap.spans_named("update albums")) == 1
    assert attrs(cap.span("save tracks"))[semconv.SIGTRACE_PK] == str(track.pk)
    assert len(cap.audit_events) == 3


async def test_many_to_many_add_and_remove(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    album = await m.Album(name="Blue Train").save()
    tag = await m.Tag(name="hard bop").save()
    cap.clear()
    tracer = cap.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        await album.tags.add(tag)
        await album.tags.remove(tag)
    add = cap.span("relation_add albums_tags")
    remove = cap.span("relation_remove albums_tags")
    for span, signal in ((add, "post_relation_add"), (remove, "post_relation_remove")):
        assert parent_of(span) == request.get_span_context().span_id
        a = attrs(span)
        assert a[semconv.SIGTRACE_RELATION_NAME] == "tags" and a[semconv.SIGTRACE_RELATION_MODEL] == "Tag"
        assert a[semconv.SIGTRACE_RELATION_PK] == str(tag.pk)
        assert a[semconv.SIGTRACE_PK] == str(album.pk) and a[semconv.SIGTRACE_SIGNAL] == signal
        event = audit_of(cap, span)
        assert (event["model"], event["pk"]) == ("Album", str(album.pk))
        assert (event["related_model"], event["related_pks"], event["relation"]) == ("Tag", [str(tag.pk)], "tags")
    # The through model's save and delete nest under the relation spans.
    (through_save,) = [s for s in children(cap, add) if s.name.startswith("save ")]
    assert attrs(through_save)[semconv.SIGTRACE_MODEL] == "AlbumTag"
    through_delete = [s.name for s in children(cap, remove) if s.name.startswith("delete ")]
    assert through_delete == [through_save.name.replace("save", "delete")]


async def test_many_to_many_clear_names_the_through_table(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    album = await m.Album(name="Moanin'").save()
    for name in ("bop", "soul"):
        await album.tags.add(await m.Tag(name=name).save())
    cap.clear()
    rows = await album.tags.clear()
    clear = cap.span("relation_clear albums_tags")
    a = attrs(clear)
    assert a[semconv.DB_COLLECTION_NAME] == "albums_tags" and a[semconv.SIGTRACE_MODEL] == "Album"
    assert a[semconv.SIGTRACE_PK] == str(album.pk) and a[semconv.SIGTRACE_ROWS_AFFECTED] == rows == 2
    event = audit_of(cap, clear)
    assert (event["model"], event["pk"], event["collection"]) == ("Album", str(album.pk), "albums_tags")
    assert (event["relation"], event["related_model"], event["rows"]) == ("tags", "Tag", 2)
    assert "related_pks" not in event  # which rows, the DELETE does not say
    (delete,) = children(cap, clear)
    assert delete.name == "delete albums_tags" and audit_of(cap, delete)["rows"] == 2


async def test_reverse_foreign_key_add_remove_and_clear(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    artist = await m.Artist(name="Coltrane").save()
    album = await m.Album(name="Giant Steps").save()
    cap.clear()
    await artist.albums.add(album)
    add = cap.span("relation_add albums")
    (child_update,) = children(cap, add)
    assert child_update.name == "update albums" and attrs(child_update)[semconv.SIGTRACE_PK] == str(album.pk)
    assert audit_of(cap, add)["related_pks"] == [str(album.pk)]
    await artist.albums.remove(album)
    remove = cap.span("relation_remove albums")
    assert [s.name for s in children(cap, remove)] == ["update albums"]
    await artist.albums.add(album)
    await artist.albums.clear()
    clear = cap.span("relation_clear albums")
    (bulk,) = children(cap, clear)
    assert bulk.name == "update albums"
    assert audit_of(cap, clear)["relation"] == "albums"
    assert audit_of(cap, bulk)["rows"] == 1
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_bulk_and_queryset_writes_are_audited(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    await m.Album.objects.bulk_create([m.Album(name=f"a{i}") for i in range(3)])
    created = cap.span("bulk_create albums")
    assert attrs(created)[semconv.DB_OPERATION_BATCH_SIZE] == 3
    assert audit_of(cap, created)["batch_size"] == 3

    albums = await m.Album.objects.all()
    for album in albums:
        album.play_count = 7
    await m.Album.objects.bulk_update(albums, columns=["play_count"])
    bulk = cap.span("bulk_update albums")
    assert attrs(bulk)[semconv.SIGTRACE_SIGNAL] == "post_bulk_update"
    event = audit_of(cap, bulk)
    assert event["pks"] == [str(a.pk) for a in albums] and event["changed_fields"] == ["play_count"]

    rows = await m.Album.objects.filter(name="a1").update(play_count=9)
    update = cap.span("update albums")
    event = audit_of(cap, update)
    assert rows == 1 and event["rows"] == 1 and event["changed_fields"] == ["play_count"]
    assert "albums.name" in event["filter"] and "a1" not in event["filter"]

    deleted = await m.Album.objects.delete(name="a2")
    delete = cap.span("delete albums")
    assert deleted == 1 and audit_of(cap, delete)["rows"] == 1
    await m.Album.objects.delete(each=True)
    assert len(cap.spans_named("delete albums")) == 2
    assert len(cap.audit_events) == 5


async def test_integrity_error_is_an_error_span_at_once(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    await m.Artist(name="Monk").save()
    with pytest.raises(IntegrityError):
        await m.Artist(name="Monk").save()
    (failed,) = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
    assert failed.name == "save artists" and attrs(failed)[semconv.ERROR_TYPE] == "IntegrityError"
    assert audit_of(cap, failed)["outcome"] == "error"
    assert cap.installation is not None and cap.installation.in_flight() == 0


@pytest.mark.parametrize("when", ["pre_save", "post_save"])
async def test_user_receiver_raising_fails_the_operation(cap: Capture, make_models: Any, when: str) -> None:
    m: Models = await make_models()

    async def refuse(sender: Any, instance: Any, **kwargs: Any) -> None:
        raise PermissionError("refused")

    getattr(m.Tag.ormar_config.signals, when).connect(refuse)
    with pytest.raises(PermissionError):
        await m.Tag(name="x").save()
    (span,) = cap.spans_named("save tags")
    assert span.status.status_code == StatusCode.ERROR and attrs(span)[semconv.ERROR_TYPE] == "PermissionError"
    assert audit_of(cap, span)["outcome"] == "error"
    # pre: the insert was aborted; post: the row was committed before the receiver raised.
    assert await m.Tag.objects.count() == (0 if when == "pre_save" else 1)
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_a_post_signal_without_receivers_reports_what_one_with_a_receiver_does(
    cap: Capture, make_models: Any
) -> None:
    """Without receivers, a built-in post signal ends its operation as ormar sends it (no coroutine of sigtrace's
    around an empty gather): the same spans and audit events as with a receiver that does nothing."""
    m: Models = await make_models()

    async def nothing(sender: Any, instance: Any, **kwargs: Any) -> None:
        return None

    async def writes() -> None:
        tag = await m.Tag(name="a").save()
        tag.name = "b"
        await tag.update()
        await tag.delete()

    def shape(span: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
        attributes = {k: v for k, v in attrs(span).items() if k != semconv.SIGTRACE_PK}
        varying = ("timestamp", "duration_ms", "trace_id", "span_id", "pk", "seq", "stream")
        event = {k: v for k, v in audit_of(cap, span).items() if k not in varying}
        return span.name, attributes, event

    await writes()
    signals = [getattr(m.Tag.ormar_config.signals, name) for name in ("post_save", "post_update", "post_delete")]
    for signal in signals:
        signal.connect(nothing)
    try:
        await writes()
    finally:
        for signal in signals:
            signal.disconnect(nothing)
    spans = [shape(span) for span in spans_of(cap, "ormar")]
    assert len(spans) == 6
    assert spans[:3] == spans[3:]
    assert [(name, a[semconv.SIGTRACE_SIGNAL], e["outcome"]) for name, a, e in spans[:3]] == [
        ("save tags", "post_save", "ok"),
        ("update tags", "post_update", "ok"),
        ("delete tags", "post_delete", "ok"),
    ]
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_update_of_unsaved_model_fails_without_a_signal(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    with pytest.raises(ModelPersistenceError):
        await m.Tag(name="x").update()
    (span,) = cap.spans_named("update tags")
    assert attrs(span)[semconv.ERROR_TYPE] == "ModelPersistenceError"
    # The span started with the post signal it expected (post_update); none came: it says the last one.
    assert attrs(span)[semconv.SIGTRACE_SIGNAL] == "pre_update"
    assert audit_of(cap, span)["signal"] == "pre_update"


def test_a_signal_name_is_forgotten_with_its_signal(cap: Capture) -> None:
    """Names are kept by ``id(signal)``: the entry goes with the signal, before its id can be reused."""
    assert cap.installation is not None
    source: Any = cap.installation.sources["ormar"]
    signal = ormar.signals.Signal()
    ident = id(signal)
    source._remember_signal(signal, "pre_save")
    assert source._signal_names.get(ident) == "pre_save"
    del signal
    gc.collect()
    assert ident not in source._signal_names
    assert ident not in source._signal_refs


async def test_sigtrace_errors_never_reach_save(
    cap: Capture, make_models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    m: Models = await make_models()
    assert cap.installation is not None
    engine = cap.installation.engine

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("sigtrace bug")

    monkeypatch.setattr(engine, "begin", broken)
    monkeypatch.setattr(engine, "end", broken)
    with safety.strict(False):
        tag = await m.Tag(name="safe").save()
        await tag.update(name="safer")
        await tag.delete()
    assert await m.Tag.objects.count() == 0
    assert len(spans_of(cap, "ormar")) == 3  # the entry scopes still report each call


async def test_user_receivers_keep_working_and_may_set_context(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("user_var", default="unset")
    calls: list[tuple[str, Any]] = []

    async def pre(sender: Any, instance: Any, **kwargs: Any) -> None:
        var.set("in-receiver")  # a receiver's own task: never visible to the caller
        calls.append(("pre", instance.pk))

    async def post(sender: Any, instance: Any, **kwargs: Any) -> None:
        calls.append(("post", instance.pk))

    m.Tag.ormar_config.signals.pre_save.connect(pre)
    m.Tag.ormar_config.signals.post_save.connect(post)
    tag = await m.Tag(name="ok").save()
    assert calls == [("pre", None), ("post", tag.pk)]
    assert var.get() == "unset"
    assert len(cap.spans_named("save tags")) == 1


async def test_suppressed_and_excluded_operations_are_not_traced(make_models: Any) -> None:
    m: Models = await make_models()
    with capture(sources=["ormar"], exclude=["model:Tag"]) as cap:
        with suppress_instrumentation():
            await m.Artist(name="quiet").save()
        await m.Tag(name="excluded").save()
        await m.Artist(name="loud").save()
        assert [s.name for s in cap.spans] == ["save artists"]
        assert len(cap.audit_events) == 1


async def test_custom_signals_when_asked(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    single = trace_custom_signal("album_published", models=[m.Album])
    pair = trace_custom_signals("pre_archive", "post_archive")
    try:
        tracer = cap.tracer_provider.get_tracer("test")
        album = await m.Album(name="Mingus Ah Um").save()
        signals = m.Album.ormar_config.signals
        with tracer.start_as_current_span("request"):
            await signals.album_published.send(sender=m.Album, instance=album)
            await signals.not_traced.send(sender=m.Album, instance=album)
            await signals.pre_archive.send(sender=m.Album, instance=album)
            await signals.post_archive.send(sender=m.Album, instance=album)
        request = cap.span("request")
        assert [e.name for e in request.events] == ["album_published"]
        archive = cap.span("archive albums")
        assert parent_of(archive) == span_id(request)
        ops = [e["operation"] for e in cap.audit_events]
        assert ops == ["save", "album_published", "archive"]
        assert cap.audit_events[1]["span_id"] == hex_id(request)
        # A model the single signal was not declared for is ignored.
        await m.Tag.ormar_config.signals.album_published.send(sender=m.Tag)
        assert len(cap.audit_events) == 3
    finally:
        single.untrace()
        pair.untrace()
    await m.Album.ormar_config.signals.album_published.send(sender=m.Album)
    assert len(cap.audit_events) == 3
    with pytest.raises(ValueError, match="own signals"):
        trace_custom_signal("pre_save")


async def test_values_are_captured_only_on_request_and_redacted(make_models: Any) -> None:
    m: Models = await make_models()
    with capture(sources=["ormar"], capture_values=True) as cap:
        album = await m.Album(name="Ella").save()
        await album.update(name="Ella & Louis", play_count=2)
        event = audit_of(cap, cap.span("update albums"))
        assert event["changed_fields"] == ["name", "play_count"]
        assert event["values"] == {"name": "Ella & Louis", "play_count": 2}


async def test_update_signals_sent_by_hand_are_an_operation_of_their_own(cap: Capture, make_models: Any) -> None:
    # Outside Model.update() no entry scope waits for the pre signal: it starts the operation itself.
    m: Models = await make_models()
    artist = await m.Artist(name="Nina").save()
    signals = m.Artist.ormar_config.signals
    await signals.pre_update.send(sender=m.Artist, instance=artist, passed_args={"name": "Nina S."})
    await signals.post_update.send(sender=m.Artist, instance=artist)
    span = cap.span("update artists")
    assert attrs(span)[semconv.SIGTRACE_SIGNAL] == "post_update"
    assert attrs(span)[semconv.SIGTRACE_PK] == str(artist.pk)
    event = audit_of(cap, span)
    assert event["changed_fields"] == ["name"] and "changed_fields_inferred" not in event


async def test_inferred_fields_stay_right_when_a_relation_is_declared_later(cap: Capture, make_models: Any) -> None:
    # The written columns are cached per model: the reverse side ormar adds later is no column.
    m: Models = await make_models()
    artist = await m.Artist(name="Nina").save()
    await artist.update()

    class Poster(ormar.Model):
        ormar_config = m.Artist.ormar_config.copy(tablename="posters")
        id: int = ormar.Integer(primary_key=True)
        artist: m.Artist | None = ormar.ForeignKey(m.Artist, nullable=True)  # type: ignore[name-defined]

    await artist.update()
    first, second = (audit_of(cap, span) for span in cap.spans_named("update artists"))
    assert first["changed_fields"] == second["changed_fields"] == ["name"]
    assert "posters" in m.Artist.ormar_config.model_fields

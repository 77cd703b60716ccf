"""The audit log as a system of record: seq, stream, hash chain and checkpoints, and ``sigtrace audit verify``.

Every file here is written by sigtrace's own writer through real operations (the blinker source)
or the writer itself; the tampered copies are made the way an attacker would: by editing bytes.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from blinker import Namespace
from opentelemetry.sdk.trace import TracerProvider

import sigtrace
from sigtrace._config import ConfigError, resolve_options
from sigtrace.cli import main
from sigtrace.sinks import audit
from sigtrace.sinks.audit import JsonLinesWriter
from sigtrace.sinks.chain import CHECKPOINT_EVENT, STREAM_EVENT, checkpoint_mac
from sigtrace.testing import capture
from sigtrace.verify import verify

KEY = b"the audit key"


class Item:
    def __init__(self, pk: int) -> None:
        self.pk = pk


@pytest.fixture
def signals() -> Iterator[tuple[Any, Any]]:
    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    pair = sigtrace.trace_signals(pre, post, collection="orders")
    yield pre, post
    pair.untrace()


def save(signals: tuple[Any, Any], pk: int) -> None:
    pre, post = signals
    item = Item(pk)
    pre.send(item)
    post.send(item)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def events_of(path: Path) -> list[dict[str, Any]]:
    return [line for line in lines_of(path) if line["event"] == "sigtrace.audit"]


def write_log(path: Path, n: int, *, key: bytes | None = KEY, every: int = 5) -> list[bytes]:
    writer = JsonLinesWriter(str(path), service_name="orders", key=key, checkpoint_lines=every)
    for i in range(n):
        writer(
            {
                "timestamp": "2026-12-01T00:00:00.000000+00:00",
                "operation": "save",
                "pk": str(i),
                "event": "sigtrace.audit",
            }
        )
    writer.close()
    return path.read_bytes().splitlines(keepends=True)


def verify_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["audit", "verify", *args])
    return status, capsys.readouterr().out


def rechain(lines: list[bytes], start: int, forge_key: bytes | None = None) -> list[bytes]:
    """What an attacker without the key does after an edit: recompute every prev from ``start`` on
    (and, with ``forge_key``, every checkpoint MAC with a key of their own)."""
    out = list(lines[:start])
    head = hashlib.sha256(out[-1].rstrip(b"\n")).hexdigest()
    for raw in lines[start:]:
        fields = json.loads(raw)
        fields["prev"] = head
        if fields["event"] == CHECKPOINT_EVENT and forge_key is not None:
            fields["mac"] = checkpoint_mac(forge_key, fields["stream"], fields["last_seq"], head)
        line = json.dumps(fields).encode()
        out.append(line + b"\n")
        head = hashlib.sha256(line).hexdigest()
    return out


# --- the line format ---------------------------------------------------------------------------


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_an_event_line_is_what_structlogs_json_renderer_writes_with_seq_stream_prev_first() -> None:
    buffer = io.StringIO()
    writer = JsonLinesWriter(buffer, service_name="orders", key=KEY, checkpoint_lines=1)
    event = {"timestamp": "t", "operation": "save", "pk": "é\n", "values": {"n": Opaque()}, "event": "sigtrace.audit"}
    writer(dict(event))
    header, line, checkpoint = buffer.getvalue().splitlines()
    render = structlog.processors.JSONRenderer()
    prev = hashlib.sha256(header.encode()).hexdigest()
    assert line == render(None, "info", {"seq": 1, "stream": writer.stream, "prev": prev, **event})
    assert list(json.loads(line))[:3] == ["seq", "stream", "prev"]
    for control in (header, checkpoint):  # the record's own lines are rendered the same way
        assert control == render(None, "info", json.loads(control))
    head = json.loads(header)
    assert head["event"] == STREAM_EVENT and head["prev"] is None and head["last_seq"] == 0
    assert head["stream"] == writer.stream and head["service_name"] == "orders" and head["pid"] == os.getpid()
    mark = json.loads(checkpoint)
    assert mark["event"] == CHECKPOINT_EVENT and mark["prev"] == hashlib.sha256(line.encode()).hexdigest()
    assert mark["mac"] == checkpoint_mac(KEY, writer.stream, 1, mark["prev"])


def test_a_failed_write_shows_as_a_gap(tmp_path: Path) -> None:
    """A full disk (the real ENOSPC of /dev/full) loses the line: its seq is not reused, so verify sees it."""
    path = tmp_path / "audit.jsonl"
    writer = JsonLinesWriter(str(path))
    writer({"pk": "1", "event": "sigtrace.audit"})
    owned = writer._owned
    assert owned is not None
    kept, owned._file = owned._file, open("/dev/full", "ab", buffering=0)  # noqa: SIM115
    with pytest.raises(OSError):
        writer({"pk": "2", "event": "sigtrace.audit"})
    assert not writer._lock.locked()  # released on the failing path too (acquire/release, not with)
    owned._file.close()
    owned._file = kept
    writer({"pk": "3", "event": "sigtrace.audit"})
    writer.close()
    (result,) = verify([str(path)]).streams.values()
    assert result.broken is not None and (result.broken.kind, result.broken.line) == ("gap", 3)
    assert "seq 3 where seq 2 was due (1 line missing)" in result.broken.detail


def test_otlp_log_records_carry_seq_and_stream(tmp_path: Path, signals: Any) -> None:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    path = tmp_path / "audit.jsonl"
    with capture(sources=["blinker"], audit=True, audit_file=str(path), logger_provider=provider):
        save(signals, 1)
        save(signals, 2)
    records = [data.log_record.attributes or {} for data in exporter.get_finished_logs()]
    assert [(r["seq"], r["stream"]) for r in records] == [(e["seq"], e["stream"]) for e in events_of(path)]
    assert "prev" not in records[0]


def test_seq_and_stream_reach_the_other_outputs_with_the_values_of_the_file(tmp_path: Path, signals: Any) -> None:
    path = tmp_path / "audit.jsonl"
    with capture(sources=["blinker"], audit_file=str(path)) as cap:
        for pk in range(3):
            save(signals, pk)
        cap.settle()
        delivered = [(e["seq"], e["stream"]) for e in cap.audit_events]
    assert delivered == [(e["seq"], e["stream"]) for e in events_of(path)] and [s for s, _ in delivered] == [1, 2, 3]


# --- verify: intact and tampered copies ---------------------------------------------------------


def test_verify_an_intact_file_with_and_without_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 23)
    status, out = verify_cli(capsys, str(path))
    assert status == 0, out
    assert ": ok: 29 lines, 23 events, seq 1..23" in out and "checkpoints not checked" in out
    status, out = verify_cli(capsys, "--key", KEY.decode(), str(path))
    assert status == 0, out
    assert "5 checkpoints verified" in out and "not checked" not in out


@pytest.mark.parametrize(
    ("tamper", "kind", "line"),
    [
        (lambda ls: ls[:5] + ls[6:], "gap", 6),  # seq 5 (line 6) deleted: line 6 now holds seq 6
        (lambda ls: [*ls[:5], ls[5].replace(b'"pk": "4"', b'"pk": "X"'), *ls[6:]], "changed", 6),
        (lambda ls: [*ls[:4], ls[5], ls[4], *ls[6:]], "reordered", 5),  # seq 4 and 5 swapped
        (lambda ls: [*ls[:9], ls[9][:40]], "truncated", 10),  # cut in the middle of line 10
    ],
    ids=["line deleted", "line edited", "lines swapped", "truncated mid-line"],
)
def test_verify_reports_the_first_break_with_its_kind_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: Any, kind: str, line: int
) -> None:
    lines = write_log(tmp_path / "audit.jsonl", 12, key=None)
    copy = tmp_path / "tampered.jsonl"
    copy.write_bytes(b"".join(tamper(lines)))
    status, out = verify_cli(capsys, str(copy))
    assert status == 1
    assert f"{copy}:{line}: {kind}: " in out, out
    report = verify([str(copy)])
    (result,) = report.streams.values()
    assert result.broken is not None and (result.broken.kind, result.broken.line) == (kind, line)


def test_a_checkpoint_forged_without_the_key_is_detected_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = write_log(tmp_path / "audit.jsonl", 12, every=5)
    assert json.loads(lines[6])["event"] == CHECKPOINT_EVENT and json.loads(lines[12])["event"] == CHECKPOINT_EVENT
    edited = [*lines[:3], lines[3].replace(b'"pk": "2"', b'"pk": "X"'), *lines[4:]]
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"".join(rechain(edited, 4, forge_key=b"a guess")))
    # Without the key the recomputed chain looks intact: that is what the key is for (docs/audit.md).
    status, out = verify_cli(capsys, str(forged))
    assert status == 0 and "checkpoints not checked" in out
    status, out = verify_cli(capsys, "--key", KEY.decode(), str(forged))
    assert status == 1 and f"{forged}:7: bad checkpoint: " in out, out
    # Checkpoints removed altogether: the stream's header still says they are due.
    stripped = tmp_path / "stripped.jsonl"
    kept = [line for line in edited if json.loads(line)["event"] != CHECKPOINT_EVENT]
    stripped.write_bytes(b"".join(rechain(kept, 4)))
    status, out = verify_cli(capsys, "--key", KEY.decode(), str(stripped))
    assert status == 1 and "bad checkpoint: 12 events after the last checkpoint" in out, out


def test_with_a_key_a_stream_written_without_one_does_not_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3, key=None)
    status, out = verify_cli(capsys, "--key", KEY.decode(), str(path))
    assert status == 1 and "bad checkpoint: the stream was written without a key" in out
    monkey_env = {"SIGTRACE_AUDIT_KEY": KEY.decode()}
    keyed = tmp_path / "keyed.jsonl"
    write_log(keyed, 3)
    old = os.environ.get("SIGTRACE_AUDIT_KEY")
    os.environ.update(monkey_env)
    try:
        status, out = verify_cli(capsys, str(keyed))  # the key from the environment
    finally:
        if old is None:
            del os.environ["SIGTRACE_AUDIT_KEY"]
        else:
            os.environ["SIGTRACE_AUDIT_KEY"] = old
    assert status == 0 and "1 checkpoints verified" in out, out


# --- rotation -----------------------------------------------------------------------------------


def test_a_rotated_set_verifies_and_one_with_a_missing_middle_file_does_not(
    tmp_path: Path, signals: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(audit._ReopeningFile, "check_interval", 0.0)
    path = tmp_path / "audit.jsonl"
    with capture(sources=["blinker"], audit=True, audit_file=str(path), audit_key=KEY, audit_checkpoint_lines=4):
        for pk in range(1, 31):
            save(signals, pk)
            if pk in (10, 20):  # logrotate "create": move away, then compress the older one
                if (tmp_path / "audit.jsonl.1").exists():
                    (tmp_path / "audit.jsonl.1").rename(tmp_path / "audit.jsonl.2")
                path.rename(tmp_path / "audit.jsonl.1")
    with open(tmp_path / "audit.jsonl.2", "rb") as src, gzip.open(tmp_path / "audit.jsonl.2.gz", "wb") as dst:
        dst.write(src.read())
    os.remove(tmp_path / "audit.jsonl.2")
    oldest, middle, newest = (str(tmp_path / name) for name in ("audit.jsonl.2.gz", "audit.jsonl.1", "audit.jsonl"))
    assert [e["seq"] for e in events_of(tmp_path / "audit.jsonl.1")] == list(range(11, 21))
    status, out = verify_cli(capsys, "--key", KEY.decode(), oldest, middle, newest)
    assert status == 0, out
    assert "ok: " in out and "30 events, seq 1..30" in out and "note" not in out
    status, out = verify_cli(capsys, "--key", KEY.decode(), oldest, newest)
    assert status == 1 and f"{newest}:1: gap: header after seq 20" in out, out
    status, out = verify_cli(capsys, "--key", KEY.decode(), newest)  # the newest alone: ok, from mid-stream
    assert status == 0 and "10 events, seq 21..30" in out and "starts mid-stream after seq 20" in out, out
    status, out = verify_cli(capsys, newest, middle, oldest)  # given newest first
    assert status == 1 and "reordered" in out, out


def test_copytruncate_keeps_the_chain_across_the_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit._ReopeningFile, "check_interval", 0.0)
    path, copy = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    writer = JsonLinesWriter(str(path))
    for pk in range(5):
        writer({"pk": str(pk), "event": "sigtrace.audit"})
    copy.write_bytes(path.read_bytes())  # logrotate copytruncate: copy, then truncate in place
    with open(path, "r+b") as file:
        file.truncate(0)
    for pk in range(5, 8):
        writer({"pk": str(pk), "event": "sigtrace.audit"})
    writer.close()
    assert lines_of(path)[0]["event"] == STREAM_EVENT and lines_of(path)[0]["reason"] == "truncated"
    report = verify([str(copy), str(path)])
    (result,) = report.streams.values()
    assert report.ok and (result.first_seq, result.last_seq, result.events) == (1, 8, 8)


# --- concurrency and processes ------------------------------------------------------------------


def test_seq_stays_contiguous_under_8_threads_of_10000_operations(tmp_path: Path, signals: Any) -> None:
    path = tmp_path / "audit.jsonl"
    sigtrace.install(sources=["blinker"], tracer_provider=TracerProvider(), metrics=False, audit_file=str(path))
    try:
        barrier = threading.Barrier(8)

        def worker(offset: int) -> None:
            barrier.wait()
            for i in range(10_000):
                save(signals, offset + i)

        threads = [threading.Thread(target=worker, args=(n * 100_000,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sigtrace.uninstall()
    events = events_of(path)
    assert [e["seq"] for e in events] == list(range(1, 80_001))
    assert len({e["span_id"] for e in events}) == 80_000  # 80,000 operations, one line each
    assert verify([str(path)]).ok


def test_seq_stays_contiguous_under_1000_asyncio_tasks(tmp_path: Path) -> None:
    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    pair = sigtrace.trace_signals(pre, post, collection="orders", asynchronous=True)
    path = tmp_path / "audit.jsonl"

    async def task(pk: int) -> None:
        item = Item(pk)
        await pre.send_async(item)
        await asyncio.sleep(0)  # every task's operation is in flight at once
        await post.send_async(item)

    async def run() -> None:
        await asyncio.gather(*(task(pk) for pk in range(1000)))

    try:
        with capture(sources=["blinker"], audit_file=str(path)) as cap:
            asyncio.run(run())
            cap.settle()
            assert sorted(e["seq"] for e in cap.audit_events) == list(range(1, 1001))
    finally:
        pair.untrace()
    events = events_of(path)
    assert [e["seq"] for e in events] == list(range(1, 1001)) and len({e["span_id"] for e in events}) == 1000
    assert verify([str(path)]).ok


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_writes_a_stream_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = JsonLinesWriter(str(path), service_name="orders")
    writer({"pk": "parent-1", "event": "sigtrace.audit"})
    pid = os.fork()
    if pid == 0:  # the child: two lines, then out without running the parent's cleanup
        try:
            writer({"pk": "child-1", "event": "sigtrace.audit"})
            writer({"pk": "child-2", "event": "sigtrace.audit"})
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    writer({"pk": "parent-2", "event": "sigtrace.audit"})
    writer.close()
    report = verify([str(path)])
    assert report.ok and len(report.streams) == 2
    by_stream: dict[str, list[tuple[int, str]]] = {}
    for line in events_of(path):
        by_stream.setdefault(line["stream"], []).append((line["seq"], line["pk"]))
    assert sorted(by_stream.values()) == [[(1, "child-1"), (2, "child-2")], [(1, "parent-1"), (2, "parent-2")]]
    headers = [line for line in lines_of(path) if line["event"] == STREAM_EVENT]
    assert sorted(h["reason"] for h in headers) == ["fork", "start"]


# --- checkpoints in time, durability ------------------------------------------------------------


def test_a_checkpoint_comes_after_checkpoint_seconds_even_when_no_more_lines_come(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = JsonLinesWriter(str(path), key=KEY, checkpoint_lines=1000, checkpoint_seconds=0.2)
    try:
        writer({"pk": "1", "event": "sigtrace.audit"})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e["event"] == CHECKPOINT_EVENT for e in lines_of(path)):
            time.sleep(0.05)
        assert [e["event"] for e in lines_of(path)] == [STREAM_EVENT, "sigtrace.audit", CHECKPOINT_EVENT]
        report = verify([str(path)], KEY)
        assert report.ok and report.streams[writer.stream].checkpoints == 1
    finally:
        writer.close()


def test_fsync_durability_syncs_every_line_in_shared_group_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:  # a spy around the real call: what it covered, once it completed
        size = os.fstat(fd).st_size
        real_fsync(fd)
        synced.append(size)

    monkeypatch.setattr(audit.os, "fsync", counting_fsync)
    writer = JsonLinesWriter(str(path), durability="fsync")
    late: list[str] = []

    def worker(n: int) -> None:
        for i in range(200):
            writer({"pk": f"{n}-{i}", "event": "sigtrace.audit"})
            data = path.read_bytes()
            end = data.index(b"\n", data.index(f'"pk": "{n}-{i}"'.encode())) + 1
            if max(synced, default=0) < end:  # returned before an fsync covered the line
                late.append(f"{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert late == []
    assert len(events_of(path)) == 800 and verify([str(path)]).ok
    assert 0 < len(synced) < 800  # group commit: fewer fsyncs than lines
    assert max(synced) == path.stat().st_size


# --- options ------------------------------------------------------------------------------------


def test_audit_options_from_keywords_and_environment() -> None:
    options = resolve_options(
        {"audit_durability": "fsync"},
        {
            "SIGTRACE_AUDIT_KEY": "s3cr3t",
            "SIGTRACE_AUDIT_CHECKPOINT_LINES": "50",
            "SIGTRACE_AUDIT_CHECKPOINT_SECONDS": "5",
        },
    )
    assert (options.audit_key, options.audit_checkpoint_lines, options.audit_checkpoint_seconds) == (b"s3cr3t", 50, 5.0)
    assert options.audit_durability == "fsync" and "s3cr3t" not in repr(options)
    with pytest.raises(ConfigError, match="audit_durability='sometimes'"):
        resolve_options({"audit_durability": "sometimes"}, {})
    with pytest.raises(ConfigError, match="SIGTRACE_AUDIT_CHECKPOINT_LINES='many'"):
        resolve_options({}, {"SIGTRACE_AUDIT_CHECKPOINT_LINES": "many"})
    with pytest.raises(ConfigError, match="audit_checkpoint_seconds=0"):
        resolve_options({"audit_checkpoint_seconds": 0}, {})
    with pytest.raises(ConfigError, match="audit_key: expected a non-empty") as caught:
        resolve_options({"audit_key": 1234}, {})
    assert "1234" not in str(caught.value)


def test_sort_verifies_an_export_whose_lines_came_back_in_another_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    first = JsonLinesWriter(str(path), key=KEY, checkpoint_lines=4)
    second = JsonLinesWriter(str(path), key=KEY, checkpoint_lines=4)  # a second process on the same file
    for i in range(10):
        for writer in (first, second):
            writer({"pk": str(i), "event": "sigtrace.audit"})
    first.close()
    second.close()
    lines = path.read_bytes().splitlines(keepends=True)
    shuffled = [lines[i] for i in random.Random(7).sample(range(len(lines)), len(lines))]
    export = tmp_path / "export.jsonl"
    export.write_bytes(b"".join(shuffled))
    status, out = verify_cli(capsys, "--key", KEY.decode(), str(export))
    assert status == 1 and "reordered" in out
    status, out = verify_cli(capsys, "--sort", "--key", KEY.decode(), str(export))
    assert status == 0 and out.count(": ok: 14 lines, 10 events, seq 1..10, 3 checkpoints verified") == 2, out
    seq5 = next(
        n for n, raw in enumerate(shuffled) if raw.startswith(f'{{"seq": 5, "stream": "{first.stream}"'.encode())
    )
    seq6 = next(
        n for n, raw in enumerate(shuffled) if raw.startswith(f'{{"seq": 6, "stream": "{first.stream}"'.encode())
    )
    export.write_bytes(b"".join(shuffled[:seq5] + shuffled[seq5 + 1 :]))
    status, out = verify_cli(capsys, "--sort", str(export))
    line_of_seq6 = seq6 + 1 - (seq6 > seq5)
    assert status == 1 and f"{export}:{line_of_seq6}: gap: seq 6 where seq 5 was due" in out, out


def test_verify_cli_key_file_and_an_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 6)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    status, out = verify_cli(capsys, "--key-file", str(key_file), str(path))
    assert status == 0 and "2 checkpoints verified" in out, out
    status, out = verify_cli(capsys, str(path), str(tmp_path / "nothing.jsonl"))
    assert status == 1 and "nothing.jsonl:0: unreadable: " in out
    with pytest.raises(SystemExit):
        main(["audit", "verify", "--help"])
    help_text = capsys.readouterr().out
    assert "oldest first" in help_text and "``" not in help_text and ":func:" not in help_text

"""Helpers of the reliability suites: an application in its own interpreter, a collector that hangs."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sigtrace.testing import audit_file_events

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).with_name("apps")


def app_env(endpoint: str | None, protocol: str, audit_file: Path, **extra: str) -> dict[str, str]:
    """An environment configuring sigtrace only through OTEL_* / SIGTRACE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "reliability-app",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "SIGTRACE_AUDIT_FILE": str(audit_file),
            "SIGTRACE_STRICT": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env.update(extra)
    return env


class App:
    """tests/reliability/apps/<name>.py in a child interpreter, driven by stdin lines, answering JSON lines."""

    def __init__(self, name: str, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(APPS / f"{name}.py"), *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.ready = self.read(timeout=60)

    def read(self, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                self.proc.kill()
                raise AssertionError(f"the application did not answer within {timeout}s: {self.stderr()}")
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"the application exited ({self.proc.wait()}): {self.stderr()}")
            if line.startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                return answer

    def ask(self, command: str, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def run(self, phase: str, count: int, timeout: float = 120) -> dict[str, Any]:
        """Run ``count`` operations; ``timeout`` is how long to wait for the answer (not a speed check)."""
        return self.ask(f"run {phase} {count}", timeout)

    def quit(self, timeout: float = 60) -> dict[str, Any]:
        t0 = time.monotonic()
        answer = self.ask("quit", timeout)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=timeout) == 0, self.stderr()
        answer["exit_s"] = time.monotonic() - t0
        return answer

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "<still running>"
        return self.proc.stderr.read()[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def app(name: str, env: dict[str, str], *args: str) -> Iterator[App]:
    handle = App(name, env, *args)
    try:
        yield handle
    finally:
        handle.close()


@contextlib.contextmanager
def hanging_collector() -> Iterator[str]:
    """A TCP listener on 127.0.0.1 that accepts every connection and never answers; yields its endpoint."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # read nothing, answer nothing

    thread = threading.Thread(target=accept, name="hanging-collector", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def audit_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return audit_file_events(path)  # the events: not the stream header and checkpoint lines

"""The station tests' helpers: a serve subprocess to watch, and the real peers it talks to.

mosquitto (Debian's package; .ci/setup installs it), pymodbus's own Modbus TCP server, a local HTTP
server. A missing one fails the test with the command that installs it; nothing is skipped silently.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

RUNTIME = str(Path(sys.executable).parent / "edgetl-runtime")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` every 20 ms until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def feed(images: list[Path], folder: Path, n: int, start: int = 0, every_s: float = 0.0) -> list[str]:
    """Write ``n`` parts into ``folder`` as a camera PC does: a dot-name first, then renamed into place."""
    names = []
    for i in range(start, start + n):
        src = images[i % len(images)]
        name = f"part{i:05d}-{src.parent.name}.png"
        tmp = folder / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, folder / name)
        names.append(name)
        if every_s:
            time.sleep(every_s)
    return names


class Station:
    """An ``edgetl-runtime serve`` subprocess and the means to watch it: its history, its status API."""

    def __init__(self, model: Path, workdir: Path, *args: str, http: bool = True, stdin: bool = False,
                 port: int | None = None):  # fmt: skip
        self.workdir, self.history = workdir, workdir / "history.sqlite"
        self.port = (port or free_port()) if http else None
        argv = [RUNTIME, "serve", str(model), "--history", str(self.history), *args]
        argv += ["--http", f"127.0.0.1:{self.port}"] if http else ["--no-http"]
        self.log = open(workdir / f"serve-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen(argv, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True)  # fmt: skip
        if http:
            wait_for(lambda: self.proc.poll() is not None or self._reachable(), 60, "the station's HTTP listener")
            assert self.proc.poll() is None, self.output()

    def _reachable(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=10) as reply:
            return json.loads(reply.read())

    def rows(self, where: str = "1") -> list[tuple]:
        if not self.history.exists():
            return []
        with sqlite3.connect(f"file:{self.history}?mode=ro", uri=True) as db:
            return db.execute(f"SELECT id, key, part_id, status, verdict FROM results WHERE {where} ORDER BY id").fetchall()

    def wait_rows(self, n: int, timeout: float = 60.0) -> list[tuple]:
        wait_for(lambda: len(self.rows()) >= n or self.proc.poll() is not None, timeout, f"{n} history rows")
        return self.rows()

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.flush()

    def output(self) -> str:
        self.log.flush()
        return "".join(p.read_text() for p in sorted(self.workdir.glob("serve-*.log")))


class Mosquitto:
    """A mosquitto broker on a free local port, with persistence, that a test can stop and start again."""

    def __init__(self, folder: Path):
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto is not installed: apt-get install mosquitto (.ci/setup installs it)")
        self.binary, self.port, self.folder = binary, free_port(), folder
        (folder / "data").mkdir(exist_ok=True)
        self.config = folder / "mosquitto.conf"
        # Started as root, mosquitto drops to its own user, which cannot write in a test's 0700 tmp folder: the
        # persistence the restart tests rely on (a subscriber's session, its queued messages) would silently fail.
        stay = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                               f"persistence_location {folder / 'data'}/\nautosave_interval 1\n{stay}")  # fmt: skip
        self.database = folder / "data" / "mosquitto.db"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: _listening(self.port), 10, "mosquitto to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Subscriber:
    """An MQTT client with a persistent session (QoS 1), collecting every message of a topic."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.messages: list[dict] = []
        self._lock = threading.Lock()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}", clean_session=False)
        client.on_connect = lambda c, u, f, r, p=None: c.subscribe(topic, qos=1)
        client.on_message = self._on_message
        client.reconnect_delay_set(0.2, 1)
        client.connect_async("127.0.0.1", port, keepalive=10)
        client.loop_start()
        self.client = client

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(json.loads(message.payload))

    def ids(self) -> set:
        with self._lock:
            return {m["id"] for m in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Receiver:
    """A local HTTP server taking JSON POSTs; the first ``fail_first`` requests get 500."""

    def __init__(self, fail_first: int = 0, port: int = 0):
        received, lock, counter = [], threading.Lock(), [0]

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    counter[0] += 1
                    failing = counter[0] <= fail_first
                    if not failing:
                        received.append(json.loads(body))
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.received, self.attempts = received, counter
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/parts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ModbusPlc:
    """pymodbus's own Modbus TCP server (its simulator device) in a thread, recording every coil and register write."""

    def __init__(self) -> None:
        import asyncio

        self.writes: list[tuple[str, int, Any, float]] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, daemon=True).start()
        wait_for(lambda: _listening(self.port), 10, "the Modbus server to listen")

    async def _action(self, function_code: int, start_address: int, address: int, count: int, registers: Any,
                      set_values: Any) -> None:  # fmt: skip
        kind = {5: "coil", 15: "coil", 6: "register", 16: "register"}.get(function_code)
        if kind is not None and set_values is not None:
            for offset, value in enumerate(set_values):
                self.writes.append((kind, address + offset, value, time.monotonic()))

    def _serve(self) -> None:
        import asyncio

        from pymodbus.server import StartAsyncTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        bits = lambda: [SimData(0, count=100, values=False, datatype=DataType.BITS)]  # noqa: E731
        words = lambda: [SimData(0, count=100, values=0, datatype=DataType.REGISTERS)]  # noqa: E731
        device = SimDevice(id=0, simdata=(bits(), bits(), words(), words()), action=self._action)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(StartAsyncTcpServer(context=device, address=("127.0.0.1", self.port)))

    def rising_edges(self, coil: int) -> int:
        states = [value for kind, address, value, _ in self.writes if kind == "coil" and address == coil]
        return sum(1 for before, now in zip([False, *states], states) if now and not before)


def part_png(path: Path, rng: np.random.Generator, size: int = 48) -> Path:
    """Write a random grey part image (for sources that need many distinct files)."""
    Image.fromarray(rng.integers(0, 255, (size, size), np.uint8)).save(path)
    return path

"""The station's one HTTP listener: the status API, the HTTP source and trigger, the rejects' images.

==================================  ==============================================================
``GET /``                           the operator's page (page.html: no build step, no CDN)
``GET /healthz``                    ``{"ok": true, "state": ...}`` (a load balancer's or systemd's check)
``GET /api/status``                 counts, yield, parts/min, latency per stage, drift, source, sinks
``GET /api/results?since=ID``       the history's rows after ID (``&limit=``, at most 1000)
``GET /api/scores?n=N``             the defect scores of the last N parts (at most 2000), the threshold
``GET /api/history?hours=H``        yield and defect rate per hour, score distribution per day
``GET /api/image/ID[?overlay=1]``   a reject's image (or heatmap overlay) from the rejects folder
``GET /api/image/latest``           the last part as the model saw it (``?overlay=1``: its heatmap)
``GET /metrics``                    Prometheus text: parts, rejects, errors, latency histogram, drift
``POST /api/inspect[?part_id=]``    an image in the body (``--source http``): its decision
``POST /api/trigger[?part_id=]``    a part-present signal (``--trigger http``): its decision
``POST /api/threshold``             ``{"threshold": t, "who": name}``: decide at t from now on
==================================  ==============================================================

Safe by default: the listener binds 127.0.0.1; any other address needs ``--token`` (a bearer token
that every POST must carry) or an explicit ``--no-auth``. GETs only read. A threshold change needs
the token whatever the address (a station started without one refuses it), is written to the
history with who and when, and never edits the model file. Bodies are limited
(``--max-body-mb``, default 32) and must give their length. Files are served only from the rejects
folder, looked up by row id, never by a path from the request.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import EdgetlRuntimeError

MAX_RESULTS = 1000
REPLY_TIMEOUT_S = 30.0


class HttpError(EdgetlRuntimeError, ValueError):
    """The listener cannot start as asked (address, port, authentication): says what to do."""


def parse_address(text: str) -> tuple[str, int]:
    """Return ``(host, port)`` of ``[HOST:]PORT`` (host 127.0.0.1 when not given).

    >>> parse_address("8080"), parse_address("0.0.0.0:9000")
    (('127.0.0.1', 8080), ('0.0.0.0', 9000))
    """
    host, _, port = str(text).rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise HttpError(f"--http {text}: give [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080")
    return host, int(port)


def is_local(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StationServer(ThreadingHTTPServer):
    """The listener (see the module docstring); :meth:`start` serves from a thread."""

    daemon_threads = True

    def __init__(self, line: Any, address: tuple[str, int], token: str | None = None, no_auth: bool = False,
                 max_body: int = 32 * 2**20):  # fmt: skip
        host, port = address
        if not is_local(host) and not token and not no_auth:
            raise HttpError(f"--http {host}:{port} is reachable from other machines: give --token TOKEN (every POST "
                            "must carry it) or --no-auth to accept anyone on the network")  # fmt: skip
        self.line, self.token, self.max_body = line, token, max_body
        try:
            super().__init__(address, _Handler)
        except OSError as exc:
            raise HttpError(f"--http {host}:{port}: cannot listen there ({exc.strerror or exc}); is another station "
                            "or program using the port?") from None  # fmt: skip
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> StationServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="station http", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: StationServer
    server_version = "edgetl-runtime"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the station's own status says what happened; no line per request on stderr

    # ---------------------------------------------------------------- routing

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            if url.path in ("/", "/index.html"):
                return self._page()
            if url.path == "/metrics":
                return self._text(200, metrics(self.server.line), "text/plain; version=0.0.4")
            if url.path == "/api/scores":
                n = _int(query, "n", 2000)
                return self._json(200, {"scores": self.server.line.stats.recent_scores(n),
                                        "threshold": self.server.line.model.info.spec.threshold})  # fmt: skip
            if url.path == "/api/history":
                return self._history(query)
            if url.path == "/api/image/latest":
                return self._latest(query.get("overlay", ["0"])[0] in ("1", "true"))
            if url.path == "/healthz":
                return self._json(200, {"ok": self.server.line.state in ("running", "finished"),
                                        "state": self.server.line.state})  # fmt: skip
            if url.path == "/api/status":
                return self._json(200, self.server.line.status())
            if url.path == "/api/results":
                return self._results(query)
            if url.path.startswith("/api/image/"):
                return self._image(url.path.rsplit("/", 1)[1], query.get("overlay", ["0"])[0] in ("1", "true"))
            return self._json(404, {"error": f"no such page: {url.path}"})
        except (BrokenPipeError, ConnectionResetError):
            return None

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if not self._authorized():
            self._drain()
            return self._json(401, {"error": "this station takes POSTs with its token only: send the header "
                                             "Authorization: Bearer <token> (serve --token)"})  # fmt: skip
        part_id = parse_qs(url.query).get("part_id", [None])[0]
        if url.path == "/api/inspect":
            return self._inspect(part_id)
        if url.path == "/api/trigger":
            return self._trigger(part_id)
        if url.path == "/api/threshold":
            return self._threshold()
        self._drain()
        return self._json(404, {"error": f"no such action: {url.path}"})

    # ---------------------------------------------------------------- actions

    def _results(self, query: dict[str, list[str]]) -> None:
        from .history import History

        try:
            since = int(query.get("since", ["0"])[0])
            limit = min(MAX_RESULTS, max(1, int(query.get("limit", ["100"])[0])))
        except ValueError:
            return self._json(400, {"error": "since and limit are row ids and counts (integers)"})
        history = History(self.server.line.history_path, readonly=True)
        try:
            rows = history.rows(since, limit)
        finally:
            history.close()
        return self._json(200, {"results": rows, "last_id": rows[-1]["id"] if rows else since})

    def _image(self, row: str, overlay: bool) -> None:
        rejects = next((s for s in self.server.line.sinks if hasattr(s, "image_path")), None)
        if not row.isdigit() or rejects is None:
            return self._json(404, {"error": "no image: the station keeps images of rejects only (--sink rejects:DIR)"})
        path = rejects.image_path(int(row), overlay)
        if path is None or not path.is_file():
            return self._json(404, {"error": f"no {'overlay' if overlay else 'image'} for row {row} (not a reject, or "
                                             "removed by the rejects folder's quota)"})  # fmt: skip
        data = path.read_bytes()
        kind = {".png": "image/png", ".jpg": "image/jpeg", ".bmp": "image/bmp", ".tif": "image/tiff",
                ".webp": "image/webp"}.get(path.suffix, "application/octet-stream")  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=3600")
        self.end_headers()
        self.wfile.write(data)

    def _inspect(self, part_id: str | None) -> None:
        source = self.server.line.source
        if not hasattr(source, "submit"):
            self._drain()
            return self._json(409, {"error": "this station's source is not http: start it with --source http to "
                                             "POST images"})  # fmt: skip
        body = self._body()
        if body is None:
            return None
        result = source.submit(body, part_id, REPLY_TIMEOUT_S)
        if result is None:
            return self._json(503, {"error": f"no decision within {REPLY_TIMEOUT_S:g} s: the station is stopping or "
                                             "far behind; try again"})  # fmt: skip
        return self._json(200, result.to_dict())

    def _trigger(self, part_id: str | None) -> None:
        self._drain()
        source = self.server.line.source
        if getattr(source, "trigger", None) != "http":
            return self._json(409, {"error": "this station takes no HTTP trigger: start it with --trigger http"})
        done, box = threading.Event(), []
        source.fire(part_id, lambda r: (box.append(r), done.set()))
        if not done.wait(REPLY_TIMEOUT_S):
            return self._json(503, {"error": f"no decision within {REPLY_TIMEOUT_S:g} s"})
        return self._json(200, box[0].to_dict())

    def _threshold(self) -> None:
        if not self.server.token:
            self._drain()
            return self._json(403, {"error": "threshold changes need a token: start serve with --token TOKEN"})
        body = self._body()
        if body is None:
            return None
        try:
            request = json.loads(body)
            threshold, who = float(request["threshold"]), str(request.get("who") or "").strip()[:80]
            if not 0.0 <= threshold <= 1.0 or not who:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self._json(400, {"error": 'send {"threshold": 0..1, "who": "your name"}'})
        return self._json(200, self.server.line.set_threshold(threshold, who))

    def _page(self) -> None:
        from importlib.resources import files

        self._text(200, (files("edgetl_runtime.line") / "page.html").read_text(encoding="utf-8"), "text/html; charset=utf-8")

    def _history(self, query: dict[str, list[str]]) -> None:
        import time

        from .history import History

        since = time.time() - 3600 * _int(query, "hours", 24)
        history = History(self.server.line.history_path, readonly=True)
        try:
            return self._json(200, {"hours": history.hourly(since), "days": history.daily_scores(since)})
        finally:
            history.close()

    def _latest(self, overlay: bool) -> None:
        import io

        view = self.server.line._latest_view
        if view is None or (overlay and view[1] is None):
            return self._json(404, {"error": "no part yet" if view is None else "this model has no heatmap"})
        from PIL import Image

        pixels, heatmap = view
        if overlay:
            from ..heatmap import overlay as draw

            image = draw(pixels, heatmap)
        else:
            image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        self._bytes(200, buffer.getvalue(), "image/png", cache="no-store")

    # ---------------------------------------------------------------- plumbing

    def _authorized(self) -> bool:
        token = self.server.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _length(self) -> int | None:
        try:
            return int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None

    def _drain(self) -> None:
        """Read and drop a small request body (keeps the connection usable); a big one closes it."""
        length = self._length() or 0
        if 0 < length <= 1 << 16:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _body(self) -> bytes | None:
        length = self._length()
        if length is None:
            self.close_connection = True
            self._json(411, {"error": "send the image with a Content-Length header"})
            return None
        if length > self.server.max_body:
            self.close_connection = True
            self._json(413, {"error": f"the body is {length} bytes, above the station's limit of "
                                      f"{self.server.max_body} (--max-body-mb)"})  # fmt: skip
            return None
        return self.rfile.read(length)

    def _json(self, status: int, payload: Any) -> None:
        self._bytes(status, json.dumps(payload, default=str).encode(), "application/json")

    def _text(self, status: int, text: str, kind: str) -> None:
        self._bytes(status, text.encode("utf-8"), kind)

    def _bytes(self, status: int, data: bytes, kind: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        self.wfile.write(data)


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return max(1, int(query.get(name, [str(default)])[0]))
    except ValueError:
        return default


def metrics(line: Any) -> str:
    """Return the station's figures in the Prometheus text format (``GET /metrics``)."""
    from .stats import LATENCY_BUCKETS_MS

    status, counts = line.stats.snapshot(), line.stats.counts
    drift = line.drift_status()
    cumulative, total_ms = line.stats.latency_histogram()
    out = ["# HELP edgetl_parts_total Parts recorded in the history, by status.", "# TYPE edgetl_parts_total counter"]
    for name in ("decided", "error", "dropped"):
        out.append(f'edgetl_parts_total{{status="{name}"}} {counts.get(name, 0)}')
    out += ["# HELP edgetl_rejects_total Parts with a defect verdict.", "# TYPE edgetl_rejects_total counter",
            f"edgetl_rejects_total {status['rejects']}",
            "# HELP edgetl_latency_ms End-to-end latency of a part, taken to recorded (ms).",
            "# TYPE edgetl_latency_ms histogram"]  # fmt: skip
    for bound, count in zip([*map(str, LATENCY_BUCKETS_MS), "+Inf"], cumulative):
        out.append(f'edgetl_latency_ms_bucket{{le="{bound}"}} {count}')
    out += [f"edgetl_latency_ms_sum {total_ms:.3f}", f"edgetl_latency_ms_count {cumulative[-1] if cumulative else 0}",
            "# HELP edgetl_drift 1 while the drift alarm is on.", "# TYPE edgetl_drift gauge",
            f"edgetl_drift {1 if drift.get('state') == 'drift' else 0}",
            "# HELP edgetl_drift_distance Kolmogorov-Smirnov distance of the recent parts' defect scores from the "
            "reference (the alarm's statistic).",
            "# TYPE edgetl_drift_distance gauge", f"edgetl_drift_distance {drift.get('distance') or 0}",
            "# HELP edgetl_drift_psi Population stability index of the recent parts' defect scores.",
            "# TYPE edgetl_drift_psi gauge", f"edgetl_drift_psi {drift.get('psi') or 0}",
            "# HELP edgetl_threshold The defect-score threshold in use.", "# TYPE edgetl_threshold gauge",
            f"edgetl_threshold {line.model.info.spec.threshold}"]  # fmt: skip
    return "\n".join(out) + "\n"

"""``webhook:URL``: one JSON POST per part (at least once; retried with back-off until a 2xx).

The body is the part's history record (``Content-Type: application/json``). ``EDGETL_WEBHOOK_TOKEN``
in the environment adds ``Authorization: Bearer <token>``. A reply outside 2xx, a timeout (5 s) or a
refused connection is a failed delivery: the runner retries the same record, later ones wait
behind it (the receiver sees the parts in order).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from .base import SinkError

TIMEOUT_S = 5.0


class WebhookSink:
    """See the module docstring."""

    delivery, replay = "at-least-once", True

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SinkError(f"webhook:{url}: give an http:// or https:// URL, e.g. webhook:http://mes.local/parts")
        self.url, self.name = url, f"webhook:{url}"
        self._headers = {"Content-Type": "application/json", "User-Agent": "edgetl-runtime"}
        token = os.environ.get("EDGETL_WEBHOOK_TOKEN")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def send(self, record: dict[str, Any], result: Any) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(record).encode(), headers=self._headers,
                                         method="POST")  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:  # noqa: S310 - the user's URL
                reply.read(1 << 16)
        except urllib.error.HTTPError as exc:
            raise ConnectionError(f"{self.url} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"{self.url}: {getattr(exc, 'reason', exc)}") from None

    def event(self, record: dict[str, Any]) -> None:
        """POST a station event (drift, a threshold change): a JSON object with an ``event`` key."""
        self.send(record, None)

    def close(self) -> None:
        pass

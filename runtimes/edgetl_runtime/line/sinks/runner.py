"""One sink's thread: its bounded queue, retries with back-off, its cursor in the history (see the package docstring)."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..history import History, HistoryError
from ..parts import Result
from .base import Sink

BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
FAILING_FLUSH_S = 1.0  # a failing replaying sink's last try at a stop: the history keeps what it owes


class SinkRunner:
    """One sink's thread: its bounded queue, retries with back-off, its cursor in the history.

    ``capacity``: records held in memory; past it, a replaying sink catches up from the history,
    another drops the oldest (counted in ``skipped``).
    """

    def __init__(self, sink: Sink, history_path: str | Path, capacity: int = 1000, max_backlog: int = 100_000):
        self.sink, self.history_path = sink, Path(history_path)
        self.capacity, self.max_backlog = capacity, max_backlog
        self._queue: deque[tuple[dict, Result | None]] = deque()
        self._cv = threading.Condition()
        self._behind = False  # reading from the history instead of the queue
        self._closing = self._abort = False
        self.cursor = 0
        self.delivered = self.failures = self.skipped = 0
        self.last_error, self.last_success, self._last_failure = "", None, 0.0
        self._thread = threading.Thread(target=self._loop, name=f"sink {sink.name}", daemon=True)
        if hasattr(sink, "wake"):  # e.g. MQTT: a reconnect ends the back-off instead of waiting it out (up to 30 s)
            sink.wake = self._wake

    def start(self) -> None:
        history = History(self.history_path)
        try:
            stored, newest = history.cursor(self.sink.name), history.max_id()
            # A new sink starts at the present; a replaying one resumes after its last delivery, and its
            # starting point is saved now: what it has not delivered when the process dies is owed.
            self.cursor = stored if stored is not None and self.sink.replay else newest
            if self.sink.replay and stored is None:
                history.set_cursor(self.sink.name, self.cursor)
        finally:
            history.close()
        self._behind = self.cursor < newest
        self._thread.start()

    def offer(self, record: dict[str, Any], result: Result) -> None:
        """Queue ``record`` for delivery (the recorder calls this after the commit); never blocks.

        ``result`` is kept only for a sink that wants the images (``wants_images``): its queue is short.
        """
        wants = getattr(self.sink, "wants", None)
        if wants is not None and not wants(record):
            return  # e.g. a good part, for a sink that acts on rejects only
        with self._cv:
            if self._behind:
                return  # it is in the history; the catch-up reads it from there
            if len(self._queue) >= self.capacity:
                if self.sink.replay:
                    self._behind = True
                    self._queue.clear()
                    self._cv.notify()
                    return
                self._queue.popleft()
                self.skipped += 1
            self._queue.append((record, result if getattr(self.sink, "wants_images", False) else None))
            self._cv.notify()

    def event(self, record: dict[str, Any]) -> None:
        """Queue a station event (``record["event"]``: drift, threshold) for a sink that takes events; never blocks."""
        if not hasattr(self.sink, "event"):
            return
        with self._cv:
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self.skipped += 1
            self._queue.append((record, None))
            self._cv.notify()

    def pending(self) -> int:
        with self._cv:
            return len(self._queue)

    def status(self) -> dict[str, Any]:
        return {"sink": self.sink.name, "delivery": self.sink.delivery, "delivered": self.delivered,
                "failures": self.failures, "skipped": self.skipped, "pending": self.pending(), "behind": self._behind,
                "last_error": self.last_error, "cursor": self.cursor,
                "ok": not self.last_error or (self.last_success or 0) > self._last_failure,
                **(self.sink.details() if hasattr(self.sink, "details") else {})}  # fmt: skip

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop; the cursor is saved.

        A replaying sink whose last attempt failed gets :data:`FAILING_FLUSH_S` instead: what it has
        not delivered stays owed in the history (its cursor) and is sent at the next start, so a dead
        receiver does not hold a stop up for ``timeout`` seconds per sink.
        """
        with self._cv:
            self._closing = True
            self._cv.notify()
        failing = self.sink.replay and self._last_failure > (self.last_success or 0.0)
        if self._thread.is_alive():
            self._thread.join(min(timeout, FAILING_FLUSH_S) if failing else timeout)
        with self._cv:
            self._abort = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(2.0)
        try:
            self.sink.close()
        except Exception as exc:  # noqa: BLE001 - a sink that fails to close must not stop the others
            self.last_error = f"close: {exc}"

    # ---------------------------------------------------------------- the thread

    def _loop(self) -> None:
        history = History(self.history_path)
        saved_at, saved = time.monotonic(), self.cursor
        try:
            while True:
                item = self._next(history)
                if item is None:
                    break
                record, result = item
                if record.get("id") is not None and record["id"] <= self.cursor:
                    continue  # already delivered (read from the history and queued both)
                if not self._deliver(record, result):
                    break
                self.cursor = record.get("id") or self.cursor
                if self.sink.replay and time.monotonic() - saved_at > 1.0:
                    history.set_cursor(self.sink.name, self.cursor)
                    saved_at, saved = time.monotonic(), self.cursor
        except HistoryError as exc:
            self.last_error = str(exc)
        finally:
            if self.sink.replay and self.cursor != saved:
                try:
                    history.set_cursor(self.sink.name, self.cursor)
                except HistoryError as exc:
                    self.last_error = str(exc)
            history.close()

    def _next(self, history: History) -> tuple[dict, Result | None] | None:
        """Return the next record to deliver (and its result when it came from memory); None to stop."""
        while True:
            with self._cv:
                if self._abort or (self._closing and not self._behind and not self._queue):
                    return None
                if not self._behind:
                    if self._queue:
                        return self._queue.popleft()
                    self._cv.wait(0.5)
                    continue
            rows = history.rows(self.cursor, 1)
            if rows:
                if history.max_id() - self.cursor > self.max_backlog:  # too far behind: skip to the bound
                    skip_to = history.max_id() - self.max_backlog
                    self.skipped += skip_to - self.cursor
                    self.cursor = skip_to
                    continue
                return rows[0], None
            with self._cv:  # caught up: back to the queue (read once more under the lock, see offer)
                if not history.rows(self.cursor, 1):
                    self._behind = False

    def _deliver(self, record: dict, result: Result | None) -> bool:
        """Send ``record`` until it is delivered (True) or the runner is told to stop (False)."""
        attempt = 0
        while True:
            try:
                if "event" in record:
                    self.sink.event(record)
                    return True
                self.sink.send(record, result)
                self.delivered += 1
                self.last_success = time.time()
                return True
            except Exception as exc:  # noqa: BLE001 - any sink failure is retried, never raised into the line
                self.failures += 1
                self._last_failure = time.time()
                self.last_error = f"{exc.__class__.__name__}: {exc}"[:300]
                delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                attempt += 1
                with self._cv:
                    if self._abort:
                        return False
                    self._cv.wait(delay)
                    if self._abort:
                        return False

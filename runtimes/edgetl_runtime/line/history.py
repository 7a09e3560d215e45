"""The station's history: one SQLite row per part, the ledger that makes a restart redo and skip nothing.

A part counts once its row is committed. The folder source asks the history which files it has
already decided (a file's key is unique per source: a second row is refused), and each sink keeps
a cursor here, the last row it delivered, so after a restart it resends what it had not (at least
once). The database is in WAL mode with ``synchronous=NORMAL``: a committed row survives the process
being killed (``kill -9``); a power cut may lose the last second (``?sync=full`` in the sink spec,
or ``History(path, synchronous="FULL")``, trades speed for that too).

>>> import tempfile, os
>>> from edgetl_runtime.line.parts import Result
>>> h = History(os.path.join(tempfile.mkdtemp(), "line.sqlite"))
>>> [r.id for r in h.record([Result(1, "dir:in", "a.png", 0.0, "decided", key="a", verdict="good")])]
[1]
>>> h.record([Result(2, "dir:in", "a.png", 0.0, "decided", key="a", verdict="good")])  # the same file again
[]
"""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from .parts import Result

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS results(
    id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, source TEXT NOT NULL, key TEXT, part_id TEXT,
    status TEXT NOT NULL, verdict TEXT, defect_score REAL, top_class TEXT, top_probability REAL,
    threshold REAL, model_sha256 TEXT, latency_ms REAL, timings TEXT, error TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS results_once ON results(source, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS results_time ON results(t);
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, kind TEXT NOT NULL,
    detail TEXT);
CREATE TABLE IF NOT EXISTS cursors(sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
"""
COLUMNS = ("t", "source", "key", "part_id", "status", "verdict", "defect_score", "top_class", "top_probability",
           "threshold", "model_sha256", "latency_ms", "timings", "error")  # fmt: skip


# SQLite's page cache per connection, in KiB (its default is 2,000): the station appends rows and reads the
# newest ones, so a small cache costs nothing, and five connections (recorder, sinks, folder source, page) at
# the default fill 10 MB as the file grows over a shift
CACHE_KIB = 512


class HistoryError(RuntimeError):
    """The history database cannot be opened or written (names the file and what to do)."""


class History:
    """One connection to the history database at ``path`` (created if missing); use it from one thread."""

    def __init__(self, path: str | Path, synchronous: str = "NORMAL", readonly: bool = False):
        self.path = Path(path)
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
                self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            else:
                self._db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
                self._db.executescript(_SCHEMA)
                self._check_version()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{self.path}: cannot open the history database ({exc}); give another path with "
                               "--history, or move the damaged file away") from None  # fmt: skip

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise HistoryError(f"{self.path}: a history of schema {row[0]}, this runtime writes {SCHEMA_VERSION}; "
                               "upgrade edgetl-runtime or start a new history file")  # fmt: skip

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- writing

    def record(self, results: Sequence[Result]) -> list[Result]:
        """Commit ``results`` in one transaction; return those written, each with its row ``id``.

        A result whose ``(source, key)`` already has a row is left out: that part was decided before
        (a restart found it again); it must not count twice.
        """
        written = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for r in results:
                cur = self._db.execute(
                    f"INSERT OR IGNORE INTO results({','.join(COLUMNS)}) VALUES({','.join('?' * len(COLUMNS))})",
                    (r.t, r.source, r.key, r.part_id, r.status, r.verdict, r.defect_score, r.top_class,
                     r.top_probability, r.threshold, r.model_sha256, r.latency_ms,
                     json.dumps(r.timings) if r.timings else None, r.error))  # fmt: skip
                if cur.rowcount:
                    r.id = cur.lastrowid
                    written.append(r)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise HistoryError(f"{self.path}: cannot write the history ({exc})") from exc
        return written

    def event(self, kind: str, detail: dict[str, Any] | None = None) -> None:
        """Record a station event (start, stop, threshold change, drift, a sink's failure)."""
        self._db.execute("INSERT INTO events(t, kind, detail) VALUES(?, ?, ?)",
                         (time.time(), kind, json.dumps(detail or {}, default=str)))  # fmt: skip

    def set_cursor(self, sink: str, last_id: int) -> None:
        self._db.execute("INSERT INTO cursors VALUES(?, ?) ON CONFLICT(sink) DO UPDATE SET last_id=excluded.last_id",
                         (sink, int(last_id)))  # fmt: skip

    # ---------------------------------------------------------------- reading

    def cursor(self, sink: str) -> int | None:
        row = self._db.execute("SELECT last_id FROM cursors WHERE sink=?", (sink,)).fetchone()
        return None if row is None else int(row[0])

    def max_id(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(id), 0) FROM results").fetchone()[0])

    def done(self, source: str, keys: Iterable[str]) -> set[str]:
        """Return which of ``keys`` already have a row for ``source``."""
        keys, found = list(keys), set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self._db.execute(f"SELECT key FROM results WHERE source=? AND key IN ({','.join('?' * len(chunk))})",
                                    (source, *chunk))  # fmt: skip
            found.update(k for (k,) in rows)
        return found

    def rows(self, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Return up to ``limit`` rows with an id above ``after_id``, oldest first, as the sinks' JSON records."""
        cur = self._db.execute(f"SELECT id, {','.join(COLUMNS)} FROM results WHERE id > ? ORDER BY id LIMIT ?",
                               (int(after_id), int(limit)))  # fmt: skip
        return [_record(row) for row in cur]

    def counts(self) -> dict[str, int]:
        """Return the parts of the whole history by status, and the rejects."""
        row = self._db.execute("SELECT count(*), sum(status='decided'), sum(verdict='defect'), sum(status='error'), "
                               "sum(status='dropped') FROM results").fetchone()  # fmt: skip
        return dict(zip(("rows", "decided", "rejects", "errors", "dropped"), (int(v or 0) for v in row)))

    def hourly(self, since: float | None = None) -> list[dict[str, Any]]:
        """Return per hour (UTC): parts decided, rejects, yield and defect rate, errors, dropped frames."""
        cur = self._db.execute(
            "SELECT strftime('%Y-%m-%d %H:00', t, 'unixepoch') AS hour, sum(status='decided'), sum(verdict='defect'), "
            "sum(status='error'), sum(status='dropped') FROM results WHERE t >= ? GROUP BY hour ORDER BY hour",
            (since or 0.0,))  # fmt: skip
        out = []
        for hour, decided, rejects, errors, dropped in cur:
            decided, rejects = int(decided or 0), int(rejects or 0)
            out.append({"hour": hour, "parts": decided, "rejects": rejects, "errors": int(errors or 0),
                        "dropped": int(dropped or 0), "yield": (decided - rejects) / decided if decided else None,
                        "defect_rate": rejects / decided if decided else None})  # fmt: skip
        return out

    def daily_scores(self, since: float | None = None, bins: int = 20) -> list[dict[str, Any]]:
        """Return per day (UTC) the histogram of the decided parts' defect scores (``bins`` equal bins on [0, 1])."""
        cur = self._db.execute(
            "SELECT strftime('%Y-%m-%d', t, 'unixepoch') AS day, min(CAST(defect_score * ? AS INTEGER), ?), count(*) "
            "FROM results WHERE t >= ? AND status='decided' AND defect_score IS NOT NULL GROUP BY day, 2 ORDER BY day",
            (bins, bins - 1, since or 0.0))  # fmt: skip
        days: dict[str, list[int]] = {}
        for day, b, n in cur:
            days.setdefault(day, [0] * bins)[int(b)] = int(n)
        return [{"day": day, "counts": counts} for day, counts in days.items()]

    def events(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Return the latest station events (newest first), of one ``kind`` when given."""
        cur = self._db.execute("SELECT t, kind, detail FROM events WHERE ? IS NULL OR kind = ? ORDER BY id DESC LIMIT ?",
                               (kind, kind, limit))  # fmt: skip
        return [{"t": t, "kind": k, **json.loads(detail or "{}")} for t, k, detail in cur]

    def write_csv(self, out: str | Path, since: float | None = None) -> int:
        """Write every row (from ``since``) to ``out`` as CSV; return how many."""
        from ..atomic import atomic_path

        cur = self._db.execute(f"SELECT id, {','.join(COLUMNS)} FROM results WHERE t >= ? ORDER BY id", (since or 0.0,))
        n = 0
        with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "time", *COLUMNS[1:]])
            for row in cur:
                record = _record(row)
                writer.writerow([record["id"], record["time"], *(row[2:])])
                n += 1
        return n


def _record(row: Sequence[Any]) -> dict[str, Any]:
    """Return a results row as the JSON record of :meth:`Result.to_dict`."""
    from datetime import datetime, timezone

    values = dict(zip(("id", *COLUMNS), row))
    return {
        "id": values["id"],
        "time": datetime.fromtimestamp(values["t"], timezone.utc).isoformat(timespec="milliseconds"),
        **{k: values[k] for k in ("source", "part_id", "status", "verdict", "defect_score", "top_class",
                                  "top_probability", "threshold", "model_sha256", "latency_ms", "error")},  # fmt: skip
        "timings": json.loads(values["timings"]) if values["timings"] else {},
    }


class LocalHistory(threading.local):
    """A :class:`History` per thread, opened on first use (SQLite connections belong to one thread)."""

    def __init__(self, path: str | Path):
        self._path = Path(path)

    def get(self) -> History:
        if not hasattr(self, "history"):
            self.history = History(self._path)
        return self.history

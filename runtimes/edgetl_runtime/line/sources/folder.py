"""``dir:PATH``: a folder watched for new images, each decided once, never half-written, never lost.

A camera PC or a frame grabber drops each part's image into a folder. Every image file that
appears is one part (a file whose name starts with a dot is being written by convention, and
skipped). A file is taken once it has not been written to for ``settle_ms`` (default 200), so a
writer that writes in place is waited for. Writing a dot-name and renaming it into place is the
way to feed a station: the rename is atomic, and with ``settle_ms=0`` such files are taken at once.

A file's key is its path in the folder, size and modification time. The history refuses a second
row with the same key, and on start the source asks the history which files it has decided
already: after a restart, even a ``kill -9``, nothing is decided twice and nothing is skipped (a
part in flight at the kill has no row and is decided again). ``move=DIR`` moves each file there
once its row is committed, which keeps the watched folder (and this source's memory) small;
without it the decided files stay and are remembered while they exist.

Options: ``once=1`` (decide what is there, then end), ``move=DIR``, ``settle_ms``, ``poll_ms``
(default 50), ``recursive=1`` (subfolders too).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

from ...preprocess import is_image_file
from ..parts import Part, Stop
from .base import SourceError


class FolderSource:
    """See the module docstring."""

    OPTIONS = {"once": bool, "move": str, "settle_ms": int, "poll_ms": int, "recursive": bool}
    live = False

    def __init__(self, path: str | Path, history_path: str | Path | None = None, once: bool = False,
                 move: str | None = None, settle_ms: int = 200, poll_ms: int = 50, recursive: bool = False):  # fmt: skip
        self.root = Path(path).expanduser().resolve()
        if not self.root.is_dir():
            raise SourceError(f"dir:{path}: no such folder; create it, or give the folder the camera writes to")
        self.name = f"dir:{self.root}"
        self.move_to = Path(move).expanduser().resolve() if move else None
        if self.move_to is not None:
            if self.move_to == self.root:
                raise SourceError(f"{self.name}: move={move} is the watched folder itself; give another folder")
            self.move_to.mkdir(parents=True, exist_ok=True)
        self.once, self.settle_s, self.poll_s, self.recursive = once, settle_ms / 1000, max(poll_ms, 5) / 1000, recursive
        self._history_path = history_path
        self._seen: dict[str, str] = {}  # relative path -> key of the version already taken
        self._lock = threading.Lock()
        self._moved = self._move_errors = 0
        self._last_error = ""

    # ---------------------------------------------------------------- the protocol

    def parts(self, stop: Stop) -> Iterator[Part]:
        history = self._open_history()
        try:
            while not stop.is_set():
                began = time.perf_counter()
                ready, waiting = self._scan()
                fresh = self._not_done(history, ready)
                for rel, key in fresh:
                    if stop.is_set():
                        return
                    with self._lock:
                        self._seen[rel] = key
                    yield Part(source=self.name, part_id=rel, image=str(self.root / rel), key=key)
                if self.once and not fresh and not waiting:
                    return
                # a big folder takes a while to scan: never spend more than a third of the time scanning
                stop.wait(max(self.poll_s, 2 * (time.perf_counter() - began)))
        finally:
            if history is not None:
                history.close()

    def done(self, part: Part, result: object) -> None:
        if self.move_to is None or part.key is None:
            return
        src = self.root / part.part_id
        dst = self.move_to / part.part_id
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
            self._moved += 1
        except OSError as exc:
            self._move_errors += 1
            self._last_error = f"cannot move {src} to {dst}: {exc.strerror or exc}"

    def status(self) -> dict:
        with self._lock:
            remembered = len(self._seen)
        return {"name": self.name, "kind": "folder", "live": False, "remembered": remembered, "moved": self._moved,
                "move_errors": self._move_errors, "last_error": self._last_error}  # fmt: skip

    def close(self) -> None:
        pass

    # ---------------------------------------------------------------- scanning

    def _scan(self) -> tuple[list[tuple[str, str]], bool]:
        """Return ``([(relative path, key)] ready to take, oldest first; whether files are still settling)``."""
        now_ns, entries = time.time_ns(), []
        current: set[str] = set()
        for entry in self._walk(self.root):
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue  # gone already, or a broken link
            rel = os.path.relpath(entry.path, self.root)
            current.add(rel)
            entries.append((st.st_mtime_ns, rel, st.st_size))
        waiting, ready = False, []
        with self._lock:
            for gone in set(self._seen) - current:  # moved or deleted: forget it (bounded memory)
                del self._seen[gone]
            for mtime_ns, rel, size in sorted(entries):
                key = f"{rel}|{size}|{mtime_ns}"
                if self._seen.get(rel) == key:
                    continue
                if size > 0 and now_ns - mtime_ns >= self.settle_s * 1e9:  # not written to for settle_ms
                    ready.append((rel, key))
                else:
                    waiting = True
        return ready, waiting

    def _walk(self, folder: Path) -> Iterator[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue  # being written (.name.tmp) or hidden
                    if entry.is_dir(follow_symlinks=False):
                        if self.recursive and (self.move_to is None or Path(entry.path) != self.move_to):
                            yield from self._walk(Path(entry.path))
                    elif entry.is_file() and is_image_file(entry.name):
                        yield entry
        except OSError as exc:
            self._last_error = f"cannot list {folder}: {exc.strerror or exc}"

    def _open_history(self):
        if self._history_path is None or not Path(self._history_path).exists():
            return None
        from ..history import History

        return History(self._history_path, readonly=True)

    def _not_done(self, history, ready: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Return the ``ready`` files the history has no row for (decided before a restart: skipped, remembered)."""
        if history is None or not ready:
            return ready
        done = history.done(self.name, [key for _, key in ready])
        with self._lock:
            for rel, key in ready:
                if key in done:
                    self._seen[rel] = key
        return [(rel, key) for rel, key in ready if key not in done]

"""The station: a pipeline of stages joined by bounded queues, from the source to the history and the sinks.

::

    source --> capture --[decode queue]--> decode/resize (worker threads) --[inference queue]-->
    inference (the engine's threads) --[record queue]--> history (one commit per batch) --> sinks

Each stage is a thread (decoding: one per spare core), so a PNG is decoded while the previous part
is on the engine. A *queue* source waits when the decode queue is full (back-pressure: nothing is
lost); a *live* source drops the oldest waiting frame instead, and the drop is a row of the
history. Every part that entered ends as exactly one row: decided, error, or dropped. A part
counts when its row is committed; then its source is told (a folder source may move the file),
a waiting HTTP caller gets its answer, and each sink gets it from its own queue.

``stop()`` (SIGTERM, SIGINT) stops the intake, lets the parts in flight finish, flushes the
sinks and returns.

>>> Line.__init__.__doc__.split("\\n")[0]
'Build the station; nothing runs until :meth:`start` (or :meth:`run`).'
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import EdgetlRuntimeError, ImageError
from ..preprocess import read_image_file
from .history import History, HistoryError
from .parts import Part, Result, Stop
from .sinks import Sink, SinkRunner, open_sink
from .sources import Source, open_source
from .stats import LineStats

_END = object()  # one per worker, down the queues when the intake has stopped
DEFAULT_HISTORY = "edgetl-line.sqlite"
RECORD_BATCH = 64


class Line:
    """An inspection station: a model, a source of parts, the history and the sinks (see the module docstring).

    >>> line = Line("model.tflite", "dir:incoming", ["jsonl:results.jsonl"])   # doctest: +SKIP
    >>> line.run()                                  # until the source ends or stop() is called  # doctest: +SKIP
    """

    def __init__(self, model: Any, source: Source | str, sinks: Sequence[Sink | str] = (), *,
                 history: str | Path = DEFAULT_HISTORY, decode_workers: int | None = None, queue_size: int = 8,
                 inference_workers: int = 1, drift_window: int = 200, drift_baseline: int | None = None,
                 **load_options: Any):  # fmt: skip
        """Build the station; nothing runs until :meth:`start` (or :meth:`run`).

        ``model``: a loaded :class:`~edgetl_runtime.Model` or a model file (then ``load_options`` go
        to :func:`edgetl_runtime.load`: ``device``, ``threads``, ``roi``, ``threshold``...).
        ``source``/``sinks``: objects or strings (:func:`~edgetl_runtime.line.sources.open_source`,
        :func:`~edgetl_runtime.line.sinks.open_sink`). ``history``: the SQLite file of every part.
        ``decode_workers``: decoding threads (default: one per core beyond the first, at least 1).
        ``queue_size``: parts waiting before decoding (a live source drops beyond it).
        ``drift_window``: parts in the drift alarm's window; ``drift_baseline``: take the first N
        decided parts as the drift reference instead of the file's (see :mod:`.drift`).
        """
        from ..model import Model, load

        if not isinstance(model, Model):
            model = load(model, **load_options)
        elif load_options:
            raise TypeError(f"{', '.join(load_options)}: pass them to edgetl_runtime.load() with the model file")
        self.model = model
        self.history_path = Path(history)
        self._history = History(self.history_path)  # opened here: a bad path is an error before anything runs
        self.source = source if not isinstance(source, str) else open_source(source, str(self.history_path))
        self.sinks = [s if not isinstance(s, str) else open_sink(s) for s in sinks]
        self._keep_images = any(getattr(s, "wants_images", False) for s in self.sinks)  # a rejects sink
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"a sink is given twice: {names}")
        self.decode_workers = decode_workers or max(1, (os.cpu_count() or 2) - 1)
        self.inference_workers = max(1, inference_workers)
        self.model_sha256 = _sha256(model.info.path)
        self.stats = LineStats()
        self._decode_q: queue.Queue = queue.Queue(max(1, queue_size))
        self._infer_q: queue.Queue = queue.Queue(2 * self.inference_workers)
        self._record_q: queue.Queue = queue.Queue(1024)
        self._intake_stop, self._hard_stop = Stop(), Stop()
        self._runners = [SinkRunner(sink, self.history_path, capacity=getattr(sink, "capacity", 1000))
                         for sink in self.sinks]  # fmt: skip
        self._threads: list[threading.Thread] = []
        self._events: queue.Queue = queue.Queue()  # station events for the recorder to write (it owns the history)
        self._told_output = False  # a bare model's logits: said once, as an event
        self._finished = threading.Event()
        self.state, self.error, self.history_error = "ready", "", ""
        self.entered = 0
        self.owed: dict[str, int] = {}  # at stop: rows each at-least-once sink has not delivered (sent at the next start)
        self._drift_window, self._baseline_size = drift_window, drift_baseline or 0
        self.drift, self._baseline = self._drift_monitor(drift_window, drift_baseline)
        self._latest_view: tuple[Any, Any] | None = None  # the last decided part's pixels and heatmap (the page)

    def _drift_monitor(self, window: int, baseline: int | None) -> tuple[Any, list | None]:
        """Return ``(monitor or None, scores collected for a baseline or None)``."""
        from .drift import DriftMonitor

        export = self.model.info.export
        if baseline:
            return None, []
        if export is not None and export.reference is not None:
            return DriftMonitor(export.reference, window), None
        return None, None

    def drift_status(self) -> dict[str, Any]:
        """Return the drift alarm's state, or why there is none."""
        if self.drift is not None:
            return self.drift.status()
        if self._baseline is not None:
            return {"state": "collecting a baseline", "parts": len(self._baseline)}
        return {"state": "no reference", "note": "this model file carries no drift reference (a third-party "
                "model, or exported before edgetl 0.2 or with --no-validate); re-export it, or start serve with --drift-baseline N to take "
                "the first N parts as the reference"}  # fmt: skip

    def set_threshold(self, threshold: float, who: str) -> dict[str, Any]:
        """Decide at ``threshold`` from the next part on; record who changed it in the history. The file is untouched."""
        old = self.model.info.spec.threshold
        self.model.set_threshold(threshold, f"set by {who} at the station")
        event = {"event": "threshold", "old": old, "new": float(threshold), "who": who, "time": time.time()}
        self._events.put(event)
        return event

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Line:
        """Start every stage; return at once (the line runs in its threads)."""
        if self.state != "ready":
            raise RuntimeError(f"the line is {self.state}; a line starts once")
        self._history.event("start", {"model": self.model.info.path, "sha256": self.model_sha256,
                                      "source": self.source.name, "sinks": [s.name for s in self.sinks]})  # fmt: skip
        for runner in self._runners:
            runner.start()
        self._spawn("recorder", self._record)
        for i in range(self.inference_workers):
            self._spawn(f"inference-{i}", self._infer)
        for i in range(self.decode_workers):
            self._spawn(f"decode-{i}", self._decode)
        self._spawn("capture", self._capture)
        self.state = "running"
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source has ended and every part is recorded (True), or ``timeout`` passed (False)."""
        return self._finished.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the intake, finish the parts in flight, flush the sinks (each for up to ``timeout`` s), close."""
        if self.state in ("stopped", "ready"):
            self.state = "stopped"
            return
        if self.state == "running":
            self.state = "stopping"
        self._intake_stop.set()
        if not self._finished.wait(timeout):
            self._hard_stop.set()  # stages blocked on a full queue give up; what is left is not recorded
            self.error = self.error or f"parts still in flight after {timeout:g} s were not recorded"
            self._finished.wait(5.0)
        for runner in self._runners:
            runner.close(timeout)
        try:
            self.source.close()
        finally:
            newest = self._history.max_id()
            self.owed = {r.sink.name: newest - r.cursor for r in self._runners if r.sink.replay and newest > r.cursor}
            self._history.event("stop", {**self.stats.snapshot(), "last": None, "error": self.error})
            self._history.close()
            self.state = "stopped"

    def run(self, timeout: float | None = None) -> dict[str, Any]:
        """Start, wait for the source to end (or ``timeout``, or Ctrl-C), stop; return :meth:`status`."""
        self.start()
        try:
            self.wait(timeout)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
        return self.status()

    def status(self) -> dict[str, Any]:
        """Return what the status API shows: counts, yield, rates, latency per stage, source and sinks."""
        info = self.model.info
        return {
            "state": self.state,
            "error": self.error,
            "model": {"path": info.path, "sha256": self.model_sha256, "engine": info.engine, "device": info.device,
                      "threads": info.threads, "task": info.spec.task, "threshold": info.spec.threshold,
                      "labels": list(info.spec.labels)},  # fmt: skip
            "source": self.source.status(),
            "entered": self.entered,
            **self.stats.snapshot(),
            "queues": {"decode": self._decode_q.qsize(), "inference": self._infer_q.qsize(),
                       "record": self._record_q.qsize()},  # fmt: skip
            "history": {"path": str(self.history_path), "error": self.history_error},
            "drift": self.drift_status(),
            "sinks": [runner.status() for runner in self._runners],
        }

    # ---------------------------------------------------------------- stages

    def _spawn(self, name: str, target: Any) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # a bug in a stage: the line stops and says so, never runs on half-dead
                self.error = f"the {name} stage failed: {exc.__class__.__name__}: {exc}"[:500]
                self._intake_stop.set()
                self._hard_stop.set()
                self._finished.set()
                raise

        thread = threading.Thread(target=guarded, name=f"line {name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _put(self, q: queue.Queue, item: Any) -> bool:
        """Put ``item``, waiting while ``q`` is full; False when the line is stopped hard meanwhile."""
        while True:
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._hard_stop.is_set():
                    return False

    def _capture(self) -> None:
        live = self.source.live
        try:
            for part in self.source.parts(self._intake_stop):
                self.entered += 1
                part.seq = self.entered
                if live:
                    self._put_live(part)
                elif not self._put(self._decode_q, part):
                    break
        except Exception as exc:  # noqa: BLE001 - a source that breaks stops the intake, said in the status
            self.error = f"source {self.source.name} failed: {exc.__class__.__name__}: {exc}"[:500]
        finally:
            for _ in range(self.decode_workers):
                self._put(self._decode_q, _END)

    def _put_live(self, part: Part) -> None:
        """Queue a live frame; when the queue is full, the oldest waiting frame is dropped (and recorded)."""
        while True:
            try:
                self._decode_q.put_nowait(part)
                return
            except queue.Full:
                try:
                    old = self._decode_q.get_nowait()
                except queue.Empty:
                    continue
                if old is _END:  # cannot happen while capturing; keep it if it does
                    self._decode_q.put(old)
                    continue
                self._put(self._record_q, _result(old, "dropped", error="dropped: inspection was behind the camera"))

    def _decode(self) -> None:
        model = self.model
        while True:
            part = self._decode_q.get()
            if part is _END:
                self._put(self._infer_q, _END)
                return
            began = time.perf_counter()
            if part.image is None:
                self._put(self._record_q, _result(part, "error", error=part.error or "the source gave no image"))
                continue
            try:
                # a sink that keeps images (rejects) gets the file's bytes, read here once: by the time it writes,
                # the folder source has moved the file (move=DIR) or the camera PC may have deleted it
                if self._keep_images and isinstance(part.image, (str, os.PathLike)):
                    part.image = read_image_file(part.image)
                pixels = model.pixels(part.image)
            except (ImageError, OSError, ValueError, EdgetlRuntimeError) as exc:
                reason = exc.reason if isinstance(exc, ImageError) else f"{exc.__class__.__name__}: {exc}"
                self._put(self._record_q, _result(part, "error", error=reason[:500]))
                continue
            done = time.perf_counter()
            timings = {"queued": (began - part.t0) * 1e3, "decode": (done - began) * 1e3}
            if not self._put(self._infer_q, (part, pixels, timings, done)):
                return

    def _infer(self) -> None:
        ends, model = 0, self.model
        while True:
            item = self._infer_q.get()
            if item is _END:
                ends += 1
                if ends >= self.decode_workers:
                    self._put(self._record_q, _END)
                    return
                continue
            part, pixels, timings, ready = item
            timings["wait"] = (time.perf_counter() - ready) * 1e3
            try:
                pred = model.predict_pixels(pixels, timings)
            except Exception as exc:  # noqa: BLE001 - an engine failure on one part is that part's error
                self._put(self._record_q, _result(part, "error", error=f"inference: {exc.__class__.__name__}: {exc}"[:500]))
                continue
            probability = pred.top_probability if pred.score_kind == "probabilities" else None  # a logit is none
            if probability is None and not self._told_output:  # once: the history and the sinks say why no verdict
                self._told_output = True
                self._events.put({"event": "model output", "note": model.output_problem, "time": time.time()})
            result = _result(part, "decided", verdict=pred.verdict, defect_score=pred.defect_score,
                             top_class=pred.top_class, top_probability=probability, threshold=pred.threshold,
                             model_sha256=self.model_sha256, timings=dict(pred.timings))  # fmt: skip
            result.t_inferred = time.perf_counter()
            if self._keep_images and pred.verdict == "defect":  # only the rejects sink needs them, only for rejects
                result.image, result.pixels, result.heatmap = part.image, pixels, pred.heatmap
            self._latest_view = (pixels, pred.heatmap)  # references only: the page encodes them when it asks
            self._put(self._record_q, result)

    def _record(self) -> None:
        """Commit results in batches, then count them, tell the source, answer the caller, feed the sinks."""
        history, ends = History(self.history_path), 0
        try:
            while True:
                batch, end = self._batch()
                if batch:
                    self._commit(history, batch)
                if end:
                    ends += 1
                    if ends >= self.inference_workers:
                        self._write_events(history)
                        return
        finally:
            history.close()
            if self.state == "running":
                self.state = "finished"  # the source ended; stop() closes the sinks
            self._finished.set()

    def _watch_drift(self, score: float) -> None:
        """Feed the drift alarm one score (or the baseline being collected); a change of state is an event."""
        if self._baseline is not None:
            self._baseline.append(score)
            if len(self._baseline) >= self._baseline_size:
                from .drift import DriftMonitor, reference

                self.drift = DriftMonitor(reference(self._baseline), self._drift_window,
                                          source=f"the first {len(self._baseline)} parts of this run")  # fmt: skip
                self._baseline = None
            return
        if self.drift is not None:
            change = self.drift.update(score)
            if change is not None:
                self._events.put({"event": "drift", **self.drift.status(), "time": time.time()})

    def _write_events(self, history: History) -> None:
        """Write the station events waiting (drift, threshold changes) to the history, and give them to the sinks."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            history.event(event["event"], event)
            for runner in self._runners:
                runner.event(event)

    def _batch(self) -> tuple[list[Result], bool]:
        """Return the results waiting now, at least one and at most :data:`RECORD_BATCH`, and whether the end came.

        No waiting for a fuller batch: a lone part is committed at once; under load batches form by themselves.
        """
        item = self._record_q.get()
        if item is _END:
            return [], True
        batch = [item]
        while len(batch) < RECORD_BATCH:
            try:
                item = self._record_q.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                return batch, True
            batch.append(item)
        return batch, False

    def _commit(self, history: History, batch: list[Result]) -> None:
        now = time.perf_counter()
        for r in batch:
            if r.part is not None:
                r.timings["record"] = (now - (r.t_inferred or now)) * 1e3
                r.timings["total"] = r.latency_ms = (now - r.part.t0) * 1e3
        while True:
            try:
                written = history.record(batch)
                self.history_error = ""
                break
            except HistoryError as exc:  # a full disk: keep the batch, say so, retry; the queues fill meanwhile
                self.history_error = str(exc)
                if self._hard_stop.wait(1.0):
                    return
        kept = {id(r) for r in written}
        self._write_events(history)
        for r in batch:
            if id(r) not in kept:
                self.stats.duplicate()
                continue
            record = r.to_dict()
            self.stats.add(r.status, r.verdict, r.timings, record, r.defect_score)
            if r.defect_score is not None:
                self._watch_drift(r.defect_score)
            part = r.part
            if part is not None:
                try:
                    self.source.done(part, r)
                except Exception as exc:  # noqa: BLE001 - the row is in; a source's clean-up failing is reported
                    self.error = f"source {self.source.name}: {exc}"[:500]
                if part.reply is not None:
                    part.reply(r)
            for runner in self._runners:
                runner.offer(record, r)
            r.part = None  # the image is no longer needed by the line (a sink may still hold it)


def _result(part: Part, status: str, **fields: Any) -> Result:
    return Result(seq=part.seq, source=part.source, part_id=part.part_id, t=part.t, status=status, key=part.key,
                  part=part, **fields)  # fmt: skip


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

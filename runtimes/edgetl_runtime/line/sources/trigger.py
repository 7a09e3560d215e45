"""Trigger mode: one decision per part-present signal, taken on the next camera frame, with a part id.

``--trigger stdin`` (a line of text per part: its id, or empty for a counter), ``--trigger http``
(``POST /api/trigger?part_id=...``, answered with the decision) or ``--trigger gpio:PIN`` (a rising
edge on a GPIO line, e.g. a light barrier on a Raspberry Pi: ``gpio:17`` or ``gpio:gpiochip0:17``,
through libgpiod: ``pip install gpiod``). The camera keeps running; on a signal at time t the first
frame captured after t is the part's image, so the frame shows the part that raised the signal
and never an older one still in the camera's buffer. A trigger source never drops: every signal
is one row (a frame that does not come within ``FRAME_TIMEOUT_S`` is an error row, not a gap).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any, Callable, Iterator

from ..parts import Part, Result, Stop
from .base import SourceError

FRAME_TIMEOUT_S = 2.0


class TriggeredSource:
    """A live frame source plus a trigger: see the module docstring."""

    live = False

    def __init__(self, frames: Any, trigger: str):
        if not hasattr(frames, "frames"):
            raise SourceError(f"--trigger takes a camera, stream or video source, not {frames.name}")
        self.inner, self.trigger = frames, trigger
        self.name = f"{frames.name} (trigger {trigger})"
        self._signals: queue.Queue = queue.Queue()
        self._latest: tuple[float, Any] | None = None
        self._frame_ready = threading.Condition()
        self._count = 0
        self.signals = 0
        if trigger.startswith("gpio:"):
            self._gpio = _gpio_line(trigger)
        elif trigger not in ("stdin", "http"):
            raise SourceError(f"--trigger {trigger}: choose stdin, http or gpio:PIN")

    def fire(self, part_id: str | None = None, reply: Callable[[Result], None] | None = None) -> None:
        """A part is present now: take the next frame as part ``part_id``; ``reply`` gets its result."""
        self.signals += 1
        self._signals.put((time.perf_counter(), part_id, reply))

    def parts(self, stop: Stop) -> Iterator[Part]:
        threading.Thread(target=self._grab, args=(stop,), name="trigger camera", daemon=True).start()
        if self.trigger == "stdin":
            threading.Thread(target=self._read_stdin, args=(stop,), name="trigger stdin", daemon=True).start()
        elif self.trigger.startswith("gpio:"):
            threading.Thread(target=self._watch_gpio, args=(stop,), name="trigger gpio", daemon=True).start()
        while not stop.is_set():
            try:
                t_signal, part_id, reply = self._signals.get(timeout=0.1)
            except queue.Empty:
                continue
            self._count += 1
            part_id = part_id or f"part-{self._count:08d}"
            frame = self._frame_after(t_signal, stop)
            yield Part(source=self.name, part_id=part_id, image=frame, reply=reply,
                       error=None if frame is not None else f"no camera frame within {FRAME_TIMEOUT_S:g} s of the "
                                                            "trigger; is the camera running?")  # fmt: skip

    def _grab(self, stop: Stop) -> None:
        for _, t0, frame in self.inner.frames(stop):
            with self._frame_ready:
                self._latest = (t0, frame)
                self._frame_ready.notify_all()

    def _frame_after(self, t_signal: float, stop: Stop) -> Any:
        deadline = time.perf_counter() + FRAME_TIMEOUT_S
        with self._frame_ready:
            while not stop.is_set():
                if self._latest is not None and self._latest[0] > t_signal:
                    return self._latest[1]
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self._frame_ready.wait(min(left, 0.1))
        return None

    def _read_stdin(self, stop: Stop) -> None:
        for line in sys.stdin:
            if stop.is_set():
                return
            self.fire(line.strip() or None)

    def _watch_gpio(self, stop: Stop) -> None:
        request = self._gpio
        while not stop.is_set():
            if request.wait_edge_events(0.1):
                for _ in request.read_edge_events():
                    self.fire()

    def done(self, part: Part, result: object) -> None:
        pass

    def status(self) -> dict:
        return {**self.inner.status(), "name": self.name, "trigger": self.trigger, "signals": self.signals,
                "live": False}  # fmt: skip

    def close(self) -> None:
        self.inner.close()


def _gpio_line(trigger: str) -> Any:
    """Return a libgpiod (v2) request for rising edges on ``gpio:PIN`` or ``gpio:CHIP:PIN``."""
    parts = trigger.split(":")[1:]
    chip, pin = (f"/dev/gpiochip{0}", parts[0]) if len(parts) == 1 else (f"/dev/{parts[0]}", parts[1])
    if not pin.isdigit():
        raise SourceError(f"--trigger {trigger}: give gpio:PIN or gpio:gpiochipN:PIN (a line number)")
    try:
        import gpiod
        from gpiod.line import Direction, Edge
    except ImportError:
        raise SourceError(f"--trigger {trigger} needs libgpiod's Python bindings: pip install gpiod "
                          "(Raspberry Pi OS: apt install python3-libgpiod)") from None  # fmt: skip
    try:
        return gpiod.request_lines(chip, consumer="edgetl-runtime", config={
            int(pin): gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.RISING)})  # fmt: skip
    except OSError as exc:
        raise SourceError(f"--trigger {trigger}: cannot watch line {pin} of {chip} ({exc.strerror or exc}); is this "
                          "the device's GPIO chip, and may this user read it (group gpio)?") from None  # fmt: skip

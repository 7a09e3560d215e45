"""Cameras, video files and streams through OpenCV: ``camera:N``, ``/dev/videoN``, ``video:PATH``, ``rtsp://``, ``gst:``.

``camera:0`` or ``/dev/video0`` is a USB/V4L2 camera; ``rtsp://...`` and ``http(s)://...`` a network
stream (an IP camera's RTSP, an MJPEG URL); ``gst:PIPELINE`` a GStreamer pipeline ending in
``appsink`` (a Jetson's CSI camera: ``gst:nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1920,
height=1080 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink``,
with an OpenCV built with GStreamer, as JetPack's is); ``video:PATH`` (or a path ending in .mp4,
.avi, ...) a video file.

Cameras and streams are *live*: the line drops the oldest waiting frame when it is behind, and a
camera that disappears is reopened with back-off (0.5 s doubling to 10 s), each reconnect
counted and the last error shown in the status. A video file is read frame by frame, nothing
dropped, and ends the source at its end (``?loop=1`` starts it over; ``?live=1`` paces it at its
frame rate and lets the line drop frames, as a camera would). ``?fps=N`` takes at most N frames a
second; ``?width=&height=`` ask a camera for a resolution. Needs ``pip install
'edgetl-runtime[camera]'`` (OpenCV headless).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

from ..parts import Part, Stop
from .base import SourceError

RECONNECT_S = (0.5, 1.0, 2.0, 5.0, 10.0)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise SourceError("cameras, video files and streams need OpenCV: pip install 'edgetl-runtime[camera]'") from None
    return cv2


class OpenCvSource:
    """See the module docstring."""

    OPTIONS = {"live": bool, "fps": float, "loop": bool, "width": int, "height": int}

    def __init__(self, target: str, live: bool | None = None, fps: float | None = None, loop: bool = False,
                 width: int | None = None, height: int | None = None):  # fmt: skip
        _cv2()
        self.name = target
        if target.startswith("camera:") or target.startswith("/dev/video"):
            self.kind, index = "camera", target.split(":", 1)[1] if target.startswith("camera:") else target
            self._open_arg: Any = int(index) if index.isdigit() else index
        elif target.startswith("gst:"):
            self.kind, self._open_arg = "gstreamer", target[4:]
        elif "://" in target:
            self.kind, self._open_arg = "stream", target
        else:
            path = Path(target[6:] if target.startswith("video:") else target).expanduser()
            if not path.is_file():
                raise SourceError(f"{target}: no such video file")
            self.kind, self._open_arg = "file", str(path)
        self.live = live if live is not None else self.kind != "file"
        self.min_interval = 1.0 / fps if fps else 0.0
        self.loop, self.width, self.height = loop, width, height
        self.frames_read = self.reconnects = 0
        self.last_error = ""

    def _open(self) -> Any:
        cv2 = _cv2()
        if self.kind == "gstreamer":
            capture = cv2.VideoCapture(self._open_arg, cv2.CAP_GSTREAMER)
        else:
            capture = cv2.VideoCapture(self._open_arg)
        if self.width and self.height:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if not capture.isOpened():
            capture.release()
            raise OSError(f"cannot open {self.name}")
        return capture

    def frames(self, stop: Stop) -> Iterator[tuple[float, float, Any]]:
        """Yield ``(wall time, perf_counter, RGB frame)`` until the source ends or ``stop`` is set."""
        cv2, attempt, capture = _cv2(), 0, None
        paced = self.live and self.kind == "file"
        last = 0.0
        while not stop.is_set():
            if capture is None:
                try:
                    capture = self._open()
                    attempt, started, shown = 0, time.perf_counter(), 0
                    period = 1.0 / (capture.get(cv2.CAP_PROP_FPS) or 25.0) if paced else 0.0
                except OSError as exc:
                    if self.kind == "file":
                        raise SourceError(f"{self.name}: {exc}; is it a video OpenCV can read?") from None
                    self._reconnect(stop, attempt, str(exc))
                    attempt += 1
                    continue
            ok, frame = capture.read()
            if not ok:
                capture.release()
                capture = None
                if self.kind == "file" and not self.loop:
                    return
                if self.kind != "file":
                    self._reconnect(stop, attempt, "the stream stopped sending frames")
                    attempt += 1
                continue
            now = time.perf_counter()
            if paced:  # a file played as a camera: one frame per frame period
                shown += 1
                stop.wait(max(0.0, started + shown * period - now))
            if self.min_interval and now - last < self.min_interval:
                continue
            last = now
            self.frames_read += 1
            yield time.time(), time.perf_counter(), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if capture is not None:
            capture.release()

    def _reconnect(self, stop: Stop, attempt: int, why: str) -> None:
        self.reconnects += 1
        self.last_error = f"{why}; reconnecting (attempt {attempt + 1})"
        stop.wait(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])

    def parts(self, stop: Stop) -> Iterator[Part]:
        for n, (t, t0, frame) in enumerate(self.frames(stop)):
            yield Part(source=self.name, part_id=f"frame-{n:09d}", image=frame, t=t, t0=t0)

    def done(self, part: Part, result: object) -> None:
        pass

    def status(self) -> dict:
        return {"name": self.name, "kind": self.kind, "live": self.live, "frames": self.frames_read,
                "reconnects": self.reconnects, "last_error": self.last_error}  # fmt: skip

    def close(self) -> None:
        pass

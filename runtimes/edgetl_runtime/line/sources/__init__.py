"""Where parts come from. A source is one small protocol; a new camera or feed is a new file here.

Source strings (``edgetl-runtime serve --source SRC``):

==============================  =========================================================  ======
``dir:PATH[?once=1&move=DIR]``  a folder watched for new images, each once (``folder.py``)    queue
``video:PATH``, ``FILE.mp4``    a video file, every frame (``?live=1``: paced as a camera)    queue
``camera:N``, ``/dev/videoN``   a USB/V4L2 camera (OpenCV)                                    live
``rtsp://...``, ``http://...``  an RTSP or HTTP (MJPEG) stream (OpenCV)                       live
``gst:PIPELINE``                a GStreamer pipeline ending in appsink (Jetson CSI cameras)   live
``http``                        images POSTed to the station's ``/api/inspect`` (the MES)     queue
==============================  =========================================================  ======

*queue* sources never lose a part: when inspection is behind, they wait (back-pressure). *live*
sources drop the oldest waiting frame instead (the camera does not wait), and every dropped frame
is counted in the history. The camera sources need ``pip install 'edgetl-runtime[camera]'``
(OpenCV). ``--trigger stdin|http|gpio:PIN`` turns a live source into one part per part-present
signal (``trigger.py``).

Every implementation passes the same conformance test (tests/line/test_sources.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Source, SourceError, options, typed

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg")
def open_source(spec: str, history_path: str | None = None) -> Source:
    """Return the :class:`Source` for a source string (see the module docstring)."""
    from pathlib import Path

    spec = str(spec).strip()
    if spec.startswith("dir:"):
        from .folder import FolderSource

        path, _, query = spec[4:].partition("?")
        return FolderSource(path, history_path=history_path, **typed(options(query), spec, FolderSource.OPTIONS))
    if spec == "http":
        from .http import HttpSource

        return HttpSource()
    scheme = urlsplit(spec).scheme.lower()
    if (spec.startswith(("video:", "camera:", "gst:", "/dev/video")) or scheme in ("rtsp", "rtsps", "http", "https")
            or Path(spec.partition("?")[0]).suffix.lower() in VIDEO_SUFFIXES):  # fmt: skip
        from .opencv import OpenCvSource

        target, _, query = spec.partition("?") if not spec.startswith("gst:") else (spec, "", "")
        return OpenCvSource(target, **typed(options(query), spec, OpenCvSource.OPTIONS))
    if Path(spec).is_dir():
        raise SourceError(f"--source {spec}: a folder is watched as dir:{spec}")
    raise SourceError(f"--source {spec}: not a source edgetl knows: dir:PATH, video:PATH (or a .mp4/.avi file), "
                      "camera:N, /dev/videoN, rtsp://..., http://..., gst:PIPELINE, or http (images POSTed to "
                      "/api/inspect)")  # fmt: skip


__all__ = ["Source", "SourceError", "open_source", "options"]

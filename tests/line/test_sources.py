"""Sources: a video file, a live camera's drops, triggers, an RTSP stream that goes away and comes back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from peers import free_port, wait_for

RTSP_SERVER = """
import sys, gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
server = GstRtspServer.RTSPServer(); server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory(); factory.set_shared(True)
factory.set_launch("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 "
                   "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 )")
server.get_mount_points().add_factory("/line", factory); server.attach(None)
print("ready", flush=True); GLib.MainLoop().run()
"""


@pytest.fixture(scope="module")
def video(tmp_path_factory, part_images) -> Path:
    """A 40-frame video of the parts, written by OpenCV."""
    import cv2

    path = tmp_path_factory.mktemp("video") / "parts.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 96))
    for i in range(40):
        frame = cv2.resize(cv2.imread(str(part_images[i % len(part_images)])), (96, 96))
        writer.write(frame)
    writer.release()
    return path


def test_a_video_file_is_decided_frame_by_frame(station_model, video, tmp_path, stations):
    station = stations(station_model, tmp_path, "--source", f"video:{video}", http=False)
    assert station.wait(90) == 0, station.output()
    rows = station.rows()
    assert len(rows) == 40 and {r[3] for r in rows} == {"decided"}
    assert [r[2] for r in rows] == [f"frame-{i:09d}" for i in range(40)]  # nothing dropped: a file is not live


class SyntheticCamera:
    """A live source that makes frames faster than any station decides them: 1000 frames of 1500x1500 at once."""

    name, live = "camera:synthetic", True

    def __init__(self, n: int = 1000):
        self.n = n
        self.frame = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), np.uint8)

    def parts(self, stop):
        from edgetl_runtime.line.parts import Part

        for i in range(self.n):
            if stop.is_set():
                return
            yield Part(source=self.name, part_id=f"frame-{i}", image=self.frame)

    def done(self, part, result):
        pass

    def status(self):
        return {"name": self.name, "live": True}

    def close(self):
        pass


def test_a_live_source_drops_the_oldest_frames_and_accounts_for_every_one(station_model, tmp_path):
    import edgetl_runtime

    line = edgetl_runtime.Line(station_model, SyntheticCamera(), history=tmp_path / "h.sqlite", decode_workers=1,
                               queue_size=1)  # fmt: skip
    status = line.run(timeout=120)
    assert status["entered"] == 1000 and status["dropped"] > 0 and status["parts"] > 0
    assert status["parts"] + status["dropped"] + status["errors"] == 1000  # every frame that entered is a row
    import sqlite3

    with sqlite3.connect(tmp_path / "h.sqlite") as db:
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 1000
        assert db.execute("SELECT count(*) FROM results WHERE status='dropped'").fetchone()[0] == status["dropped"]


def test_stdin_trigger_decides_one_part_per_signal_on_the_next_frame(station_model, video, tmp_path, stations):
    station = stations(station_model, tmp_path, "--source", f"video:{video}?live=1&loop=1", "--trigger", "stdin",
                       stdin=True)  # fmt: skip
    for line in ("A-1", "A-2", "", "A-4"):
        station.proc.stdin.write(line + "\n")
        station.proc.stdin.flush()
        time.sleep(0.1)
    rows = station.wait_rows(4, 60)
    assert [r[2] for r in rows] == ["A-1", "A-2", "part-00000003", "A-4"] and {r[3] for r in rows} == {"decided"}
    time.sleep(0.5)
    assert len(station.rows()) == 4  # frames without a signal are not parts
    assert station.terminate() == 0


def test_http_trigger_answers_with_the_decision(station_model, video, tmp_path, stations):
    station = stations(station_model, tmp_path, "--source", f"video:{video}?live=1&loop=1", "--trigger", "http")
    request = urllib.request.Request(f"{station.url}/api/trigger?part_id=SN-0042", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        result = json.loads(reply.read())
    assert result["part_id"] == "SN-0042" and result["status"] == "decided"
    assert station.get("/api/status")["source"]["signals"] == 1
    assert station.terminate() == 0


def _system_gst_rtsp() -> str | None:
    """Return the system Python that has GStreamer's RTSP server (Debian: gir1.2-gst-rtsp-server-1.0), or None."""
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        return None
    probe = subprocess.run([python, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                                          "from gi.repository import GstRtspServer"], capture_output=True)  # fmt: skip
    return python if probe.returncode == 0 else None


def test_an_rtsp_camera_that_goes_away_is_reopened(station_model, tmp_path, stations):
    python = _system_gst_rtsp()
    if python is None:
        pytest.skip("no local RTSP server: install Debian's gir1.2-gst-rtsp-server-1.0, python3-gi, "
                    "gstreamer1.0-plugins-ugly (.ci/setup does)")  # fmt: skip
    port = free_port()
    script = tmp_path / "rtsp_server.py"
    script.write_text(RTSP_SERVER)

    def serve_rtsp() -> subprocess.Popen:
        proc = subprocess.Popen([python, str(script), str(port)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    camera = serve_rtsp()
    try:
        station = stations(station_model, tmp_path, "--source", f"rtsp://127.0.0.1:{port}/line")
        wait_for(lambda: station.get("/api/status")["parts"] >= 20, 60, "20 decided frames")
        camera.terminate()
        camera.wait(10)
        source = wait_for(lambda: (s := station.get("/api/status")["source"])["reconnects"] and s, 60, "a reconnect")
        assert source["last_error"] and station.proc.poll() is None  # reported, still running
        before = station.get("/api/status")["parts"]
        camera = serve_rtsp()
        wait_for(lambda: station.get("/api/status")["parts"] >= before + 20, 90, "frames again after the camera came back")
        assert station.terminate() == 0
    finally:
        camera.terminate()

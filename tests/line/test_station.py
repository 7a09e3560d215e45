"""``edgetl-runtime serve`` at the line: a folder source, the history, restarts, signals, the HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from peers import RUNTIME, feed, wait_for


def test_every_file_is_decided_once_across_a_kill_9_and_a_restart(station_model, part_images, tmp_path, stations):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    names = feed(part_images, incoming, 40)
    first = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0", "--queue", "2")
    wait_for(lambda: len(first.rows()) >= 10, 60, "10 decided parts")
    first.kill()  # mid-run: some parts were in flight, their rows never committed
    done_before = len(first.rows())
    names += feed(part_images, incoming, 20, start=40)  # the camera went on while the station was down
    second = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0")
    rows = second.wait_rows(len(names), 90)
    assert second.terminate() == 0, second.output()
    rows = second.rows()
    assert sorted(r[2] for r in rows) == sorted(names), "every file exactly once: none twice, none skipped"
    assert len({r[1] for r in rows}) == len(rows) == 60 and 10 <= done_before < 60
    assert {r[3] for r in rows} == {"decided"} and {r[4] for r in rows} <= {"good", "defect"}


def test_sigterm_finishes_the_parts_in_flight_flushes_the_sinks_and_exits_0(station_model, part_images, tmp_path,
                                                                            stations):  # fmt: skip
    incoming = tmp_path / "in"
    incoming.mkdir()
    feed(part_images, incoming, 30)
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0",
                       "--sink", f"jsonl:{tmp_path / 'results.jsonl'}")  # fmt: skip
    wait_for(lambda: station.rows(), 60, "the first decision")
    assert station.terminate() == 0, station.output()
    rows = station.rows()
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [r[0] for r in rows] and rows  # every committed part reached the sink
    first = lines[0]
    for field in ("time", "part_id", "verdict", "defect_score", "top_class", "threshold", "model_sha256", "latency_ms"):
        assert first[field] is not None, field
    assert set(first["timings"]) >= {"queued", "decode", "wait", "inference", "record", "total"}
    assert "station stopped" in station.output()


def test_the_status_api_and_the_http_source(station_model, part_images, tmp_path, stations):
    station = stations(station_model, tmp_path, "--source", "http", "--sink", f"rejects:{tmp_path / 'rejects'}")
    image = part_images[0].read_bytes()
    request = urllib.request.Request(f"{station.url}/api/inspect?part_id=A-17", data=image, method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        result = json.loads(reply.read())
    assert result["part_id"] == "A-17" and result["status"] == "decided" and result["verdict"] in ("good", "defect")
    status = station.get("/api/status")
    assert status["parts"] == 1 and status["state"] == "running" and status["source"]["kind"] == "http"
    assert status["model"]["sha256"] == result["model_sha256"] and "inference" in status["latency_ms"]
    assert station.get("/healthz")["ok"] is True
    assert station.get("/api/results?since=0")["results"][0]["part_id"] == "A-17"
    # a body over the limit, a path outside the API, an image that is no reject's: refused, nothing served
    import socket

    with socket.create_connection(("127.0.0.1", station.port), timeout=10) as s:  # the headers only: refused before
        s.sendall(f"POST /api/inspect HTTP/1.1\r\nHost: x\r\nContent-Length: {33 * 2**20}\r\n\r\n".encode())
        assert s.recv(200).startswith(b"HTTP/1.1 413")  # the 33 MB body is never read
    for path in ("/api/image/../../etc/passwd", "/api/image/999", "/../history.sqlite"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(station.url + path, timeout=10)
        assert caught.value.code == 404
    assert station.terminate() == 0


def test_another_address_needs_a_token_or_no_auth(station_model, tmp_path, stations):
    done = subprocess.run([RUNTIME, "serve", str(station_model), "--source", "http", "--http", "0.0.0.0:0",
                           "--history", str(tmp_path / "h.sqlite")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--token TOKEN" in done.stderr and "--no-auth" in done.stderr
    station = stations(station_model, tmp_path, "--source", "http", "--token", "s3cret")
    image = b"not used: refused before it is read"
    for headers, code in (({}, 401), ({"Authorization": "Bearer wrong"}, 401)):
        request = urllib.request.Request(f"{station.url}/api/inspect", data=image, headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == code
    assert station.get("/api/status")["parts"] == 0  # reading needs no token
    assert station.terminate() == 0


def test_an_unreadable_file_is_an_error_row_and_the_line_goes_on(station_model, part_images, tmp_path, stations):
    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    feed(part_images, incoming, 3)
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0&once=1")
    assert station.wait(60) == 0, station.output()
    by_name = {r[2]: r for r in station.rows()}
    assert by_name["broken.png"][3] == "error" and len(by_name) == 4
    assert sum(r[3] == "decided" for r in by_name.values()) == 3


def test_history_prints_yield_per_hour_and_exports_csv(station_model, part_images, tmp_path, stations):
    incoming = tmp_path / "in"
    incoming.mkdir()
    feed(part_images, incoming, 12)
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0&once=1", http=False)
    assert station.wait(60) == 0
    out = subprocess.run([RUNTIME, "history", str(station.history), "--csv", str(tmp_path / "rows.csv"), "--json"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (hour,) = report["hours"]
    assert hour["parts"] == 12 and hour["yield"] == pytest.approx((12 - hour["rejects"]) / 12)
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 13
    table = subprocess.run([RUNTIME, "history", str(station.history)], capture_output=True, text=True, timeout=60)
    assert table.stdout.splitlines()[0].startswith("hour (UTC)\tparts\trejects\tyield")
    assert subprocess.run([RUNTIME, "history", str(part_images[0])], capture_output=True, text=True).returncode == 2


def test_the_python_api_runs_a_line(station_model, part_images, tmp_path):
    import edgetl_runtime

    incoming = tmp_path / "in"
    incoming.mkdir()
    feed(part_images, incoming, 8)
    line = edgetl_runtime.Line(station_model, f"dir:{incoming}?settle_ms=0&once=1", [f"jsonl:{tmp_path / 'r.jsonl'}"],
                               history=tmp_path / "h.sqlite")  # fmt: skip
    status = line.run(timeout=60)
    assert status["parts"] == 8 and status["state"] == "stopped" and status["sinks"][0]["delivered"] == 8
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 8


def test_a_sink_that_fails_never_stops_inspection(station_model, part_images, tmp_path, stations):
    incoming = tmp_path / "in"
    incoming.mkdir()
    feed(part_images, incoming, 10)
    dead = "webhook:http://127.0.0.1:9/nobody-listens"  # port 9 (discard): connection refused
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0", "--sink", dead)
    station.wait_rows(10, 60)
    sink = wait_for(lambda: (s := station.get("/api/status")["sinks"][0])["failures"] and s, 30, "a failed delivery")
    assert sink["delivered"] == 0 and "Connection" in sink["last_error"] and not sink["ok"]
    assert station.terminate(timeout=90) == 0
    # A dead at-least-once sink is not waited for (its 30 s flush): what it owes stays in the history, and it says so.
    assert "row(s) not delivered, owed in the history" in station.output()


def test_predict_takes_a_region_of_interest(station_model, part_images, tmp_path):
    from PIL import Image

    part = Image.open(part_images[0]).convert("RGB")
    frame = Image.new("RGB", (part.width * 3, part.height * 2), (255, 0, 0))
    frame.paste(part, (part.width, part.height // 2))
    frame.save(tmp_path / "frame.png")
    roi = f"{part.width},{part.height // 2},{part.width},{part.height}"
    runs = [subprocess.run([RUNTIME, "predict", str(station_model), str(p), "--json", *extra], capture_output=True,
                           text=True, timeout=60) for p, extra in ((part_images[0], []), (tmp_path / "frame.png", ["--roi", roi]))]  # fmt: skip
    whole, cropped = (json.loads(r.stdout.splitlines()[0]) for r in runs)
    assert whole["defect_score"] == pytest.approx(cropped["defect_score"], abs=1e-6)  # the crop is the part exactly
    outside = subprocess.run([RUNTIME, "predict", str(station_model), str(part_images[0]), "--roi", "0,0,5000,10"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert outside.returncode == 1 and "does not lie inside" in outside.stderr


def test_export_stores_the_roi_and_the_device_crops_frames_as_the_validation_did(tiny_run, tmp_path):
    """A run of camera frames: export --roi crops calibration and validation images; the file crops its input."""
    import edgetl
    import edgetl_runtime
    from PIL import Image

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    split = json.loads((run / "split.json").read_text())
    frames = tmp_path / "frames"
    for part in ("train", "val"):
        for i, (path, label) in enumerate(split[part]):
            image = Image.open(path).convert("RGB")
            frame = Image.new("RGB", (image.width + 60, image.height + 40), (20, 200, 20))  # conveyor around the part
            frame.paste(image, (50, 10))
            out = frames / label / f"{part}-{i}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            frame.save(out)
            split[part][i] = [str(out), label]
    (run / "split.json").write_text(json.dumps(split))
    original = json.loads((tiny_run / "split.json").read_text())["val"][0][0]
    size = Image.open(original).size
    roi = f"50,10,{size[0]},{size[1]}"
    result = edgetl.export(run, edgetl.ExportOptions(quantization="int8", roi=roi), tmp_path / "m.tflite")
    assert result.report.passed and result.report.exported_metrics["decision_accuracy"] >= 0.9
    model = edgetl_runtime.load(result.path)
    assert model.info.export.roi == [50, 10, size[0], size[1]] and model.roi is not None
    whole = edgetl_runtime.load(result.path, roi="0,0,1.0,1.0")  # the caller's ROI wins: here the whole image
    assert model.predict(split["val"][0][0]).defect_score == pytest.approx(whole.predict(original).defect_score, abs=1e-6)


def test_bench_pipeline_reports_the_three_throughputs_and_no_part_lost(station_model, part_images, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for path in part_images[:6]:
        shutil.copy(path, folder / path.name)
    done = subprocess.run([RUNTIME, "bench", str(station_model), "--pipeline", str(folder), "--runs", "60", "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["parts"] == 60 and report["lost"] == 0 and report["duplicates"] == 0
    for key in ("inference_only_per_s", "sequential_per_s", "pipelined_per_s", "efficiency", "speedup_vs_sequential"):
        assert report[key] > 0, key
    assert set(report["latency_ms"]) >= {"decode", "inference", "total"} and report["machine"]["cores"]

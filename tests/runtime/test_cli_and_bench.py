"""The edgetl-runtime command and the benchmark API."""

from __future__ import annotations

import json
from types import SimpleNamespace

from click.testing import CliRunner

from edgetl_runtime import bench
from edgetl_runtime.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_predict_reports_bad_images_and_goes_on(exported, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"")
    images = [exported.images[0], bad, exported.images[1]]
    result = _invoke("predict", exported.tflite_int8, *images, "--json", "--threads", 1)
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    assert "error" in lines[1] and "empty" in lines[1]["error"]
    first = lines[0]
    assert first["verdict"] in ("defect", "good") and first["top_class"] in ("defect", "good")
    assert first["verdict"] == ("defect" if first["defect_score"] >= first["threshold"] else "good")
    assert set(first["probabilities"]) == {"defect", "good"} and set(first["timings"]) == {"preprocess", "inference", "postprocess"}
    assert "broken.png" in result.stderr


def test_predict_text_and_folder(exported):
    folder = str(exported.images[0]).rsplit("/", 1)[0]
    result = _invoke("predict", exported.onnx, folder)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["image", "verdict", "defect_score", "top_class", "top_probability"]
    assert len(rows) == 16 and all(line.split("\t")[1] in ("defect", "good") for line in rows)


def test_predict_with_labels_for_bare_model(bare, tmp_path):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("RGB", (50, 40), (90, 120, 30)).save(img)
    result = _invoke("predict", bare.uint8, img, "--labels", bare.labels, "--softmax")  # the fixture outputs logits
    assert result.exit_code == 0, result.output
    row = result.stdout.splitlines()[1].split("\t")
    assert row[3] in ("background", "scratch", "good") and row[1] in ("defect", "good")
    logits = _invoke("predict", bare.uint8, img, "--labels", bare.labels)  # read as they are: no verdict on logits
    assert logits.exit_code == 0 and logits.stdout.splitlines()[1].split("\t")[1:3] == ["-", "-"]
    assert "not probabilities" in logits.stderr and "--softmax" in logits.stderr
    unlabelled = _invoke("predict", bare.uint8, img)  # no labels: classes numbered, with a note saying how
    assert unlabelled.exit_code == 0 and unlabelled.stdout.splitlines()[1].split("\t")[3] in ("0", "1", "2")
    assert "--labels" in unlabelled.stderr


def test_info(exported, edgetpu_model):
    result = _invoke("info", exported.tflite_int8, "--json")
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)
    assert details["spec"]["labels"] == ["defect", "good"] and details["input"]["dtype"] == "uint8"
    text = _invoke("info", exported.onnx)
    assert "onnxruntime" in text.stdout and "labels" in text.stdout
    tpu = _invoke("info", edgetpu_model)
    assert tpu.exit_code == 2 and "libedgetpu1-std" in tpu.output


def test_run_benchmark_and_verdict(exported):
    report = bench.run_benchmark(exported.tflite_int8, runs=20, warmup=2, threads=1, concurrency=2)
    data = report.to_dict()
    assert set(data["stages"]) == {"preprocess", "inference", "postprocess", "total"}
    total = report.stages["total"]
    assert total.min <= total.p50 <= total.p90 <= total.p99 <= total.max
    assert report.throughput_ips > 0 and report.concurrent_throughput_ips > 0 and report.peak_rss_mb > 0
    assert len(report.latencies_ms) == 20 and json.dumps(data)
    loose = SimpleNamespace(budget=SimpleNamespace(p50_ms=1e6, p99_ms=1e6, memory_mb=1e6))
    tight = SimpleNamespace(budget=SimpleNamespace(p50_ms=1e-6, p99_ms=None, memory_mb=1e6))
    here = SimpleNamespace(check=lambda host: (True, ("matches",)))
    loose = SimpleNamespace(name="loose", detect=here, budget=loose.budget)
    tight = SimpleNamespace(name="tight", detect=here, budget=tight.budget)
    assert bench.verdict(report, loose).passed and bench.verdict(report, loose).status == "PASS"
    result = bench.verdict(report, tight)
    assert not result.passed and result.status == "FAIL"
    assert result.reasons[0].startswith("FAIL p50") and len(result.reasons) == 2
    assert report.host["cores"] >= 1 and report.host["date"] and len(report.host["load"]) == 3
    assert report.provider == "xnnpack" and report.metrics is None
    text = bench.report_text(report, result, "tight")
    assert "stage (ms)" in text and "tight: FAIL" in text and "machine at start" in text


def test_bench_command_with_profile_json_and_plot(exported, tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "hist.png"
    result = _invoke("bench", exported.tflite_int8, "--profile", "cpu-x86_64", "--runs", 10, "--warmup", 1,
                     "--threads", 1, "--json-file", out, "--plot", png)
    assert result.exit_code in (0, 1), result.output
    data = json.loads(out.read_text())
    assert data["verdict"]["profile"] == "cpu-x86_64" and data["runs"] == 10
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "p50" in result.stdout


def test_bench_plot_without_matplotlib(exported, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    result = _invoke("bench", exported.tflite_fp32, "--runs", 3, "--warmup", 0, "--plot", tmp_path / "x.png")
    assert result.exit_code == 2 and "pip install" in result.output and "matplotlib" in result.output
    assert not (tmp_path / "x.png").exists()


def test_unknown_profile(exported):
    result = _invoke("bench", exported.tflite_fp32, "--profile", "no-such-board", "--runs", 1)
    assert result.exit_code == 2 and "no-such-board" in result.output

"""Many threads get the serial answers; the runtime imports and predicts with TensorFlow unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgetl_runtime
from .conftest import NO_TENSORFLOW


@pytest.mark.parametrize("attr", ["tflite_int8", "tflite_fp32", "onnx"])
def test_16_threads_of_200_predictions_get_the_serial_results(exported, attr):
    model = edgetl_runtime.load(getattr(exported, attr), threads=1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(50)]
    serial = [model.predict(x).probabilities.to_dict() for x in images]

    def worker(offset: int) -> list[dict]:
        return [model.predict(images[(offset + i) % 50]).probabilities.to_dict() for i in range(200)]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(worker, range(16)))
    for offset, got in enumerate(results):
        assert got == [serial[(offset + i) % 50] for i in range(200)]  # bit-identical: an interpreter per call


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the RSS from /proc (Linux)")
def test_10000_predictions_keep_their_answers_and_their_memory(exported):
    """The soak: files and arrays, 10,000 predictions; no drift in the answers, no growth of memory after warm-up."""
    model = edgetl_runtime.load(exported.tflite_int8, threads=1)
    files = list(exported.images)
    first = {f: model.predict(f).probabilities.to_dict() for f in files}
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(16)]
    for i in range(1000):  # warm-up: allocator pools and caches settle
        model.predict(arrays[i % 16])
    before = _rss_mb()
    for i in range(9000):
        if i % 10 == 0:
            f = files[(i // 10) % len(files)]
            assert model.predict(f).probabilities.to_dict() == first[f]
        else:
            model.predict(arrays[i % 16])
    growth = _rss_mb() - before
    print(f"RSS {before:.0f} MB -> {before + growth:.0f} MB over 9,000 predictions after 1,000 of warm-up")
    assert growth < 16, f"RSS grew by {growth:.1f} MB over 9,000 predictions: a leak of ~{growth * 1024 / 9:.0f} KB per 1,000"


_NO_TF = NO_TENSORFLOW + """
import edgetl_runtime
cheap = not any(m.split(".")[0] in ("numpy", "PIL", "ai_edge_litert", "onnxruntime") for m in sys.modules)
model = edgetl_runtime.load(sys.argv[1])
pred = model.predict(sys.argv[2])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "tf_keras", "keras"})
print(cheap, pred.top_class, round(pred.top_probability, 4), model.info.engine, heavy)
"""


@pytest.mark.parametrize("attr", ["tflite_int8", "onnx"])
def test_predicts_without_tensorflow(exported, attr):
    path = str(getattr(exported, attr))
    out = subprocess.run([sys.executable, "-c", _NO_TF, path, exported.images[0]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cheap, label, score, engine, heavy = out.stdout.split(maxsplit=4)
    assert cheap == "True"  # import edgetl_runtime loads no engine, not even numpy
    assert heavy.strip() == "[]"
    expected = edgetl_runtime.load(path).predict(exported.images[0])
    assert label == expected.top_class and float(score) == pytest.approx(expected.top_probability, abs=1e-4)

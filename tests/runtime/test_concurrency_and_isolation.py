"""Many threads get the serial answers; the runtime imports and predicts with TensorFlow unimportable."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgetl_runtime


@pytest.mark.parametrize("attr", ["tflite_int8", "tflite_fp32", "onnx"])
def test_threads_get_serial_results(exported, attr):
    model = edgetl_runtime.load(getattr(exported, attr), threads=1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(24)]
    serial = [model.predict(x).probabilities.to_dict() for x in images]
    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda x: model.predict(x).probabilities.to_dict(), images * 4))
    for got, want in zip(parallel, serial * 4):
        assert got == want  # bit-identical: each call has an interpreter to itself


_NO_TF = """
import sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tflite_runtime"):
            raise ImportError("TensorFlow is not available on this device")
sys.meta_path.insert(0, NoTensorFlow())
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

"""The model contract: written once by training, carried byte for byte by every export, checked at load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgetl.training import TrainOptions, train

# Reads each artifact's embedded contract in a process where TensorFlow cannot be imported.
_READ_WITHOUT_TF = """
import json, sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras"):
            raise ImportError("TensorFlow is not available on the device")
sys.meta_path.insert(0, NoTensorFlow())
import edgetl_runtime
from edgetl_runtime.metadata import read_embedded
out = {}
for path in sys.argv[1:]:
    model = edgetl_runtime.load(path)  # the contract is checked against the tensors here
    own = model.info.export.threshold  # a lossy export decides at its own threshold; the contract is unchanged
    out[path] = {"bytes": read_embedded(path).spec_json.decode(), "spec": model.info.embedded_spec.to_dict(),
                 "threshold": model.info.spec.threshold, "own": own}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_contract_of_the_run_is_embedded_unchanged_in_every_format(tiny_dataset: Path, tmp_path: Path) -> None:
    import edgetl
    from edgetl.exporters import TARGETS

    options = TrainOptions(backbone="mobilenet_v2", weights="none", alpha=0.35, input_size=32, epochs=1,
                           fine_tune_epochs=0, batch_size=8, verbose=0)
    run = train(tiny_dataset, options=options, output=tmp_path / "run").run_dir
    written = (run / "model_spec.json").read_bytes()
    artifacts = []
    for fmt, quant in (("tflite", "fp32"), ("tflite", "int8"), ("edgetpu", "int8"), ("onnx", "fp32"), ("onnx", "int8")):
        opts = edgetl.ExportOptions(format=fmt, quantization=quant, fail_on_validation=False)
        result = edgetl.export(run, opts, tmp_path / f"model-{fmt}-{quant}{TARGETS[fmt].suffix}")
        assert result.spec.to_json().encode() == written
        artifacts.append(str(result.path))
    assert {Path(p).suffix for p in artifacts} == {".tflite", ".onnx"} and len(artifacts) == 5

    out = subprocess.run([sys.executable, "-c", _READ_WITHOUT_TF, *artifacts], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    read_back = json.loads(out.stdout)
    for path in artifacts:
        assert read_back[path]["bytes"].encode() == written, path  # byte for byte
        assert read_back[path]["spec"] == json.loads(written), path
        own = read_back[path]["own"]
        assert read_back[path]["threshold"] == (json.loads(written)["decision"]["threshold"] if own is None else own)
    assert [read_back[p]["own"] is None for p in artifacts] == [True, False, False, True, False]  # fp32 keeps it


def test_a_run_folder_of_edgetl_0_1_still_exports(tiny_run, tmp_path) -> None:
    # tiny_run is laid out as edgetl 0.1 wrote runs: the contract's facts in config.json, no model_spec.json.
    import edgetl
    from edgetl.run import load_run

    assert not (tiny_run / "model_spec.json").exists()
    spec = load_run(tiny_run).spec
    assert (spec.labels, spec.good_labels, spec.input_size, spec.threshold) == (("defect", "good"), ("good",), (32, 32), 0.5)
    result = edgetl.export(tiny_run, edgetl.ExportOptions(validate=False), tmp_path / "m.tflite")
    import edgetl_runtime

    assert edgetl_runtime.load(result.path).info.spec == spec

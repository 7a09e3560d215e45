"""Files handed to edgetl never run code: a run folder's model.keras is loaded in safe mode, zip only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetl.cli import main


def _lambda_run(tiny_run: Path, tmp_path: Path, fmt: str) -> tuple[Path, Path]:
    """A copy of tiny_run whose model.keras (in format ``fmt``) has a Lambda layer that writes a marker file."""
    from edgetl._tf import keras

    k = keras()
    marker = tmp_path / "code-ran"
    run = tmp_path / f"run-{fmt}"
    shutil.copytree(tiny_run, run)
    model = k.models.load_model(tiny_run / "model.keras", compile=False)
    payload = f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]"
    hostile = k.Sequential([k.Input(model.input_shape[1:]), k.layers.Lambda(eval(payload)), model])
    (run / "model.keras").unlink()
    if fmt == "h5":
        hostile.save(run / "model.h5")  # HDF5 bytes ...
        (run / "model.h5").rename(run / "model.keras")  # ... under the .keras name
    else:
        hostile.save(run / "model.keras")
    marker.unlink(missing_ok=True)  # saving traced the layer once: only loading counts
    return run, marker


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_a_lambda_layer_in_model_keras_never_runs(tiny_run, tiny_dataset, tmp_path, fmt):
    # Before: an HDF5 file named model.keras ran the Lambda's code in `edgetl eval` and `edgetl export`
    # (tf_keras' HDF5 loader ignores safe_mode).
    run, marker = _lambda_run(tiny_run, tmp_path, fmt)
    runner = CliRunner()
    evaluated = runner.invoke(main, ["eval", str(run), str(tiny_dataset), "--no-report"])
    exported = runner.invoke(main, ["export", str(run), "-o", str(tmp_path / "m.tflite")])
    for result in (evaluated, exported):
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "model.keras" in result.output
    if fmt == "h5":
        assert "HDF5" in exported.output and "Lambda" in exported.output
    assert not marker.exists(), "the model file ran code"
    assert not (tmp_path / "m.tflite").exists()


def test_a_foreign_file_as_model_keras_is_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model.keras").write_bytes(b"not a model at all")
    result = CliRunner().invoke(main, ["export", str(run), "-o", str(tmp_path / "m.tflite")])
    assert result.exit_code == 2 and "not a Keras model (a .keras file is a zip archive)" in result.output

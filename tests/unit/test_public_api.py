"""The package's public names are the functions and classes the README uses, every time."""

from __future__ import annotations

import subprocess
import sys


def test_public_functions_stay_callable_after_their_modules_load() -> None:
    import edgetl

    options = edgetl.TrainOptions()
    for _ in range(2):  # the second access used to return the submodule of the same name
        assert callable(edgetl.train) and callable(edgetl.export) and callable(edgetl.evaluate)
        assert edgetl.train.__name__ == "train" and edgetl.export.__name__ == "export"
    assert options.backbone == "efficientnet_lite0"
    assert edgetl.ExportOptions.for_int8().quantization == "int8"


def test_importing_edgetl_and_its_cli_does_not_import_tensorflow() -> None:
    code = "import sys, edgetl, edgetl.cli, edgetl.training, edgetl.exporters; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

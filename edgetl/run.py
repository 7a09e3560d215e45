"""The run folder written by ``edgetl train`` and read by ``eval``, ``export`` and ``benchmark``.

Layout of ``RUN_DIR``::

    model.keras     the trained classifier (flat functional Keras model, input: RGB pixels 0..255)
    config.json     every option actually used, plus labels, input size, colour mode, threshold,
                    good labels, backbone, weights source, data set hash
    split.json      {"train": [[path, label], ...], "val": [[path, label], ...]}
    metrics.json    validation metrics (written by train and eval)
    checkpoints/    per-epoch checkpoints for --resume
    logs/           TensorBoard logs
    *.png           training curves, confusion matrix, ROC curve

>>> RunError("x").__class__.__name__
'RunError'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetl_runtime.metadata import ModelMetadata

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.json"


class RunError(ValueError):
    """A run folder or model path is missing a piece that the command needs."""


@dataclass(frozen=True)
class Run:
    """A finished training run: its folder, its config and where its model lives."""

    run_dir: Path
    model_path: Path
    config: dict[str, Any]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.config["labels"])

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.config["input_size"]
        return (int(size[0]), int(size[1]))

    @property
    def color_mode(self) -> str:
        return self.config.get("color_mode", "rgb")

    @property
    def threshold(self) -> float:
        return float(self.config.get("threshold", 0.5))

    @property
    def good_labels(self) -> tuple[str, ...]:
        return tuple(self.config.get("good_labels", ()))

    def split(self, name: str) -> list[tuple[str, str]]:
        """Return the ``train`` or ``val`` file list recorded by the run (empty if unknown)."""
        path = self.run_dir / SPLIT_FILE
        if not path.is_file():
            return []
        return [(p, label) for p, label in json.loads(path.read_text())[name]]

    def load_model(self):
        """Return the trained Keras model (not compiled)."""
        from ._tf import keras

        return keras().models.load_model(self.model_path, compile=False)

    def metadata(self, **changes: Any) -> ModelMetadata:
        """Return the model metadata for an export of this run (``changes`` override fields)."""
        from . import __version__

        fields = dict(
            labels=self.labels,
            input_size=self.input_size,
            color_mode=self.color_mode,
            threshold=self.threshold,
            good_labels=self.good_labels,
            backbone=self.config.get("backbone"),
            sdk_version=__version__,
            data_hash=self.config.get("data_hash"),
        )
        fields.update(changes)
        return ModelMetadata(**fields)


def load_run(path: str | Path) -> Run:
    """Return the :class:`Run` at ``path`` (a run folder, or a ``.keras`` file inside one)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".keras":
        run_dir, model_path = path.parent, path
    elif path.is_dir():
        run_dir, model_path = path, path / MODEL_FILE
    else:
        raise RunError(f"{path}: no such run folder or .keras model; pass the -o folder of `edgetl train`")
    if not model_path.is_file():
        raise RunError(
            f"{run_dir}: no trained model ({MODEL_FILE}) in this folder. Is training still running, "
            "or was it interrupted? Finish it with `edgetl train ... --resume -o "
            f"{run_dir}`"
        )
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise RunError(f"{run_dir}: {CONFIG_FILE} is missing; the model's labels and input size are unknown")
    return Run(run_dir=run_dir, model_path=model_path, config=json.loads(config_path.read_text()))

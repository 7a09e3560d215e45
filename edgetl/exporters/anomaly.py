"""What exporting an anomaly detector adds: synthetic defects for calibration and validation, and a threshold per export.

An anomaly detector's threshold is a distance at which a set share of good images raise a false
alarm (``edgetl train --task anomaly --max-false-alarm``). Quantization moves every distance a
little, and mostly one way (int8 noise in the features adds distance, whatever its sign), so the
float threshold would raise more false alarms on the device than the user asked for. A lossy
export therefore converts the detector cut before its decision once, runs it through the runtime
on the run's held-out good images, and sets the decision layer's threshold and width from *those*
distances before converting the file that ships. The contract stays the run's, byte for byte: its
threshold (0.5 on the bounded score) means "the false-alarm target" in every export.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from edgetl_runtime.contract import ModelSpec

from ..anomaly.padim import with_synthetic_anomalies


class Recalibration(NamedTuple):
    """The decision of one export: its threshold and width (distance units) and the float model's."""

    threshold: float
    width: float
    float_threshold: float
    held_out: int
    max_false_alarm: float

    def note(self) -> str:
        return (f"threshold re-set for this export on the {self.held_out} held-out good images: distance "
                f"{self.threshold:.4g} (float model: {self.float_threshold:.4g}) keeps false alarms at "
                f"{self.max_false_alarm:g}")  # fmt: skip


def calibration_set(pixels: np.ndarray) -> np.ndarray:
    """Return the int8 calibration images: ``pixels`` and a synthetic-defect copy of each.

    Calibrated on good images alone, every tensor's range ends at good distances and every defect
    saturates to one value.
    """
    return with_synthetic_anomalies(pixels, seed=0)


def with_synthetic_defects(pixels: np.ndarray, labels: np.ndarray, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """Return validation images plus a synthetic-defect copy of each good one (labelled anomaly), and their count.

    Without defect labels the order of the scores and the ROC AUC of an export could not be compared.
    """
    good_index = spec.good_indices[0]
    good = pixels[labels == good_index]
    if not len(good):
        return pixels, labels, 0
    painted = with_synthetic_anomalies(good, seed=1)[len(good) :]
    return (np.concatenate([pixels, painted]), np.r_[labels, np.full(len(painted), 1 - good_index, labels.dtype)],
            len(painted))  # fmt: skip


def recalibrate(model: Any, target: Any, options: Any, calibration: np.ndarray | None, run: Any,
                held_out: np.ndarray) -> tuple[Any, Recalibration | None]:  # fmt: skip
    """Return ``(model with this export's decision, what was set)``; the model unchanged for fp32 or without data.

    ``held_out``: uint8 pixels of the run's held-out good images.
    """
    import edgetl_runtime

    from .._tf import keras
    from ..anomaly.fit import threshold_and_width
    from ..anomaly.graph import distance_model, layer_classes

    max_false_alarm = ((run.config or {}).get("options") or {}).get("max_false_alarm") if run is not None else None
    if options.quantization == "fp32" or not max_false_alarm or len(held_out) < 2:
        return model, None
    distances = distance_model(model)
    folder = Path(tempfile.mkdtemp(prefix="edgetl-anomaly-"))
    try:
        path = folder / ("distances.onnx" if options.format == "onnx" else "distances.tflite")
        path.write_bytes(target.convert(distances, options, calibration))
        exported = edgetl_runtime.load(path, device="cpu")
        values = np.concatenate([exported.scores(held_out[i : i + 32]) for i in range(0, len(held_out), 32)])
        del exported
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    threshold, width = threshold_and_width(values.max(axis=1), float(max_false_alarm))
    old = model.get_layer("anomaly_decision")
    scores, heatmap = layer_classes()["edgetl>AnomalyDecision"](threshold, width, name="anomaly_decision")(
        model.get_layer("anomaly_distance").output)
    recalibrated = keras().Model(model.input, [scores, heatmap], name=model.name)
    return recalibrated, Recalibration(threshold, width, old.threshold, len(held_out), float(max_false_alarm))

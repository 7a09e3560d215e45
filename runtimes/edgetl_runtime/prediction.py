"""What a prediction returns and what a load reports: :class:`Prediction`, :class:`ModelInfo`.

The result types of :mod:`edgetl_runtime.model`, kept apart from the loading and inference code;
``edgetl_runtime.model`` re-exports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from .backends import TensorSpec
from .contract import ExportInfo, ModelSpec


class ClassProbabilities(Mapping[str, float]):
    """Every class's probability, as a read-only mapping built on first use (``predict`` stays cheap).

    ``array`` is the row of float32 probabilities in label order.
    """

    __slots__ = ("labels", "array", "_index")

    def __init__(self, labels: tuple[str, ...], array: np.ndarray):
        self.labels, self.array = labels, array
        self._index: dict[str, int] | None = None

    def __getitem__(self, name: str) -> float:
        if self._index is None:
            self._index = {label: i for i, label in enumerate(self.labels)}
        return float(self.array[self._index[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k!r}: {float(v):.3g}" for k, v in zip(self.labels[:4], self.array[:4]))
        return "{" + shown + (", ...}" if len(self.labels) > 4 else "}")

    def to_dict(self) -> dict[str, float]:
        return {name: float(p) for name, p in zip(self.labels, self.array.tolist())}


class Prediction(NamedTuple):
    """One image's result: the decision first, then the most probable class.

    ``verdict``: ``"defect"`` when ``defect_score >= threshold``, else ``"good"``; None for a model
    that names no good class (a generic third-party classifier). ``defect_score``: ``1 - sum of the
    good classes' probabilities`` (None likewise). ``top_class``/``top_probability``: the most
    probable class and its probability; they can disagree with the verdict, which is the decision.
    ``probabilities``: every class's probability (a mapping built on first use). ``timings``:
    ``preprocess``, ``inference`` and ``postprocess`` in milliseconds. ``heatmap``: for an anomaly
    detector, where the image looks anomalous, (rows, cols) in [0, 1] (see :meth:`Model.scores_and_heatmaps`);
    None for a classifier.
    """

    verdict: str | None
    defect_score: float | None
    threshold: float | None
    top_class: str
    top_probability: float
    probabilities: ClassProbabilities
    timings: dict[str, float]
    heatmap: np.ndarray | None = None  # anomaly detectors: (rows, cols) float32 in [0, 1], 0.5 = threshold scale
    # "raw": a bare model's outputs that cannot be probabilities (logits): top_probability and probabilities
    # hold the raw values, shown as top_score and scores, and there is no verdict
    score_kind: str = "probabilities"

    @property
    def is_defect(self) -> bool | None:
        """True for a defect verdict, False for good, None without good classes."""
        return None if self.verdict is None else self.verdict == "defect"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: the same field names as the CLI's columns."""
        out = self._asdict()
        out["probabilities"] = self.probabilities.to_dict()
        if self.score_kind == "probabilities":
            del out["score_kind"]
        else:
            out["top_score"], out["scores"] = out.pop("top_probability"), out.pop("probabilities")
        if self.heatmap is None:
            del out["heatmap"]
        else:
            out["heatmap"] = np.round(self.heatmap.astype(np.float64), 4).tolist()
        return out


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded: file, format, engine, device, the model contract and tensor details.

    ``spec`` is the contract in use (the embedded one, with any overrides given to :func:`load`);
    ``embedded_spec`` is the one stored in the file, unchanged (None for a bare model).
    """

    path: str
    format: str  # tflite | onnx
    engine: str  # litert | tflite_runtime | tensorflow | edgetpu | onnxruntime
    device: str  # what runs it: cpu, edgetpu:usb, cuda:0, tensorrt:0
    provider: str  # the kernels that ran: xnnpack, builtin kernels, edgetpu delegate, an ONNX Runtime provider
    threads: int | None
    spec: ModelSpec
    embedded_spec: ModelSpec | None
    export: ExportInfo | None  # format/quantization of the export, when the file says
    input: TensorSpec
    output: TensorSpec
    notes: tuple[str, ...] = ()  # things the user should know (labels fitted, CPU fallback taken)

    @property
    def embedded_metadata(self) -> bool:
        """True when the file carries an edgetl contract (False for a bare third-party model)."""
        return self.embedded_spec is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "engine": self.engine,
            "device": self.device,
            "provider": self.provider,
            "threads": self.threads,
            "embedded_metadata": self.embedded_metadata,
            "spec": self.spec.to_dict(),
            "export": None if self.export is None else _export_summary(self.export),
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "notes": list(self.notes),
        }


def _export_summary(export: ExportInfo) -> dict[str, Any]:
    """Return the export facts for display: prototypes summarised as their count, not thousands of numbers."""
    data = json.loads(export.to_json())
    if data.get("prototypes"):
        data["prototypes"] = f"{len(export.prototypes)} x {export.embedding}"
        data.pop("prototype_labels", None)
    return data

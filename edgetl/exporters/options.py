"""Export options: what to build (format, quantization, I/O type), calibration and validation data.

Hardware presets are named constructors, so a caller says what the target is rather than which
converter flags it needs.

>>> ExportOptions.for_edgetpu().quantization, ExportOptions.for_edgetpu().io_type
('int8', 'uint8')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetl_runtime.contract import FORMATS, QUANTIZATIONS

from .errors import ExportError
from .gate import DEFAULT_ALPHA, DEFAULT_MAX_DROP
from .registry import get_target

IO_TYPES = ("uint8", "int8", "float32")
ONNX_OPSET = 13


@dataclass(frozen=True)
class ExportOptions:
    """What to export: target format, quantization, calibration data and validation data.

    ``calib_data``: folder of images for int8 calibration (default: the run's ``train`` split).
    ``calib_samples``: how many calibration images to use (default 200).
    ``io_type``: tensor type of the model's input and output for int8/qat TFLite (default
    ``uint8``: raw pixels in, scale 1 / zero point 0); with a float head (below) the output is
    float32 whatever it says. Float formats ignore it.
    ``val_data``: folder of held-out images for validation (default: the run's ``val`` split).
    ``val_samples``: at most this many validation images (default None: all of them, up to 5000;
    the gate's paired test is surer the more images it sees).
    ``validate``: run the exported file against the float model (default True).
    ``fail_on_validation``: raise when validation fails its tolerances (default True).
    ``qat_epochs`` / ``qat_learning_rate``: the short quantization-aware fine-tune (2 epochs, 1e-5).
    ``opset``: ONNX opset (default 13).
    ``compile_edgetpu``: run ``edgetpu_compiler`` when it is on PATH (default True).
    ``atol`` / ``min_agreement``: override the validation tolerances of
    :data:`edgetl.exporters.validate.TOLERANCES` (an explicit ``min_agreement`` counts every image,
    not only the decisive ones) - e.g. a stricter gate in CI.
    ``tta``: average the scores over the image's four flips inside the exported graph (test-time
    augmentation; four inferences per image). Validation compares against the float model with
    the same averaging.
    ``max_drop``: the gate's hard limit: points of decision accuracy or defect recall the export
    may lose against the float model on the validation images, whatever their number (default 5).
    ``alpha``: the gate's significance: the export also fails when a paired test says it loses
    images beyond chance with a p-value below this (default 0.01); see :mod:`edgetl.exporters.gate`.
    ``float_head``: int8 models (TFLite and ONNX, post-training) compute their classification
    head (dense layer and softmax) in float after the int8 backbone, so that the defect score is
    not rounded to a few dozen values (default True); False keeps every op in int8, as QAT and the
    Edge TPU always do (see :mod:`edgetl.exporters.tflite`).
    ``roi``: the part's box in the frame (``"X,Y,W,H"`` in pixels or fractions, see
    :mod:`edgetl_runtime.roi`), cropped from the calibration and validation images before the
    resize and stored in the file, so the device crops its camera frames the same way.
    ``validate_on``: ``host`` (default) or ``aarch64``: compute the exported file's scores for the
    threshold it re-sets, its drift reference and the gate inside the emulated aarch64 root, as a
    Raspberry Pi or a Jetson's CPU computes them (see :mod:`edgetl.exporters.emulated`).
    ``embedding``: add the classifier's image embedding (its pooled features) as a second output
    (N, 1, 1, size) and a few centres of each label's training embeddings as prototypes, so the
    file can be imprinted on (``edgetl-runtime imprint``). Classifiers only.
    """

    format: str = "tflite"
    quantization: str = "fp32"
    io_type: str = "uint8"
    calib_data: Path | None = None
    calib_samples: int = 200
    val_data: Path | None = None
    val_samples: int | None = None
    validate: bool = True
    fail_on_validation: bool = True
    qat_epochs: int = 2
    qat_learning_rate: float = 1e-5
    qat_batch_size: int = 16
    opset: int = ONNX_OPSET
    compile_edgetpu: bool = True
    atol: float | None = None
    min_agreement: float | None = None
    max_drop: float = DEFAULT_MAX_DROP
    alpha: float = DEFAULT_ALPHA
    tta: bool = False
    embedding: bool = False
    float_head: bool = True
    roi: str | None = None
    validate_on: str = "host"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if self.quantization not in QUANTIZATIONS:
            raise ExportError(f"unknown quantization {self.quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
        if self.io_type not in IO_TYPES:
            raise ExportError(f"unknown io_type {self.io_type!r}; choose one of {', '.join(IO_TYPES)}")
        target = get_target(self.format)
        if self.quantization not in target.quantizations:
            raise ExportError(
                f"--format {self.format} does not support --quant {self.quantization}; supported: "
                f"{', '.join(target.quantizations)}.{target.unsupported_hint(self.quantization)}"
            )
        if self.format == "edgetpu" and self.io_type != "uint8":
            raise ExportError("the Edge TPU needs uint8 input and output: drop --io-type or pass --io-type uint8")
        if self.calib_samples < 1 or (self.val_samples is not None and self.val_samples < 1):
            raise ExportError("calib_samples and val_samples must be at least 1")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise ExportError(f"min_agreement must be within [0, 1], got {self.min_agreement}")
        if self.validate_on not in ("host", "aarch64"):
            raise ExportError(f"validate_on must be host or aarch64, got {self.validate_on!r}")
        if self.validate_on != "host" and self.format == "edgetpu":
            raise ExportError("--validate-on aarch64 runs the file on the CPU; an Edge TPU file is validated on the "
                              "host (its CPU-mapped ops), or on the device with edgetl-runtime bench --data")  # fmt: skip
        if not 0.0 <= self.max_drop <= 100.0:
            raise ExportError(f"max_drop is in points (0..100), got {self.max_drop}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ExportError(f"alpha is a p-value (0..1; 0 turns the paired test off), got {self.alpha}")
        if self.atol is not None and self.atol < 0:
            raise ExportError(f"atol must be >= 0, got {self.atol}")
        if self.embedding and self.tta:
            raise ExportError("--embedding and --tta cannot be combined: the embedding is one view's; export them "
                              "separately")  # fmt: skip
        if self.roi is not None:
            from edgetl_runtime.errors import MetadataError
            from edgetl_runtime.roi import Roi

            try:
                Roi.parse(self.roi)
            except MetadataError as exc:
                raise ExportError(str(exc)) from None
        if self.opset < 13:
            raise ExportError(f"ONNX opset {self.opset} is too old; edgetl exports opset 13 or newer")

    @property
    def is_integer(self) -> bool:
        """True when the exported model computes in int8 (int8 or QAT)."""
        return self.quantization in ("int8", "qat")

    @property
    def has_float_head(self) -> bool:
        """True when the export keeps the classification head in float (post-training int8 on TFLite or ONNX)."""
        return self.float_head and self.quantization == "int8" and self.format in ("tflite", "onnx")

    @property
    def suffix(self) -> str:
        return get_target(self.format).suffix

    @property
    def effective_io_type(self) -> str:
        """Return the tensor type the exported model's input and output will have."""
        io_types = get_target(self.format).io_types
        if not self.is_integer:
            return "float32"
        return io_types[0] if len(io_types) == 1 else self.io_type

    def replace(self, **changes: Any) -> ExportOptions:
        """Return a copy with ``changes`` applied (options are immutable)."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- presets

    @classmethod
    def for_float(cls, format: str = "tflite", **kw: Any) -> ExportOptions:
        """Float32 model: exact, largest, runs anywhere."""
        return cls(format=format, quantization="fp32", **kw)

    @classmethod
    def for_fp16(cls, format: str = "tflite", **kw: Any) -> ExportOptions:
        """Float16 weights: half the size, float accuracy; fast on GPUs."""
        return cls(format=format, quantization="fp16", **kw)

    @classmethod
    def for_dynamic_range(cls, **kw: Any) -> ExportOptions:
        """TFLite dynamic range: int8 weights, float activations; no calibration data needed."""
        return cls(format="tflite", quantization="dynamic", **kw)

    @classmethod
    def for_int8(
        cls, calib_data: str | Path | None = None, format: str = "tflite", io_type: str = "uint8", **kw: Any
    ) -> ExportOptions:
        """Full-integer int8, calibrated on ``calib_data`` (default: the run's training split)."""
        calib = Path(calib_data) if calib_data is not None else None
        return cls(format=format, quantization="int8", io_type=io_type, calib_data=calib, **kw)

    @classmethod
    def for_qat(cls, epochs: int = 2, learning_rate: float = 1e-5, format: str = "tflite", **kw: Any) -> ExportOptions:
        """Quantization-aware fine-tune on the training split, then full-integer int8."""
        return cls(format=format, quantization="qat", qat_epochs=epochs, qat_learning_rate=learning_rate, **kw)

    @classmethod
    def for_edgetpu(cls, calib_data: str | Path | None = None, **kw: Any) -> ExportOptions:
        """Coral Edge TPU: full int8, uint8 I/O, batch 1, then ``edgetpu_compiler`` if installed."""
        calib = Path(calib_data) if calib_data is not None else None
        return cls(format="edgetpu", quantization="int8", io_type="uint8", calib_data=calib, **kw)

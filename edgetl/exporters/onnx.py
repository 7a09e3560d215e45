"""ONNX export through tf2onnx: fp32, fp16 (float32 I/O) and static int8 QDQ, metadata inside the file.

The graph input is named ``image`` (float32 pixels 0..255, NHWC, dynamic batch); the opset is
recorded in the file's export information (``ExportInfo.opset``) and in the export report. Dynamic quantization
is not offered: it breaks MobileNet accuracy. int8 uses ``onnxruntime.quantization.quantize_static``
(QDQ, per-channel weights) calibrated on training images through the runtime's preprocessing.

>>> from edgetl.exporters.onnx import INPUT_NAME
>>> INPUT_NAME
'image'
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from edgetl_runtime.contract import ExportInfo, ModelSpec
from edgetl_runtime.metadata import embed_onnx_metadata

from .errors import ExportError
from .target import Target, full_range

INPUT_NAME = "image"


def to_onnx(model: Any, opset: int) -> Any:
    """Return the ``onnx.ModelProto`` of a Keras ``model``: input ``image`` (N, H, W, C) float32, dynamic N."""
    from edgetl._tf import tensorflow

    tf = tensorflow()
    import tf2onnx

    shape = tuple(model.inputs[0].shape[1:])
    spec = [tf.TensorSpec((None, *shape), tf.float32, name=INPUT_NAME)]
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:
        raise ExportError(f"ONNX conversion (tf2onnx, opset {opset}) failed: {exc.__class__.__name__}: {exc}") from exc
    return proto


def to_fp16(proto: Any) -> Any:
    """Return ``proto`` with float16 weights and compute, keeping float32 input and output.

    Cast nodes at the I/O boundaries keep the interface identical to the fp32 model, so callers
    feed the same float32 pixels.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)


class _Calibration:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over uint8 pixels, one image per batch."""

    def __init__(self, pixels: np.ndarray):
        # Same full 0..255 input range as the TFLite calibration (see target.full_range).
        self._images = iter(full_range(pixels).astype(np.float32))

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {INPUT_NAME: image[None]}

    def rewind(self) -> None:  # pragma: no cover - only used by some calibrators
        pass


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Raise the root logger to ERROR while ONNX Runtime's quantizer runs (it logs advice there), unless -v."""
    from ..console import verbose_logs

    root = logging.getLogger()
    saved = root.level
    if not verbose_logs():
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(saved)


def head_nodes(proto: Any) -> list[str]:
    """Return the names of the classification head's nodes: the last MatMul/Gemm and every node after it.

    tf2onnx lists nodes in topological order, so what follows the classifier's matrix product is
    its bias, softmax and any averaging over flips (``--tta``).
    """
    nodes = list(proto.graph.node)
    last = max((i for i, n in enumerate(nodes) if n.op_type in ("MatMul", "Gemm")), default=None)
    return [] if last is None else [n.name for n in nodes[last:]]


def to_int8(proto: Any, calibration: np.ndarray, workdir: Path, float_head: bool = True) -> Any:
    """Return ``proto`` statically quantized to int8 QDQ (per-channel weights), calibrated on ``calibration``.

    ``float_head``: leave the classification head (:func:`head_nodes`) in float, as the TFLite
    export does (see :mod:`edgetl.exporters.tflite`).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = workdir / "float.onnx", workdir / "int8.onnx"
    onnx.save(proto, src)
    try:
        with _quiet_root_logger():  # "Please consider to run pre-processing": advice for float models
            quantize_static(
                str(src),
                str(dst),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=head_nodes(proto) if float_head else [],
            )
    except Exception as exc:
        raise ExportError(f"ONNX int8 static quantization failed: {exc.__class__.__name__}: {exc}") from exc
    return onnx.load(dst)


def convert(model: Any, options: Any, calibration: np.ndarray | None = None) -> Any:
    """Return the ``onnx.ModelProto`` of ``model`` at ``options.quantization`` (fp32, fp16 or int8)."""
    proto = to_onnx(model, options.opset)
    if options.quantization == "fp16":
        return to_fp16(proto)
    if options.quantization == "int8":
        if calibration is None or not len(calibration):
            raise ExportError("ONNX int8 export needs calibration images; pass --calib DATA or a run with a train split")
        with tempfile.TemporaryDirectory(prefix="edgetl-onnx-") as tmp:
            return to_int8(proto, calibration, Path(tmp), options.has_float_head)
    if options.quantization != "fp32":
        raise ExportError(f"ONNX export does not support {options.quantization!r}; use fp32, fp16 or int8")
    return proto


class OnnxTarget(Target):
    """ONNX for ONNX Runtime (CPU, CUDA, TensorRT): fp32, fp16, static int8 QDQ; float32 I/O."""

    def convert(self, model: Any, options: Any, calibration: np.ndarray | None) -> bytes:
        return convert(model, options, calibration).SerializeToString()

    def embed(self, data: bytes, spec: ModelSpec, info: ExportInfo) -> bytes:
        import onnx

        return embed_onnx_metadata(onnx.load_from_string(data), spec, info).SerializeToString()

    def unsupported_hint(self, quantization: str) -> str:
        if quantization == "dynamic":
            return (" Dynamic quantization is not offered for ONNX: it breaks MobileNet accuracy. "
                    "Use --quant int8 (static QDQ, calibrated on training images) or --quant fp16.")
        return ""


# Dynamic quantization is left out on purpose: it quantizes MatMul/Conv weights per tensor at
# run time and breaks MobileNet accuracy.
ONNX = OnnxTarget(
    name="onnx",
    suffix=".onnx",
    quantizations=("fp32", "fp16", "int8"),
    io_types=("float32",),
    devices=("cpu", "cuda", "tensorrt"),
)

"""Edge TPU export: full-integer uint8 TFLite, an op-by-op compatibility report, then ``edgetpu_compiler``.

The Edge TPU compiler maps ops to the TPU in execution order and stops at the first op it cannot
map: that op and everything after it run on the CPU. :func:`check_compatibility` reads the converted
flatbuffer and reports exactly that, without the compiler, using the operation table of
coral.ai/docs/edgetpu/models-intro ("Supported operations") and its cheap-to-check constraints.

>>> compiler_command("model.tflite", "out")
['edgetpu_compiler', '-s', '-o', 'out', 'model.tflite']
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgetl_runtime.atomic import write_bytes
from edgetl_runtime.contract import ExportInfo, ModelSpec
from edgetl_runtime.metadata import embed_tflite_metadata

from .target import Finalized, ValidationPlan
from .tflite import TfliteTarget

# TFLite builtin op -> Edge TPU op name (coral.ai "Supported operations", compiler 16).
EDGETPU_OPS = {
    "ADD": "Add", "AVERAGE_POOL_2D": "AveragePool2d", "CONCATENATION": "Concatenation",
    "CONV_2D": "Conv2d", "DEPTHWISE_CONV_2D": "DepthwiseConv2d", "EXPAND_DIMS": "ExpandDims",
    "FULLY_CONNECTED": "FullyConnected", "HARD_SWISH": "HardSwish", "L2_NORMALIZATION": "L2Normalization",
    "LOGISTIC": "Logistic", "LSTM": "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM": "LSTM", "MAXIMUM": "Maximum",
    "MAX_POOL_2D": "MaxPool2d", "MEAN": "Mean", "MINIMUM": "Minimum", "MUL": "Mul", "PACK": "Pack",
    "PAD": "Pad", "PRELU": "PReLU", "QUANTIZE": "Quantize", "REDUCE_MAX": "ReduceMax",
    "REDUCE_MIN": "ReduceMin", "RELU": "Relu", "RELU6": "Relu6", "RELU_N1_TO_1": "ReluN1To1",
    "RESHAPE": "Reshape", "RESIZE_BILINEAR": "ResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighbor", "RSQRT": "Rsqrt", "SLICE": "Slice",
    "SOFTMAX": "Softmax", "SPACE_TO_DEPTH": "SpaceToDepth", "SPLIT": "Split", "SQUEEZE": "Squeeze",
    "STRIDED_SLICE": "StridedSlice", "SUB": "Sub", "SUM": "Sum", "SQUARED_DIFFERENCE": "SquaredDifference",
    "TANH": "Tanh", "TRANSPOSE": "Transpose", "TRANSPOSE_CONV": "TransposeConv",
}  # fmt: skip
# Ops documented with "no fused activation function".
_NO_FUSED_ACTIVATION = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}
# Tensor types the TPU computes in; int32 is allowed for biases (constant inputs).
_INT_TYPES = ("INT8", "UINT8")
APT_PACKAGE = "edgetpu-compiler"
INSTALL_HINT = (
    "edgetpu_compiler is not on PATH (it runs on x86-64 Debian/Ubuntu only). Install it with "
    "`sudo apt-get install edgetpu-compiler` from the Coral apt repository "
    "(https://coral.ai/docs/edgetpu/compiler/), then run: {command}"
)


@dataclass(frozen=True)
class OpCheck:
    """One operator of the model: its TFLite name, whether the Edge TPU can run it, and why not."""

    index: int
    op: str
    supported: bool
    reason: str = ""


@dataclass(frozen=True)
class CompatibilityReport:
    """Which ops map to the Edge TPU and the first op that would fall back to the CPU (None if none)."""

    ops: tuple[OpCheck, ...]
    first_cpu_op: OpCheck | None
    compiled_path: Path | None = None
    compiler_log: str | None = None
    compiler_command: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tpu_ops(self) -> tuple[OpCheck, ...]:
        """Ops the compiler maps to the TPU: everything before the first unsupported op."""
        stop = self.first_cpu_op.index if self.first_cpu_op else len(self.ops)
        return self.ops[:stop]

    @property
    def cpu_ops(self) -> tuple[OpCheck, ...]:
        return self.ops[len(self.tpu_ops) :]

    @property
    def fully_mapped(self) -> bool:
        return self.first_cpu_op is None

    def summary(self) -> str:
        """Return one line a user can act on."""
        n, m = len(self.ops), len(self.tpu_ops)
        if self.fully_mapped:
            return f"Edge TPU: all {n} ops map to the TPU"
        op = self.first_cpu_op
        return (
            f"Edge TPU: {m} of {n} ops map to the TPU; op #{op.index} {op.op} falls back to the CPU "
            f"({op.reason}), and the {n - m - 1} ops after it run on the CPU too"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fully_mapped": self.fully_mapped,
            "tpu_ops": len(self.tpu_ops),
            "cpu_ops": len(self.cpu_ops),
            "first_cpu_op": None if self.first_cpu_op is None else vars(self.first_cpu_op),
            "ops": [f"{o.op}{'' if o.supported else ' (' + o.reason + ')'}" for o in self.ops],
            "compiled_path": str(self.compiled_path) if self.compiled_path else None,
            "compiler_command": " ".join(self.compiler_command),
            "compiler_log": self.compiler_log,
            "notes": list(self.notes),
            "summary": self.summary(),
        }


def _enum_names(enum_cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _check_op(op: Any, name: str, tensors: list, buffers: list, schema: Any, types: dict[int, str]) -> str:
    """Return why ``op`` cannot run on the Edge TPU, or "" if it can."""
    if name not in EDGETPU_OPS:
        return "not an Edge TPU operation"
    for i in [*(op.inputs if op.inputs is not None else []), *(op.outputs if op.outputs is not None else [])]:
        if i < 0:
            continue
        t = tensors[i]
        const = t.buffer and buffers[t.buffer].data is not None and len(buffers[t.buffer].data)
        tname = types.get(t.type, str(t.type))
        if tname not in _INT_TYPES and not (const and tname == "INT32"):
            return f"tensor {t.name.decode() if isinstance(t.name, bytes) else t.name} is {tname}, not int8/uint8"
        sig = t.shapeSignature if t.shapeSignature is not None else t.shape
        if sig is not None and any(int(d) < 0 for d in sig):
            return "dynamic tensor shape"
        if t.shape is not None and len(t.shape) > 4:
            return f"{len(t.shape)}-D tensor (at most 4-D)"
        if t.shape is not None and len(t.shape) == 4 and int(t.shape[0]) != 1 and not const:
            return f"batch size {int(t.shape[0])} (the Edge TPU needs batch 1)"
    if name in _NO_FUSED_ACTIVATION:
        options = op.builtinOptions
        act = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
        if act:
            return "fused activation function not supported on this op"
    return ""


def check_compatibility(model: bytes | str | Path) -> CompatibilityReport:
    """Return the Edge TPU compatibility of a TFLite model (bytes or path), op by op, in execution order."""
    from edgetl_runtime.metadata import _tflite_schema

    schema = _tflite_schema()
    data = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
    obj = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    op_names, types = _enum_names(schema.BuiltinOperator), _enum_names(schema.TensorType)
    checks: list[OpCheck] = []
    notes = []
    if obj.subgraphs and len(obj.subgraphs) > 1:
        notes.append(f"model has {len(obj.subgraphs)} subgraphs; only the first is checked")
    graph = obj.subgraphs[0]
    for index, op in enumerate(graph.operators or []):
        code = obj.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            name = f"CUSTOM({custom})"
        reason = _check_op(op, name, graph.tensors, obj.buffers, schema, types)
        checks.append(OpCheck(index=index, op=name, supported=not reason, reason=reason))
    first = next((c for c in checks if not c.supported), None)
    return CompatibilityReport(ops=tuple(checks), first_cpu_op=first, notes=tuple(notes))


def compiler_command(model: str | Path, outdir: str | Path) -> list[str]:
    """Return the ``edgetpu_compiler`` command line that compiles ``model`` into ``outdir``."""
    return ["edgetpu_compiler", "-s", "-o", str(outdir), str(model)]


def compile_model(model: str | Path, timeout_s: float = 600.0) -> tuple[Path | None, str, list[str]]:
    """Run ``edgetpu_compiler`` on ``model`` if installed; return ``(compiled path or None, log, command)``.

    The compiled file is ``<stem>_edgetpu.tflite`` beside ``model``, written atomically; the
    compiler's log is kept beside it as ``<stem>_edgetpu.log``.
    """
    model = Path(model)
    command = compiler_command(model, model.parent)
    if shutil.which("edgetpu_compiler") is None:
        return None, INSTALL_HINT.format(command=" ".join(command)), command
    final = model.parent / f"{model.stem}_edgetpu.tflite"
    # The compiler writes into a private folder beside the model; the result is renamed into
    # place, so a killed compile never leaves a partial *_edgetpu.tflite.
    with tempfile.TemporaryDirectory(prefix=f".{model.stem}.compile.", dir=model.parent) as tmp:
        try:
            proc = subprocess.run(compiler_command(model, tmp), capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, f"edgetpu_compiler did not finish within {timeout_s} s; run it by hand", command
        log = proc.stdout + proc.stderr
        produced = Path(tmp) / final.name
        if proc.returncode != 0 or not produced.is_file():
            return None, f"edgetpu_compiler failed (exit {proc.returncode}):\n{log}", command
        os.replace(produced, final)
    write_bytes(model.parent / f"{model.stem}_edgetpu.log", log.encode())
    return final, log, command


class EdgeTpuTarget(TfliteTarget):
    """Coral Edge TPU: full-integer uint8 TFLite, the op-by-op compatibility report, ``edgetpu_compiler``.

    The artifact that ships is the compiled ``<stem>_edgetpu.tflite`` (the contract re-embedded
    in it); without the compiler it is the int8 file, with a note saying how to compile it.
    """

    def convert(self, model: Any, options: Any, calibration: np.ndarray | None) -> bytes:
        return super().convert(model, options.replace(io_type="uint8", float_head=False), calibration)

    def unsupported_hint(self, quantization: str) -> str:
        return " The Edge TPU runs only fully integer models: use --quant int8 or --quant qat."

    def finalize(self, path: Path, options: Any, spec: ModelSpec, info: ExportInfo) -> Finalized:
        compat = check_compatibility(path)
        if not options.compile_edgetpu:
            log, command, compiled = "compiler not run (compile_edgetpu=False)", compiler_command(path, path.parent), None
        else:
            compiled, log, command = compile_model(path)
        compat = CompatibilityReport(compat.ops, compat.first_cpu_op, compiled, log, tuple(command), compat.notes)
        if compiled is None:
            return Finalized(path, (path,), compat, f"not compiled for the Edge TPU: {log}")
        # The compiler keeps the graph's int8 arithmetic; put the contract (and the fact that it
        # was compiled) into the file that ships.
        write_bytes(compiled, embed_tflite_metadata(compiled.read_bytes(), spec, info.replace(compiled_for="edgetpu")))
        return Finalized(compiled, (path, compiled), compat)

    def validation_plan(self, finalized: Finalized) -> ValidationPlan:
        """Run the compiled file on an Edge TPU when one is here, else the same int8 graph on the CPU."""
        if len(finalized.written) > 1 and _edgetpu_present():
            return ValidationPlan(finalized.artifact, "edgetpu")
        source = finalized.written[0]
        if source == finalized.artifact:
            return ValidationPlan(source, "cpu")
        return ValidationPlan(source, "cpu", f"validated {source.name} on the CPU (no Edge TPU here): "
                              f"the int8 graph that {finalized.artifact.name} was compiled from")


def _edgetpu_present() -> bool:
    from edgetl_runtime.profiles import HostInfo

    return bool(HostInfo.probe().edgetpu)


EDGETPU = EdgeTpuTarget(
    name="edgetpu",
    suffix=".tflite",
    quantizations=("int8", "qat"),
    io_types=("uint8",),
    devices=("edgetpu",),
)

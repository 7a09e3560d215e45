"""Latency of a candidate on the profile's device: measured with the runtime here, or estimated.

*Measured* (the host is the profile's device): the candidate (backbone + global pooling + a
2-class head with random weights: weights do not change the speed) is exported once in the
profile's format and quantization, calibrated on a few of the user's images, cached, and timed
with :func:`edgetl_runtime.bench.run_benchmark` end to end (JPEG decode, resize, inference), as
the profile's budget is stated.

*Estimated* (any other device): the profile's reference model has a p50 on the device
(``[reference] device_p50_ms``, of which ``overhead_ms`` does not grow with the model); the rest
is scaled by the candidate's multiply-accumulates (MACs) over the reference's:

    estimate = overhead_ms + (device_p50_ms - overhead_ms) * MACs(candidate) / MACs(reference)

MACs are counted analytically from the Keras graph (Conv2D, DepthwiseConv2D, Dense). The rule is
rough, and it is only as good as the reference: from int8 MobileNetV2 it put EfficientNet-Lite0's
inference on this project's x86 host at 1.07x the measured time, and on the Raspberry Pi 4's
published XNNPACK table it predicts int8 MobileNetV1 at 1.3x the published figure; from
MobileNetV3-Small (another family: hard-swish, squeeze-excite) it was 11.8x off on the x86 host.
So each profile's reference is the figure nearest to edgetl's default model, and
:func:`reference_figure` names it. Timing both models on the workstation and carrying their
ratio over was tried and rejected: relative speeds do not carry over between CPUs (int8
MobileNetV2 runs faster than MobileNetV3-Small on the x86 host, 2.9x slower on the Pi 4), and
that error is on the optimistic side. docs/select.md has the figures.

>>> estimate_ms(macs=800e6, reference_macs=400e6, reference_p50_ms=10.0, overhead_ms=2.0)
18.0
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["count_macs", "estimate_ms", "Latency", "reference_macs", "reference_figure", "measure_ms", "LatencyError"]

LABELS = ("defect", "good")  # the head of a latency reference: two classes, like a defect classifier


class LatencyError(ValueError):
    """No latency can be had for a profile (no reference figure to estimate from)."""


@dataclass(frozen=True)
class Latency:
    """A candidate's p50 latency (ms, end to end) and how it was had: ``measured`` or ``estimated``."""

    p50_ms: float | None
    source: str  # "measured" | "estimated" | "unknown"
    method: str = ""  # how: timed on the device, or scaled by MACs from the profile's reference figure
    estimated_ms: float | None = None  # the MAC-rule estimate, also kept when measured (to judge the rule)
    p99_ms: float | None = None
    note: str = ""


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else 1 for d in tensor.shape)


def count_macs(model: Any) -> int:
    """Return the multiply-accumulates of one forward pass of a Keras ``model`` (batch 1).

    Counts Conv2D (grouped too), DepthwiseConv2D and Dense layers; pooling, activations, batch
    normalization and element-wise ops are left out (a few per cent of a MobileNet's work).
    """
    from .._tf import keras

    layers = keras().layers
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):  # a Conv2D subclass: test it first
            out = _shape(layer.output)
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * kh * kw * out[3]  # one kh x kw filter per output channel
        elif isinstance(layer, layers.Conv2D):
            out, cin = _shape(layer.output), _shape(layer.input)[-1]
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * kh * kw * (cin // getattr(layer, "groups", 1)) * out[3]
        elif isinstance(layer, layers.Dense):
            shape = _shape(layer.input)
            total += int(np.prod(shape[1:-1])) * shape[-1] * layer.units
    return int(total)


def reference_macs(profile: Any) -> int:
    """Return the MACs of the profile's ``[reference]`` backbone at its input size (built untrained, offline)."""
    from ..backbones import load_backbone

    ref = profile.reference
    return count_macs(load_backbone(ref.backbone, weights=None, input_size=ref.input_size))


def estimate_ms(macs: float, reference_macs: float, reference_p50_ms: float, overhead_ms: float = 0.0) -> float:
    """Return ``overhead_ms + (reference_p50_ms - overhead_ms) * macs / reference_macs`` (ms)."""
    if reference_macs <= 0:
        raise ValueError("the reference model has no counted MACs")
    return float(overhead_ms + (reference_p50_ms - overhead_ms) * macs / reference_macs)


def profile_estimate(profile: Any, macs: float, reference_macs: float) -> float:
    """Return the estimated p50 (ms) on ``profile``'s device of a model of ``macs``; the reference has ``reference_macs``.

    Raises :class:`LatencyError` when the profile has no ``[reference] device_p50_ms``.
    """
    ref = profile.reference
    if ref.device_p50_ms is None:
        raise LatencyError(f"profile {profile.name} ({profile.path}) has no [reference] device_p50_ms, the "
                           "reference model's latency on the device, so edgetl select cannot estimate latencies for "
                           "it; add device_p50_ms, overhead_ms, basis and source to its [reference] table (docs/devices.md)")  # fmt: skip
    return estimate_ms(macs, reference_macs, ref.device_p50_ms, ref.overhead_ms)


def reference_figure(profile: Any) -> str:
    """Return one line naming the figure the profile's estimates rest on, and where it comes from.

    E.g. ``"mobilenet_v2 int8 224 px, 23 ms end to end on raspberry-pi-4 (PUBLISHED: XNNPACK README ...)"``;
    the source's first clause only (the whole is in the profile and in ``select.json``).
    """
    ref = profile.reference
    if ref.device_p50_ms is None:
        return f"no reference figure in {profile.name} ({profile.path})"
    first = (ref.source or "no source given").split("; ")[0]
    return (f"{ref.backbone} {ref.quantization} {ref.input_size[0]} px, {ref.device_p50_ms:g} ms end to end on "
            f"{profile.name} ({str(ref.basis).upper()}: {first})")


def reference_file(cache: Path, backbone: str, size: int, profile: Any) -> Path:
    """Return where the exported latency reference of (backbone, size) for ``profile``'s target is cached."""
    from ..exporters.registry import get_target

    fmt, quant = profile.export.format, profile.export.quantization
    return Path(cache) / "latency" / f"{backbone}-{size}-{fmt}-{quant}{get_target(fmt).suffix}"


def export_reference(backbone_model: Any, key: str, size: int, profile: Any, calib: Path, cache: Path) -> Path:
    """Return a latency reference exported for ``profile``'s target, exporting it (once) when not cached.

    The model is ``backbone_model`` + global pooling + a 2-class softmax head with random weights;
    int8 is calibrated on 16 images of ``calib`` (the user's data). ``key`` names the cached file.
    """
    from edgetl_runtime.contract import InputSpec, ModelSpec, Provenance

    from .._tf import keras
    from ..exporters import ExportOptions, export

    out = reference_file(cache, key, size, profile)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    k = keras()
    k.utils.set_random_seed(0)
    pooled = k.layers.GlobalAveragePooling2D(name="pool")(backbone_model.output)
    scores = k.layers.Dense(len(LABELS), activation="softmax", name="scores")(pooled)
    model = k.Model(backbone_model.input, scores, name=f"latency_{key}_{size}")
    fmt, quant = profile.export.format, profile.export.quantization
    options = ExportOptions(format=fmt, quantization=quant, calib_data=Path(calib), calib_samples=16, validate=False)
    spec = ModelSpec(labels=LABELS, good_labels=("good",), input=InputSpec(size, size),
                     provenance=Provenance(backbone=key))  # fmt: skip
    # Exported in a scratch folder and moved into the cache only when it is what the profile runs:
    # an Edge TPU export whose compilation failed leaves a CPU int8 file that must not be timed later.
    with tempfile.TemporaryDirectory(prefix=".latency-", dir=out.parent) as tmp:
        result = export(model, options, Path(tmp) / out.name, spec=spec)
        if fmt == "edgetpu" and result.note:
            raise LatencyError(f"the Edge TPU compiler did not compile {key}@{size}: {result.note}")
        result.path.replace(out)  # the artifact that ships, whatever its name (a compiled Edge TPU file)
    return out


def measure_ms(path: Path, profile: Any, runs: int = 30, warmup: int = 5) -> dict[str, float]:
    """Return the p50 and p99 end-to-end latency (ms) of the model ``path`` with ``profile``'s runtime settings."""
    from edgetl_runtime.bench import run_benchmark

    report = run_benchmark(path, runs=runs, warmup=warmup, profile=profile)
    total = report.stages["total"]
    return {"p50_ms": float(total.p50), "p99_ms": float(total.p99)}

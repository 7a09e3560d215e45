"""Load a .tflite/.onnx classifier and turn images into :class:`Prediction` tuples.

The model contract embedded by ``edgetl export`` (:class:`~edgetl_runtime.contract.ModelSpec`)
says how to prepare pixels (size, colour mode, resize, normalization) and how to read the scores
(output kind, labels, good labels, threshold); :func:`load` checks it against the model's own
tensors. Bare third-party classifiers load too, given their labels; everything else is read from
the model's input tensor.

>>> model = load("model.tflite")                                    # doctest: +SKIP
>>> model.predict("cell_0001.png")                                  # doctest: +SKIP
Prediction(label='defect', score=0.97, is_defect=True, scores={'defect': 0.97, 'good': 0.03}, ...)
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from . import metadata as md
from .backends import Backend, TensorSpec, open_backend
from .contract import ExportInfo, InputSpec, ModelSpec, default_good_labels
from .errors import MetadataError, ModelFormatError
from .preprocess import ImageSource, load_image, to_model_input

# MobileNet convention for bare float/int8 models: pixels scaled to [-1, 1].
MOBILENET_MEAN, MOBILENET_STD = (127.5,), (127.5,)


def defect_scores(probs: np.ndarray, good: Sequence[int]) -> np.ndarray:
    """Return ``1 - sum(p(good classes))`` for each row of ``probs`` (N, classes), as float64.

    The one definition of the defect score: the runtime's ``is_defect`` and the workstation's
    metrics and threshold choice (``edgetl eval --target-recall``) all call this, so a threshold
    set at an image's exact score classifies that image the same way everywhere. float64: many
    small good-class scores must not lose precision.
    """
    probs = np.asarray(probs)
    return np.clip(1.0 - probs[:, list(good)].astype(np.float64).sum(axis=1), 0.0, 1.0)


class Prediction(NamedTuple):
    """One image's result. ``label``/``score`` are the top class; ``is_defect`` applies the threshold.

    ``is_defect`` is ``defect_score >= threshold`` where ``defect_score = 1 - sum(good scores)``;
    it is None for a model that names no good label (a generic third-party classifier).
    ``timings`` holds ``preprocess``, ``inference`` and ``postprocess`` in milliseconds.
    """

    label: str
    score: float
    is_defect: bool | None
    scores: dict[str, float]
    timings: dict[str, float]
    defect_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


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
    threads: int | None
    spec: ModelSpec
    embedded_spec: ModelSpec | None
    export: ExportInfo | None  # format/quantization of the export, when the file says
    input: TensorSpec
    output: TensorSpec

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
            "threads": self.threads,
            "embedded_metadata": self.embedded_metadata,
            "spec": self.spec.to_dict(),
            "export": None if self.export is None else json.loads(self.export.to_json()),
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
        }


def read_labels(source: str | Path | Sequence[str]) -> tuple[str, ...]:
    """Return labels from a file (one per line, or pycoral's ``"0 cat"`` / ``"0: cat"``) or a list."""
    if not isinstance(source, (str, Path)):
        return tuple(str(s) for s in source)
    try:
        lines = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise MetadataError(f"{source}: cannot read labels file ({exc.strerror or exc})") from None
    lines = [line for line in lines if line]
    numbered = [re.match(r"^(\d+)[:\s]\s*(.+)$", line) for line in lines]
    if lines and all(numbered):
        by_id = {int(m.group(1)): m.group(2).strip() for m in numbered if m}
        return tuple(by_id.get(i, str(i)) for i in range(max(by_id) + 1))
    if not lines:
        raise MetadataError(f"{source}: labels file is empty; write one label per line")
    return tuple(lines)


def fit_labels(labels: tuple[str, ...], n_outputs: int, where: str) -> tuple[str, ...]:
    """Return ``labels`` matched to ``n_outputs``, handling the classic "background" offset.

    ImageNet-era classifiers often have 1001 outputs (class 0 = background) with a 1000-line
    labels file, or a 1001-line file whose first line is "background" for a 1000-output model.
    """
    if len(labels) == n_outputs:
        return labels
    if len(labels) == n_outputs - 1:
        return ("background", *labels)
    if len(labels) == n_outputs + 1:
        return labels[1:]
    raise MetadataError(
        f"{where}: the model has {n_outputs} outputs but {len(labels)} labels were given; "
        "pass a labels file with one line per output class"
    )


def _probabilities(raw: np.ndarray, quant: tuple[float, int] | None, kind: str | None) -> np.ndarray:
    """Return class probabilities (N, C) float32 from a raw output tensor (dequantized, softmaxed).

    ``kind`` is the contract's output kind: ``probabilities`` are returned as they are,
    ``logits`` get a softmax. ``None`` (a bare model, no contract) guesses from the values.
    """
    x = raw.reshape(raw.shape[0], -1)
    if quant:  # real = scale * (q - zero_point); int32 first to avoid uint8 wrap-around
        scale, zero_point = quant
        x = (x.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale)
    x = x.astype(np.float32, copy=False)
    if kind == "probabilities":
        return x
    if kind is None:
        sums = x.sum(axis=1)
        if x.size and x.min() >= -1e-3 and x.max() <= 1 + 1e-3 and np.all(np.abs(sums - 1) < 0.05):
            return np.clip(x, 0.0, 1.0)  # already probabilities (softmax inside the model)
    e = np.exp(x - x.max(axis=1, keepdims=True))  # logits: numerically stable softmax
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Model:
    """A loaded classifier; build it with :func:`load`. ``predict`` is safe from many threads."""

    def __init__(self, backend: Backend, info: ModelInfo, input_quant: tuple[float, int] | None):
        self._backend = backend
        self.info = info
        spec = info.spec
        self.labels = spec.labels
        self._size = spec.input_size
        self._shape = (*self._size, spec.channels)
        self._input_quant = input_quant
        self._good = np.array(spec.good_indices, dtype=np.intp)
        # A bare model has no contract saying what its output holds (None: guessed per batch).
        self._output_kind = spec.output.kind if info.embedded_spec is not None else None

    def __repr__(self) -> str:
        return f"Model({self.info.path!r}, engine={self.info.engine!r}, device={self.info.device!r})"

    @property
    def input_size(self) -> tuple[int, int]:
        """Return the (height, width) in pixels that images are resized to."""
        return self._size

    def pixels(self, image: ImageSource) -> np.ndarray:
        """Return ``image`` as uint8 pixels (H, W, C) at the model's size and colour mode."""
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == self._shape:
            return image  # already decoded at the right size: no copy, no PIL round trip
        inp = self.info.spec.input
        return load_image(image, self._size, color_mode=inp.color_mode, resize=inp.resize)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Return class probabilities (N, n_classes) float32 for uint8 pixels (N, H, W, C)."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.shape[1:] != self._shape:
            raise ValueError(f"expected pixels of shape (N, {', '.join(map(str, self._shape))}), got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        inp, tensor = self.info.spec.input, self._backend.input
        x = to_model_input(pixels, tensor.dtype, inp.pixel_mean, inp.pixel_std, self._input_quant)
        return _probabilities(self._backend.run(x), self._backend.output.quantization, self._output_kind)

    def predict(self, image: ImageSource) -> Prediction:
        """Return the :class:`Prediction` for one image (path, bytes, PIL image or array)."""
        t0 = time.perf_counter()
        pixels = self.pixels(image)
        t1 = time.perf_counter()
        probs = self.scores(pixels[None])
        t2 = time.perf_counter()
        pred = self._prediction(probs[0])
        t3 = time.perf_counter()
        return pred._replace(timings=_timings(t0, t1, t2, t3))

    def predict_batch(self, images: Iterable[ImageSource]) -> list[Prediction]:
        """Return one :class:`Prediction` per image, run as one batch.

        Each prediction's ``preprocess`` time is its own; ``inference`` and ``postprocess`` are the
        batch's divided by its size.
        """
        prep, pixels = [], []
        for image in images:
            t0 = time.perf_counter()
            pixels.append(self.pixels(image))
            prep.append((time.perf_counter() - t0) * 1e3)
        if not pixels:
            return []
        t1 = time.perf_counter()
        probs = self.scores(np.stack(pixels))
        t2 = time.perf_counter()
        preds = [self._prediction(p) for p in probs]
        t3 = time.perf_counter()
        n = len(preds)
        inf, post = (t2 - t1) * 1e3 / n, (t3 - t2) * 1e3 / n
        return [
            p._replace(timings={"preprocess": pre, "inference": inf, "postprocess": post})
            for p, pre in zip(preds, prep)
        ]

    def _prediction(self, probs: np.ndarray) -> Prediction:
        top = int(np.argmax(probs))
        defect_score = is_defect = None
        if self._good.size:
            defect_score = float(defect_scores(probs[None], self._good)[0])
            is_defect = defect_score >= self.info.spec.threshold
        return Prediction(
            label=self.labels[top],
            score=float(probs[top]),
            is_defect=is_defect,
            scores={name: float(s) for name, s in zip(self.labels, probs)},
            timings={},
            defect_score=defect_score,
        )


def _timings(t0: float, t1: float, t2: float, t3: float) -> dict[str, float]:
    return {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}


def _bare_spec(tensor: TensorSpec, labels: tuple[str, ...], where: str) -> ModelSpec:
    """Return the contract of a bare model, read from its input tensor (MobileNet conventions)."""
    shape = tensor.shape
    if len(shape) != 4:
        raise ModelFormatError(f"{where}: expected an image input (N, H, W, C), found shape {shape}")
    if shape[-1] in (1, 3):
        height, width, channels = shape[1], shape[2], shape[3]
    elif shape[1] in (1, 3):  # channels-first ONNX export (N, C, H, W) is not supported
        raise ModelFormatError(f"{where}: channels-first input {shape}; re-export with NHWC input")
    else:
        raise ModelFormatError(f"{where}: cannot tell the image channels from input shape {shape}")
    if height <= 0 or width <= 0:
        raise ModelFormatError(f"{where}: input size is dynamic {shape}; this runtime needs a fixed size")
    raw = np.dtype(tensor.dtype) == np.uint8  # uint8 models take raw pixels
    return ModelSpec(
        labels=labels,
        good_labels=default_good_labels(labels),
        input=InputSpec(
            height=height, width=width, color_mode="rgb" if channels == 3 else "grayscale",
            normalization="model" if raw else "runtime",
            mean=() if raw else MOBILENET_MEAN * channels, std=() if raw else MOBILENET_STD * channels,
        ),  # fmt: skip
    )


def _output_size(tensor: TensorSpec) -> int:
    return int(np.prod([d for d in tensor.shape[1:] if d > 0]) or 0)


def load(
    path: str | Path,
    device: str | None = None,
    threads: int | None = None,
    labels: str | Path | Sequence[str] | None = None,
    *,
    profile: Any = None,
    engine_options: dict[str, Any] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    threshold: float | None = None,
    good_labels: Sequence[str] | None = None,
) -> Model:
    """Return a :class:`Model` for a ``.tflite`` or ``.onnx`` file, ready to predict.

    ``device``: see :mod:`edgetl_runtime.backends` (``cpu``, ``edgetpu[:usb|pci[:N]]``,
    ``cuda[:N]``, ``tensorrt[:N]``; default ``cpu``). ``threads``: CPU threads (default: all
    cores, at most 4). ``profile``: a device profile (name, TOML path or
    :class:`~edgetl_runtime.profiles.DeviceProfile`) whose ``[runtime]`` device, threads and
    engine options apply unless given here. ``engine_options``: LiteRT delegate or ONNX Runtime
    provider options (see docs/devices.md).
    ``labels``: a labels file or list, required for a bare model without an edgetl contract.
    ``mean``/``std`` (pixel units) override the input normalization of a bare model (default:
    raw pixels for uint8 inputs, ``(p - 127.5) / 127.5`` otherwise). ``threshold`` and
    ``good_labels`` override the contract's decision rule.

    Raises :class:`~edgetl_runtime.errors.ContractError` when the embedded contract does not fit
    the model's tensors (input size, channels, number of outputs).
    """
    path = Path(path)
    if profile is not None:
        from .profiles import DeviceProfile, load_profile

        settings = (profile if isinstance(profile, DeviceProfile) else load_profile(profile)).runtime
        # The profile's engine options belong to its device: a different device given here
        # (e.g. the CPU on a Coral host) runs without them.
        if device is None or device == settings.device:
            engine_options = {**settings.options, **(engine_options or {})}
        device = device or settings.device
        threads = threads or settings.threads
    fmt = md.model_format(path)
    data = path.read_bytes()
    try:
        embedded = md.parse_embedded(md.file_entries(data, fmt))
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: not a model: {exc}; the file may be truncated, copy it again") from None
    except MetadataError as exc:
        raise MetadataError(f"{path}: {exc}") from None
    backend = open_backend(path, data, fmt, device or "cpu", threads, engine_options or {})
    n_outputs = _output_size(backend.output)
    where = str(path)
    if embedded.spec is not None:
        spec = embedded.spec
        embedded.spec.check_model(backend.input.shape, n_outputs, where)
        if labels is not None:
            names = fit_labels(read_labels(labels), n_outputs, where)
            spec = spec.replace(labels=names, good_labels=tuple(g for g in spec.good_labels if g in names))
        input_quant = backend.input.quantization
    elif labels is None:
        raise MetadataError(
            f"{path} has no edgetl model contract, so its class names are unknown; pass labels= "
            "(CLI: --labels labels.txt, one class per line), or export it with `edgetl export`"
        )
    else:
        spec = _bare_spec(backend.input, fit_labels(read_labels(labels), n_outputs, where), where)
        # uint8 inputs take raw pixels (the quantization maps 0..255 onto the trained range);
        # int8 and float inputs get mean/std first, then the tensor's own quantization.
        input_quant = None if np.dtype(backend.input.dtype) == np.uint8 else backend.input.quantization
    if n_outputs and len(spec.labels) != n_outputs:
        raise MetadataError(f"{path}: {len(spec.labels)} labels but the model has {n_outputs} outputs")
    channels = spec.channels
    if mean is not None or std is not None:
        inp = spec.input
        new_mean = tuple(float(v) for v in np.broadcast_to(mean if mean is not None else inp.pixel_mean, (channels,)))
        new_std = tuple(float(v) for v in np.broadcast_to(std if std is not None else inp.pixel_std, (channels,)))
        spec = spec.replace(input=InputSpec(inp.height, inp.width, inp.color_mode, inp.resize, "runtime", new_mean, new_std))
        input_quant = backend.input.quantization
    if threshold is not None:
        spec = spec.with_threshold(threshold, "set when loading")
    if good_labels is not None:
        spec = spec.replace(good_labels=tuple(good_labels))
    info = ModelInfo(
        path=str(path),
        format=fmt,
        engine=backend.engine,
        device=backend.device,
        threads=getattr(backend, "threads", threads),
        spec=spec,
        embedded_spec=embedded.spec,
        export=embedded.export,
        input=backend.input,
        output=backend.output,
    )
    return Model(backend, info, input_quant)

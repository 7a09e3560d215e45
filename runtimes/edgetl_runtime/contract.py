"""The model contract: one typed, versioned description of a trained model, from training to device.

``edgetl train`` writes a :class:`ModelSpec` to the run folder (``model_spec.json``) once, when
training finishes; every export embeds those exact bytes; evaluation, export, benchmark and the
runtime read it unchanged. It holds everything needed to turn an image into a decision: the task,
the labels and which of them mean "good", the input geometry and where normalization happens,
what the output holds, the defect-score rule and its threshold, and where the model came from.

What one *export* adds (file format, quantization, I/O type, when) is not part of the contract:
it travels beside it as :class:`ExportInfo`, so the contract of every artifact of a run is the
same, byte for byte.

Schema versions: 2 is this one. Version 1 (the flat ``ModelMetadata`` of edgetl 0.1) is read and
converted, so models exported before still load.

>>> spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(224, 224))
>>> ModelSpec.from_json(spec.to_json()) == spec
True
>>> spec.input_size, spec.channels, spec.threshold
((224, 224), 3, 0.5)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import MetadataError

SCHEMA_VERSION = 2
# Bounds of a contract read from a file someone handed over: past them it is crafted, not trained.
MAX_INPUT_SIDE = 8192  # pixels; a 60000x60000 input would allocate gigabytes per image
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 256
MAX_CONTRACT_BYTES = 16 * 2**20  # the JSON of 100,000 long labels fits easily
MAX_EMBEDDING = 65536  # values in an image embedding (MobileNets: 1024-1280)
TASKS = ("classification", "anomaly", "imprinted")
COLOR_MODES = ("rgb", "grayscale")
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area")
# "model": the graph normalizes (it takes raw pixels 0..255); "runtime": the runtime applies
# (pixel - mean) / std before inference.
NORMALIZATION_PLACES = ("model", "runtime")
# How the input tensor holds an image: (N, H, W, C), TensorFlow's, or (N, C, H, W), PyTorch's (what
# torch.onnx.export writes); and the order of its three colour channels (OpenCV and Caffe models: BGR).
LAYOUTS = ("nhwc", "nchw")
CHANNEL_ORDERS = ("rgb", "bgr")
OUTPUT_KINDS = ("probabilities", "logits")
# The one defect-score rule of classifiers: 1 - sum(probabilities of the good labels).
DEFECT_SCORES = ("one_minus_good",)
# File formats and quantizations, defined once for the exporters, profiles and the runtime.
FORMATS = ("tflite", "edgetpu", "onnx")
QUANTIZATIONS = ("fp32", "fp16", "dynamic", "int8", "qat")

# Labels treated as the "no defect" class when the user does not name one.
GOOD_LABEL_NAMES = ("good", "ok", "normal", "pass", "non_defective", "nondefective", "functional")


def default_good_labels(labels: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Return the labels whose names mean "no defect" (``good``, ``ok``, ``normal``, ...)."""
    return tuple(name for name in labels if name.lower() in GOOD_LABEL_NAMES)


def _short(value: Any, limit: int = 200) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters: an error never quotes kilobytes of a file."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _one_of(value: Any, options: tuple[str, ...], what: str) -> None:
    if value not in options:
        raise MetadataError(f"{what} must be one of {', '.join(options)}, got {_short(value)}")


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: ``height`` x ``width`` pixels, colour mode, resize, normalization.

    ``mean``/``std`` are in pixel units (0..255), ``x = (pixel - mean) / std``, one value per
    channel in the tensor's channel order, and only apply when ``normalization == "runtime"``;
    edgetl models normalize inside the graph (``"model"``), which lets an int8 model take raw
    uint8 pixels. ``layout`` and ``channel_order`` describe the tensor (edgetl's own: NHWC, RGB;
    PyTorch exports: NCHW); the pixels the runtime decodes are always (H, W, C) RGB.
    """

    height: int
    width: int
    color_mode: str = "rgb"
    resize: str = "bilinear"
    normalization: str = "model"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    layout: str = "nhwc"
    channel_order: str = "rgb"

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise MetadataError(f"input {name} must be a positive integer (pixels), got {_short(value)}")
            if value > MAX_INPUT_SIDE:
                raise MetadataError(f"input {name} {value} px is beyond {MAX_INPUT_SIDE} px: not an edge model's input")
        _one_of(self.color_mode, COLOR_MODES, "input color_mode")
        _one_of(self.resize, RESIZE_METHODS, "input resize")
        _one_of(self.normalization, NORMALIZATION_PLACES, "input normalization")
        _one_of(self.layout, LAYOUTS, "input layout")
        _one_of(self.channel_order, CHANNEL_ORDERS, "input channel_order")
        if self.channel_order == "bgr" and self.color_mode != "rgb":
            raise MetadataError("input channel_order 'bgr' is for colour (rgb) inputs, not grayscale")
        if self.normalization == "model" and (self.mean or self.std):
            raise MetadataError("input mean/std are only given when normalization is 'runtime'")
        if self.normalization == "runtime":
            for name in ("mean", "std"):
                values = getattr(self, name)
                if len(values) != self.channels:
                    raise MetadataError(f"input {name} needs {self.channels} values (one per channel), got {_short(values)}")
            if any(s == 0 for s in self.std):
                raise MetadataError(f"input std must not be 0, got {_short(self.std)}")

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1

    @property
    def pixel_mean(self) -> tuple[float, ...]:
        """Return the mean subtracted from each channel before inference (0 when the model normalizes)."""
        return self.mean if self.normalization == "runtime" else (0.0,) * self.channels

    @property
    def pixel_std(self) -> tuple[float, ...]:
        """Return the divisor of each channel before inference (1 when the model normalizes)."""
        return self.std if self.normalization == "runtime" else (1.0,) * self.channels


@dataclass(frozen=True)
class OutputSpec:
    """What the model's outputs hold: class ``probabilities`` (softmax inside) or ``logits``.

    ``heatmap``: (rows, cols) of a second output, an anomaly heatmap (N, rows, cols) with values
    in [0, 1] on the scale of the defect score (0.5 = the score that made the stored threshold);
    empty for a model with one output.
    """

    kind: str = "probabilities"
    heatmap: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _one_of(self.kind, OUTPUT_KINDS, "output kind")
        if self.heatmap and (len(self.heatmap) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_INPUT_SIDE for v in self.heatmap)):
            raise MetadataError(f"output heatmap must be [rows, cols] (positive integers), got {_short(self.heatmap)}")


@dataclass(frozen=True)
class DecisionSpec:
    """How scores become a verdict: ``defect_score >= threshold`` means defective.

    ``defect_score``: ``one_minus_good`` = 1 - sum(probabilities of the good labels).
    ``threshold_source`` says where the threshold came from (a default, a target recall...).
    """

    threshold: float = 0.5
    defect_score: str = "one_minus_good"
    threshold_source: str = "default"

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise MetadataError(f"decision threshold must be a number, got {_short(self.threshold)}")
        if not 0.0 <= self.threshold <= 1.0:  # no float(): a 400-digit integer would overflow it
            raise MetadataError(f"decision threshold must be within [0, 1], got {_short(self.threshold)}")
        _one_of(self.defect_score, DEFECT_SCORES, "decision defect_score")


@dataclass(frozen=True)
class Provenance:
    """Where the model came from: backbone, pretrained weights, training-data hash, SDK version."""

    backbone: str | None = None
    weights: str | None = None
    data_hash: str | None = None
    sdk_version: str | None = None
    created: str | None = None  # when training finished (UTC, ISO 8601)


@dataclass(frozen=True)
class ModelSpec:
    """The model contract (see the module docstring); build it with keyword arguments."""

    labels: tuple[str, ...]
    input: InputSpec
    good_labels: tuple[str, ...] = ()
    task: str = "classification"
    output: OutputSpec = field(default_factory=OutputSpec)
    decision: DecisionSpec = field(default_factory=DecisionSpec)
    provenance: Provenance = field(default_factory=Provenance)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _one_of(self.task, TASKS, "task")
        if not self.labels or not all(isinstance(name, str) and name for name in self.labels):
            raise MetadataError(f"labels must be a non-empty list of non-empty strings, got {_short(self.labels)}")
        if len(self.labels) > MAX_LABELS or any(len(name) > MAX_LABEL_CHARS for name in self.labels):
            raise MetadataError(f"labels: at most {MAX_LABELS} labels of at most {MAX_LABEL_CHARS} characters each")
        if len(set(self.labels)) != len(self.labels):
            twice = next(name for i, name in enumerate(self.labels) if name in self.labels[:i])
            raise MetadataError(f"labels must be unique: {_short(twice)} is there {self.labels.count(twice)} times "
                                f"(of {len(self.labels)} labels)")  # fmt: skip
        unknown = [name for name in self.good_labels if name not in self.labels]
        if unknown:
            raise MetadataError(f"good labels {_short(unknown)} are not among the labels {_short(list(self.labels))}")
        if self.schema_version != SCHEMA_VERSION:
            raise MetadataError(f"a ModelSpec object is schema {SCHEMA_VERSION}, got {_short(self.schema_version)}")
        if self.task == "anomaly" and (len(self.labels) != 2 or len(self.good_labels) != 1):
            raise MetadataError(f"an anomaly detector has two labels, one of them good (e.g. good, anomaly); got "
                                f"labels {list(self.labels)}, good {list(self.good_labels)}")  # fmt: skip
        if self.output.heatmap and self.task != "anomaly":
            raise MetadataError(f"only an anomaly detector has a heatmap output, not a {self.task} model")

    # ------------------------------------------------------------------ derived views

    @property
    def input_size(self) -> tuple[int, int]:
        """Return (height, width) in pixels."""
        return (self.input.height, self.input.width)

    @property
    def channels(self) -> int:
        return self.input.channels

    @property
    def threshold(self) -> float:
        return float(self.decision.threshold)

    @property
    def good_indices(self) -> tuple[int, ...]:
        return tuple(i for i, name in enumerate(self.labels) if name in self.good_labels)

    def replace(self, **changes: Any) -> ModelSpec:
        """Return a copy with top-level fields replaced (the spec itself is immutable)."""
        return dataclasses.replace(self, **changes)

    def with_threshold(self, threshold: float, source: str) -> ModelSpec:
        """Return a copy whose decision uses ``threshold`` (``source`` says how it was chosen)."""
        return self.replace(decision=dataclasses.replace(self.decision, threshold=float(threshold), threshold_source=source))

    # ------------------------------------------------------------------ checks

    def check_model(self, input_shape: tuple[int, ...], output_size: int, where: str) -> None:
        """Raise :class:`~edgetl_runtime.errors.ContractError` unless the tensors fit this contract.

        ``input_shape`` is the model's input, (N, H, W, C) or (N, C, H, W) as the contract's
        ``layout`` says (``-1`` for a dynamic dimension); ``output_size`` the number of values per
        image in its output (0 when unknown).
        """
        from .errors import ContractError

        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 4:
            raise ContractError(f"{where}: the model's input has shape {shape}, not an image batch "
                                f"({'N, C, H, W' if self.input.layout == 'nchw' else 'N, H, W, C'})")  # fmt: skip
        if self.input.layout == "nchw":
            shape = (shape[0], shape[2], shape[3], shape[1])
        found = {"height": shape[1], "width": shape[2], "channels": shape[3]}
        wanted = {"height": self.input.height, "width": self.input.width, "channels": self.channels}
        wrong = [f"{k} {wanted[k]} but the model's input tensor has {found[k]}" for k in found
                 if found[k] > 0 and found[k] != wanted[k]]  # fmt: skip
        if output_size and output_size != len(self.labels):
            wrong.append(f"{len(self.labels)} labels but the model's output has {output_size} values")
        if wrong:
            raise ContractError(
                f"{where}: the embedded model contract does not fit the model: it says {'; '.join(wrong)}. "
                "The file was edited or assembled from mismatched parts; re-export it with `edgetl export`."
            )

    # ------------------------------------------------------------------ (de)serialization

    def to_dict(self) -> dict[str, Any]:
        data = _jsonable(dataclasses.asdict(self))
        if not self.output.heatmap:  # a classifier's contract stays what it was before heatmaps existed
            del data["output"]["heatmap"]
        for key, default in (("layout", "nhwc"), ("channel_order", "rgb")):  # and an NHWC RGB input before layouts
            if data["input"][key] == default:
                del data["input"][key]
        return data

    def to_json(self) -> str:
        """Return the canonical JSON text: the exact bytes stored in the run folder and every export."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """Return the spec described by ``data`` (schema 2, or schema 1 converted)."""
        if not isinstance(data, dict):
            raise MetadataError(f"the model contract must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise MetadataError(f"schema_version must be an integer, got {_short(version)}")
        if version > SCHEMA_VERSION:
            raise MetadataError(
                f"the model contract has schema version {version}; this edgetl-runtime reads up to "
                f"{SCHEMA_VERSION}: upgrade edgetl-runtime (pip install -U edgetl-runtime)"
            )
        try:
            return _from_v1(data) if version == 1 else _from_v2(data)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, MetadataError):
                raise
            raise MetadataError(f"malformed model contract (schema {version}): {exc.__class__.__name__}: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelSpec:
        return cls.from_dict(_parse_json(text, "the model contract"))


@dataclass(frozen=True)
class ExportInfo:
    """What one export added: file format, quantization, tensor I/O type, ONNX opset, when, by what."""

    format: str
    quantization: str
    io_type: str = "float32"
    opset: int | None = None
    compiled_for: str | None = None  # "edgetpu" once edgetpu_compiler has run
    created: str | None = None
    sdk_version: str | None = None
    tta: bool = False  # the scores are averaged over the image's four flips inside the graph
    # ``edgetl export --embedding``: the size of a second output (N, 1, 1, size), the L2-normalisable
    # image embedding the head classifies (0: none); ``prototypes``: unit vectors summarising each
    # label's training images through this file (the centres of a spherical k-means, a few per label,
    # as a label's images are often of several kinds), ``prototype_labels`` the label index of each:
    # what imprinted classes are compared with.
    embedding: int = 0
    prototypes: tuple[tuple[float, ...], ...] = ()
    prototype_labels: tuple[int, ...] = ()
    # The threshold this file decides at, when the export re-set it through its own quantized graph
    # (None: the contract's): int8 moves every defect score a little, mostly one way, so the
    # contract's threshold would call more (or fewer) parts defective than the float model did.
    # ``threshold_source`` says how it was set; the contract itself stays the run's, byte for byte.
    threshold: float | None = None
    threshold_source: str = ""
    # ``edgetl export --roi``: the part's box in the camera frame, cropped before the resize (JSON of
    # :class:`edgetl_runtime.roi.Roi`); the export's calibration and validation images were cropped so.
    roi: list | dict | None = None
    # The distribution of this file's defect scores on the run's validation images (101 quantiles and
    # their count): what the station's drift alarm compares the line's recent parts with.
    reference: dict | None = None

    def __post_init__(self) -> None:
        _one_of(self.format, FORMATS, "export format")
        _one_of(self.quantization, QUANTIZATIONS, "export quantization")
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0):
            raise MetadataError(f"export threshold must be a number within [0, 1], got {str(t)[:40]}")
        if not isinstance(self.threshold_source, str) or len(self.threshold_source) > MAX_LABEL_CHARS * 4:
            raise MetadataError("export threshold_source must be a short text")
        if self.roi is not None:
            from .roi import Roi

            object.__setattr__(self, "roi", Roi.from_json(self.roi).to_json())  # checked, canonical
        if self.reference is not None:
            from .line.drift import check_reference

            try:
                object.__setattr__(self, "reference", check_reference(self.reference))
            except ValueError as exc:
                raise MetadataError(f"export reference: {exc}") from None
        size = self.embedding
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_EMBEDDING:
            raise MetadataError(f"export embedding must be the embedding's size (0 to {MAX_EMBEDDING}), got {_short(size)}")
        protos = self.prototypes
        if not isinstance(protos, (list, tuple)) or len(protos) > MAX_LABELS or (protos and not size):
            raise MetadataError("export prototypes must be a list of vectors (a few per label) of an embedding output")
        rows = []
        for row in protos:
            if not isinstance(row, (list, tuple)) or len(row) != size or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row):
                raise MetadataError(f"export prototypes must be vectors of {size} finite numbers (the embedding size)")
            rows.append(tuple(float(v) for v in row))
        owners = self.prototype_labels
        if not isinstance(owners, (list, tuple)) or len(owners) != len(rows) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < MAX_LABELS for i in owners):
            raise MetadataError("export prototype_labels must give a label index for each prototype")
        object.__setattr__(self, "prototypes", tuple(rows))  # JSON lists in, tuples kept
        object.__setattr__(self, "prototype_labels", tuple(owners))

    def replace(self, **changes: Any) -> ExportInfo:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if not self.embedding:  # an export without an embedding reads as it did before they existed
            del data["embedding"], data["prototypes"], data["prototype_labels"]
        if self.threshold is None:  # nor one without a threshold of its own
            del data["threshold"], data["threshold_source"]
        if self.roi is None:
            del data["roi"]
        if self.reference is None:
            del data["reference"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ExportInfo:
        data = _parse_json(text, "the export information")
        try:
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
            if isinstance(exc, MetadataError):
                raise
            raise MetadataError(f"malformed export information: {exc}") from None


# --------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise MetadataError(f"{what} must be a list of strings, got {_short(value)}")
    return tuple(value)


def _parse_json(text: str | bytes, what: str) -> Any:
    """Return the JSON value of ``text``, bounded in size and depth, or raise :class:`MetadataError`."""
    from .safefile import DataError, loads_json

    if len(text) > MAX_CONTRACT_BYTES:
        raise MetadataError(f"{what} is {len(text)} bytes, beyond {MAX_CONTRACT_BYTES}: not written by edgetl")
    try:
        return loads_json(text, what)  # numbers in range, no NaN, bounded nesting
    except DataError as exc:
        raise MetadataError(str(exc)) from None


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 4 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise MetadataError(f"{what} must be a list of at most 4 finite numbers, got {str(value)[:80]}")
    return tuple(float(v) for v in value)


def _sizes(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 2:
        raise MetadataError(f"{what} must be a list of at most 2 integers, got {str(value)[:80]}")
    return tuple(value)


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise MetadataError(f"'{key}' must be a JSON object, got {type(value).__name__}")
    return value


def _from_v2(data: dict[str, Any]) -> ModelSpec:
    inp = _table(data, "input")
    dec = _table(data, "decision")
    prov = _table(data, "provenance")
    known_prov = {f.name for f in dataclasses.fields(Provenance)}
    return ModelSpec(
        task=data.get("task", "classification"),
        labels=_strings(data["labels"], "labels"),
        good_labels=_strings(data.get("good_labels", []), "good_labels"),
        input=InputSpec(
            height=inp["height"], width=inp["width"], color_mode=inp.get("color_mode", "rgb"),
            resize=inp.get("resize", "bilinear"), normalization=inp.get("normalization", "model"),
            mean=_numbers(inp.get("mean", []), "input mean"), std=_numbers(inp.get("std", []), "input std"),
            layout=inp.get("layout", "nhwc"), channel_order=inp.get("channel_order", "rgb"),
        ),  # fmt: skip
        output=OutputSpec(kind=_table(data, "output").get("kind", "probabilities"),
                          heatmap=_sizes(_table(data, "output").get("heatmap", []), "output heatmap")),
        decision=DecisionSpec(
            threshold=dec.get("threshold", 0.5), defect_score=dec.get("defect_score", "one_minus_good"),
            threshold_source=str(dec.get("threshold_source", "default")),
        ),  # fmt: skip
        provenance=Provenance(**{k: v for k, v in prov.items() if k in known_prov}),
    )


def _from_v1(data: dict[str, Any]) -> ModelSpec:
    """Convert the flat schema-1 metadata of edgetl 0.1 (labels, input_size, mean, std, ...)."""
    size = data["input_size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise MetadataError(f"input_size must be [height, width], got {_short(size)}")
    mean = _numbers(data.get("mean", [0.0, 0.0, 0.0]), "mean")
    std = _numbers(data.get("std", [1.0, 1.0, 1.0]), "std")
    identity = not any(mean) and all(s == 1.0 for s in std)
    labels = _strings(data["labels"], "labels")
    # Schema 1 defaulted good_labels to ("good",) whatever the labels were: keep the ones that exist.
    good = tuple(name for name in _strings(data.get("good_labels", ["good"]), "good_labels") if name in labels)
    return ModelSpec(
        labels=labels,
        good_labels=good,
        input=InputSpec(
            height=size[0], width=size[1], color_mode=data.get("color_mode", "rgb"),
            resize=data.get("resize", "bilinear"), normalization="model" if identity else "runtime",
            mean=() if identity else mean, std=() if identity else std,
        ),  # fmt: skip
        decision=DecisionSpec(threshold=data.get("threshold", 0.5), threshold_source="schema 1 metadata"),
        provenance=Provenance(
            backbone=data.get("backbone"), data_hash=data.get("data_hash"),
            sdk_version=data.get("sdk_version"), created=data.get("created"),
        ),  # fmt: skip
    )


def export_info_from_v1(data: dict[str, Any]) -> ExportInfo | None:
    """Return the export facts a schema-1 metadata object held (format, quantization), if any."""
    fmt, quant = data.get("format"), data.get("quantization", "fp32")
    if fmt not in FORMATS or quant not in QUANTIZATIONS:
        return None
    return ExportInfo(format=fmt, quantization=quant, created=data.get("created"), sdk_version=data.get("sdk_version"))

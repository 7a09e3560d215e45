"""Load a .tflite/.onnx classifier and turn images into :class:`Prediction` tuples.

The model contract embedded by ``edgetl export`` (:class:`~edgetl_runtime.contract.ModelSpec`)
says how to prepare pixels (size, colour mode, resize, normalization) and how to read the scores
(output kind, labels, good labels, threshold); :func:`load` checks it against the model's own
tensors. Bare third-party classifiers load too, given their labels; everything else is read from
the model's input tensor.

>>> model = load("model.tflite")                                    # doctest: +SKIP
>>> model.predict("cell_0001.png")                                  # doctest: +SKIP
Prediction(verdict='defect', defect_score=0.97, threshold=0.5, top_class='defect', top_probability=0.97, ...)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import metadata as md
from .backends import Backend, is_edgetpu_model, open_backend
from .contract import InputSpec, OutputSpec
from .decision import defect_scores
from .labels import distinct_labels, fit_labels, read_labels, read_labels_and_lines
from .errors import ContractError, MetadataError, ModelFormatError
from .imprinted import ImprintBackend
from .modelfile import cpu_build, output_size, probe_build, read_model_file, warm_up
from .readout import bare_guess, bare_spec, extra_outputs, imprinted_backend, probabilities
from .prediction import ClassProbabilities, ModelInfo, Prediction
from .preprocess import ImageSource, from_model_output, load_image, to_model_input
from .probe import enabled as probe_enabled
from .roi import Roi
from .probe import engine_settings, probe

__all__ = ["ClassProbabilities", "Model", "ModelInfo", "Prediction", "load", "probe_build"]


def not_probabilities(row: np.ndarray) -> str | None:
    """Return why a row of output values cannot be class probabilities (None when it can).

    >>> not_probabilities(np.array([0.2, 0.8], np.float32)) is None
    True
    >>> not_probabilities(np.array([-1.3, 2.1], np.float32))
    'a negative value, -1.3'
    """
    low, high = float(row.min()), float(row.max())
    if low < -1e-3:
        return f"a negative value, {low:.4g}"
    if high > 1 + 1e-3:
        return f"a value above 1, {high:.4g}"
    total = float(row.sum())
    if len(row) > 1 and abs(total - 1.0) > 0.05:
        return f"values summing to {total:.4g}, not 1"
    return None


def _is_identity(dtype: Any, mean: Sequence[float], std: Sequence[float], quant: tuple[float, int] | None) -> bool:
    """True when :func:`to_model_input` returns uint8 pixels unchanged for this tensor and normalization."""
    probe = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(len(mean), axis=3)
    out = to_model_input(probe, dtype, tuple(mean), tuple(std), quant)
    return out.dtype == np.uint8 and np.array_equal(out, probe)


class Model:
    """A loaded classifier; build it with :func:`load`. ``predict`` is safe from many threads."""

    def __init__(self, backend: Backend, info: ModelInfo, input_quant: tuple[float, int] | None,
                 heatmap_output: int | None = None, embedding_output: int | None = None, roi: Roi | None = None):
        self._backend = backend
        self._heatmap_output = heatmap_output  # index into backend.outputs, for anomaly detectors
        self._embedding_output = embedding_output  # index of an `edgetl export --embedding` output
        self._primary = next(i for i, t in enumerate(backend.outputs) if t is backend.output)
        self.info = info
        self.roi = roi  # cropped from every image before the resize (None: the whole image)
        spec = info.spec
        self.labels = spec.labels
        self._size = spec.input_size
        self._shape = (*self._size, spec.channels)
        self._input_quant = input_quant
        self._good = np.array(spec.good_indices, dtype=np.intp)
        self._output_kind = spec.output.kind
        self._threshold = spec.threshold
        inp, tensor = spec.input, backend.input
        self._mean, self._std = inp.pixel_mean, inp.pixel_std
        self._layout, self._order = inp.layout, inp.channel_order
        # Decided once: uint8 pixels that go in as they are (edgetl int8 exports, uint8 bare models).
        self._unchecked_output = False  # set by load() for a bare model read without --softmax
        self.output_problem: str | None = None  # why its outputs are not probabilities, once seen
        self._passthrough = (inp.layout == "nhwc" and inp.channel_order == "rgb"
                             and _is_identity(tensor.dtype, self._mean, self._std, input_quant))  # fmt: skip

    def __repr__(self) -> str:
        return f"Model({self.info.path!r}, engine={self.info.engine!r}, device={self.info.device!r})"

    def set_threshold(self, threshold: float, source: str) -> None:
        """Decide at ``threshold`` from now on (``source`` says who set it); the model file is not changed."""
        import dataclasses

        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.info = dataclasses.replace(self.info, spec=self.info.spec.with_threshold(threshold, source))
        self._threshold = float(threshold)

    @property
    def input_size(self) -> tuple[int, int]:
        """Return the (height, width) in pixels that images are resized to."""
        return self._size

    def pixels(self, image: ImageSource) -> np.ndarray:
        """Return ``image`` as uint8 pixels (H, W, C) at the model's size and colour mode, its ROI cropped first."""
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == self._shape:
            return image  # already decoded at the right size: no copy, no PIL round trip
        inp = self.info.spec.input
        return load_image(image, self._size, color_mode=inp.color_mode, resize=inp.resize, roi=self.roi)

    @property
    def has_heatmap(self) -> bool:
        """True for an anomaly detector, whose predictions carry a heatmap."""
        return self._heatmap_output is not None

    def _model_input(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.shape[1:] != self._shape:
            raise ValueError(f"expected pixels of shape (N, {', '.join(map(str, self._shape))}), got {pixels.shape}")
        if self._passthrough or len(pixels) == 0:
            return np.ascontiguousarray(pixels)
        return to_model_input(pixels, self._backend.input.dtype, self._mean, self._std, self._input_quant,
                              self._layout, self._order)  # fmt: skip

    @property
    def has_embedding(self) -> bool:
        """True when :meth:`embeddings` works: an export with ``--embedding``, a bare model, an imprinted model."""
        return (self._embedding_output is not None or self.info.embedded_spec is None
                or isinstance(self._backend, ImprintBackend))  # fmt: skip

    def embeddings(self, pixels: np.ndarray) -> np.ndarray:
        """Return L2-normalised image embeddings (N, size) float32 for uint8 pixels (N, H, W, C).

        The embedding is the output of an ``edgetl export --embedding`` file, the (only) output of a
        bare model flattened (e.g. an embedding extractor's (N, 1, 1, 1024)), or an imprinted model's base's.
        """
        from .imprinted import normalized

        if not self.has_embedding:
            raise ModelFormatError(f"{self.info.path}: this model has no embedding output to imprint on; export it "
                                   "with `edgetl export RUN --embedding ...` (classifiers only)")  # fmt: skip
        x = self._model_input(pixels)
        if isinstance(self._backend, ImprintBackend):
            return self._backend.embed(x)
        index = self._primary if self._embedding_output is None else self._embedding_output
        raw = self._backend.run_all(x)[index] if len(x) else np.zeros((0, output_size(self._backend.outputs[index])))
        return normalized(from_model_output(raw.reshape(len(x), -1), self._backend.outputs[index].quantization))

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Return class probabilities (N, n_classes) float32 for uint8 pixels (N, H, W, C)."""
        x = self._model_input(pixels)
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return probabilities(self._backend.run(x), self._backend.output.quantization, self._output_kind)

    def scores_and_heatmaps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return ``(probabilities (N, classes), heatmaps (N, rows, cols) or None)`` from one inference.

        A heatmap holds, per cell of a grid over the image, the anomaly score of that region on the
        defect score's scale: ``0.5`` is where the stored threshold was set (before any later
        change of the threshold), higher is more anomalous. None for a classifier.
        """
        if self._heatmap_output is None:
            return self.scores(pixels), None
        x = self._model_input(pixels)
        rows, cols = self.info.spec.output.heatmap
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, rows, cols), np.float32)
        outputs = self._backend.run_all(x)
        probs = probabilities(outputs[self._primary], self._backend.output.quantization, self._output_kind)
        tensor = self._backend.outputs[self._heatmap_output]
        maps = from_model_output(outputs[self._heatmap_output], tensor.quantization).reshape(len(x), rows, cols)
        return probs, maps

    def predict(self, image: ImageSource) -> Prediction:
        """Return the :class:`Prediction` for one image (path, bytes, PIL image or array)."""
        t0 = time.perf_counter()
        pixels = self.pixels(image)
        return self.predict_pixels(pixels, {"preprocess": (time.perf_counter() - t0) * 1e3})

    def predict_pixels(self, pixels: np.ndarray, timings: dict[str, float] | None = None) -> Prediction:
        """Return the :class:`Prediction` for uint8 ``pixels`` (H, W, C) already prepared by :meth:`pixels`.

        The inference half of :meth:`predict`, for a pipeline that decodes in other threads;
        ``timings`` (milliseconds) are kept and ``inference``/``postprocess`` added.
        """
        t1 = time.perf_counter()
        probs, maps = self.scores_and_heatmaps(pixels[None])
        t2 = time.perf_counter()
        timings = {**(timings or {}), "inference": (t2 - t1) * 1e3}
        pred = self._prediction(probs[0], timings, None if maps is None else maps[0])
        timings["postprocess"] = (time.perf_counter() - t2) * 1e3
        return pred

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
        probs, maps = self.scores_and_heatmaps(np.stack(pixels))
        t2 = time.perf_counter()
        preds = [self._prediction(p, {}, None if maps is None else maps[i]) for i, p in enumerate(probs)]
        t3 = time.perf_counter()
        n = len(preds)
        inf, post = (t2 - t1) * 1e3 / n, (t3 - t2) * 1e3 / n
        return [
            p._replace(timings={"preprocess": pre, "inference": inf, "postprocess": post})
            for p, pre in zip(preds, prep)
        ]

    def _prediction(self, probs: np.ndarray, timings: dict[str, float], heatmap: np.ndarray | None = None) -> Prediction:
        top = int(probs.argmax())
        if self._unchecked_output:
            problem = not_probabilities(probs)
            if problem is not None:  # logits (or features) printed as probabilities would mislead: raw scores, no verdict
                if self.output_problem is None:
                    self.output_problem = (
                        f"{self.info.path}: its outputs are not probabilities ({problem}); they look like logits: "
                        "pass --softmax (Python: load(softmax=True)) or write its contract with `edgetl-runtime adopt "
                        "--output-kind logits`. Shown as raw scores (top_score), with no verdict")  # fmt: skip
                return Prediction(None, None, None, self.labels[top], float(probs[top]),
                                  ClassProbabilities(self.labels, probs), timings, heatmap, "raw")  # fmt: skip
        defect_score = verdict = threshold = None
        if self._good.size:
            defect_score = float(defect_scores(probs[None], self._good)[0])  # the one definition
            threshold = self._threshold
            verdict = "defect" if defect_score >= threshold else "good"
        return Prediction(verdict, defect_score, threshold, self.labels[top], float(probs[top]),
                          ClassProbabilities(self.labels, probs), timings, heatmap)  # fmt: skip


def open_checked(path: Path, fmt: str, data: bytes, device: str | None = None, threads: int | None = None,
                 engine_options: dict[str, Any] | None = None, allow_cpu_fallback: bool = False) -> Backend:
    """Return the engine for model bytes ``data``, built and run once in a memory-capped child first (see :mod:`.probe`)."""
    # LiteRT can crash on a bad file (a segfault, not an exception): build and run it in a child first.
    # Not a model compiled for the Edge TPU: its delegate (the device itself) belongs to this process.
    # ONNX too: a graph can make the engine allocate gigabytes when it runs; the child's memory is capped.
    if (device or "cpu") == "cpu" and probe_enabled() and not (fmt == "tflite" and is_edgetpu_model(data)):
        confirm = [sys.executable, "-c", "import sys; from edgetl_runtime.modelfile import probe_build; probe_build(*sys.argv[1:])",
                   str(path), json.dumps({"threads": threads, "options": engine_options or {}})]
        probe(path, data, lambda: cpu_build(path, data, fmt, threads, engine_options or {}),
              settings=engine_settings(threads, engine_options, fmt), confirm=confirm)
    backend = open_backend(path, data, fmt, device or "cpu", threads, engine_options or {}, allow_cpu_fallback)
    warm_up(backend, path)
    return backend


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
    softmax: bool = False,
    allow_cpu_fallback: bool = False,
    roi: Roi | str | None = None,
) -> Model:
    """Return a :class:`Model` for a ``.tflite`` or ``.onnx`` file, ready to predict.

    ``device``: see :mod:`edgetl_runtime.backends` (``cpu``, ``edgetpu[:usb|pci[:N]]``,
    ``cuda[:N]``, ``tensorrt[:N]``; default ``cpu``). A requested accelerator that cannot be used
    is an error, unless ``allow_cpu_fallback`` (then ``info.device`` and ``info.notes`` say what
    ran). ``threads``: CPU threads (default: all cores, at most 4). ``profile``: a device profile
    (name, TOML path or :class:`~edgetl_runtime.profiles.DeviceProfile`) whose ``[runtime]``
    device, threads and engine options apply unless given here. ``engine_options``: LiteRT
    delegate or ONNX Runtime provider options (see docs/devices.md).

    ``labels``: a labels file or list, one per output (a bare model without them gets classes
    named by index). A length mismatch is an error, except a first line ``background`` for a
    model without that output (dropped, with a note). ``mean``/``std`` (pixel units) override
    the input normalization of a bare model (default: raw pixels for uint8 inputs,
    ``(p - 127.5) / 127.5`` otherwise). A bare model's output is read as it is (dequantized);
    ``softmax=True`` applies a softmax for a model that outputs logits. ``threshold`` and
    ``good_labels`` override the contract's decision rule. ``roi``: the part's box in the frame,
    cropped before the resize (:class:`~edgetl_runtime.roi.Roi` or ``"X,Y,W,H"``; default: the one
    the file's export stored, else the whole image).

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
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256):
        from .backends import DeviceError

        raise DeviceError(f"threads={threads!r}: give 1 to 256 CPU threads (edge devices have 4 to 12 cores); a huge "
                          "number made LiteRT crash")  # fmt: skip
    unchecked_output = False  # a bare model's output read as probabilities though nothing says it holds them
    fmt, data, artifact = read_model_file(path)
    if artifact is not None and (labels is not None or mean is not None or std is not None or softmax):
        raise MetadataError(f"{path}: an imprinted model names its classes and input itself; labels, mean, std and "
                            "softmax are for bare models")  # fmt: skip
    try:
        embedded = md.parse_embedded(md.file_entries(data, fmt))
        if fmt == "tflite":
            md.check_tflite_tensor_sizes(data)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: not a model: {exc}; the file may be truncated, copy it again") from None
    except MetadataError as exc:
        raise MetadataError(f"{path}: {exc}") from None
    backend = open_checked(path, fmt, data, device, threads, engine_options, allow_cpu_fallback)
    n_outputs = output_size(backend.output)
    where = str(path)
    notes: list[str] = []
    if getattr(backend, "fallback", False):
        notes.append(f"device {device!r} could not be used; running on {backend.device} ({backend.provider}) "
                     "because a fallback was allowed (allow_cpu_fallback, --allow-cpu-fallback)")  # fmt: skip
    names = None
    if labels is not None:
        read, lines = read_labels_and_lines(labels)
        names, note = fit_labels(read, n_outputs, where)
        lines = lines[len(read) - len(names):]  # the ImageNet "background" line dropped by fit_labels
        names, repeated = distinct_labels(names, str(labels) if isinstance(labels, (str, Path)) else "labels", lines)
        notes += [n for n in (note, repeated) if n]
    if embedded.spec is not None:
        spec = embedded.spec
        embedded.spec.check_model(backend.input.shape, n_outputs, where)
        if softmax and spec.output.kind != "logits":
            raise MetadataError(f"{path}: its contract says the output is {spec.output.kind}; --softmax is for "
                                "bare models that output logits")  # fmt: skip
        if names is not None:
            dropped = [g for g in spec.good_labels if g not in names]
            if dropped and good_labels is None:
                raise MetadataError(f"{path}: the good label(s) {dropped} of its contract are not in the labels given; "
                                    "without a good class there is no verdict: pass good_labels= (CLI: use the "
                                    "contract's label names)")  # fmt: skip
            spec = spec.replace(labels=names, good_labels=tuple(g for g in spec.good_labels if g in names))
        input_quant = backend.input.quantization
    else:
        if names is None:
            names = tuple(str(i) for i in range(n_outputs))
            notes.append(f"{path} has no edgetl model contract and no labels were given: classes are named by "
                         "their output index (pass labels=, CLI --labels labels.txt)")  # fmt: skip
        spec = bare_spec(backend.input, names, where)
        spec = spec.replace(output=OutputSpec(kind="logits" if softmax else "probabilities"))
        if mean is None and std is None and artifact is None:
            notes.append(f"{path} has no edgetl model contract: its input is scaled as {bare_guess(backend.input)}, a "
                         "guess; if the model was trained otherwise, write its contract with `edgetl-runtime adopt "
                         f"{path} --preset timm|torchvision|ultralytics-cls|keras-applications -o OUT` (or --mean/--std; "
                         "Python: load(mean=, std=))")  # fmt: skip
        unchecked_output = not softmax and artifact is None
        # uint8 inputs take raw pixels (the quantization maps 0..255 onto the trained range);
        # int8 and float inputs get mean/std first, then the tensor's own quantization.
        input_quant = None if np.dtype(backend.input.dtype) == np.uint8 else backend.input.quantization
    if n_outputs and len(spec.labels) != n_outputs:
        raise MetadataError(f"{path}: {len(spec.labels)} labels but the model has {n_outputs} outputs")
    heatmap_output, embedding_output = extra_outputs(backend, spec, embedded.export, where, embedded.spec is not None)
    if artifact is not None:
        if artifact.spec.input != spec.input:  # the manifest is not under the base's hash: hold it to the base
            raise ContractError(f"{path}: its contract's input ({artifact.spec.input}) is not its base's "
                                f"({spec.input}); the file was altered: imprint again")  # fmt: skip
        backend = imprinted_backend(backend, embedded, artifact, embedding_output, where)
        spec, embedding_output, notes = artifact.spec, None, [n for n in notes if "no edgetl model contract" not in n]
        heatmap_output = None
        counts = ", ".join(f"{name} ({n})" for name, n in zip(artifact.imprinted_labels, artifact.counts))
        notes.append(f"imprinted on {artifact.base_name or 'its base'}: {counts} images")
    channels = spec.channels
    if mean is not None or std is not None:
        inp = spec.input
        new_mean = tuple(float(v) for v in np.broadcast_to(mean if mean is not None else inp.pixel_mean, (channels,)))
        new_std = tuple(float(v) for v in np.broadcast_to(std if std is not None else inp.pixel_std, (channels,)))
        spec = spec.replace(input=dataclasses.replace(inp, normalization="runtime", mean=new_mean, std=new_std))
        input_quant = backend.input.quantization
    if threshold is not None:
        spec = spec.with_threshold(threshold, "set when loading")
    elif embedded.export is not None and embedded.export.threshold is not None and artifact is None:
        spec = spec.with_threshold(embedded.export.threshold, embedded.export.threshold_source or "set by the export")
    if good_labels is not None:
        unknown = sorted(set(good_labels) - set(spec.labels))
        if unknown:
            raise MetadataError(f"{path}: good label(s) {unknown} are not among the model's labels")
        spec = spec.replace(good_labels=tuple(good_labels))
    info = ModelInfo(
        path=str(path),
        format=fmt,
        engine=backend.engine,
        device=backend.device,
        provider=getattr(backend, "provider", backend.engine),
        threads=getattr(backend, "threads", threads),
        spec=spec,
        embedded_spec=embedded.spec if artifact is None else artifact.spec,
        export=embedded.export,
        input=backend.input,
        output=backend.output,
        notes=tuple(notes),
    )
    if roi is None and embedded.export is not None and embedded.export.roi is not None:
        roi = Roi.from_json(embedded.export.roi)
    elif isinstance(roi, str):
        roi = Roi.parse(roi)
    model = Model(backend, info, input_quant, heatmap_output, embedding_output, roi)
    model._unchecked_output = unchecked_output
    return model

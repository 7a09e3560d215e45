"""``imprint``: teach a deployed model new classes from a few images, on the device, without TensorFlow.

>>> from edgetl_runtime import imprint, load                                    # doctest: +SKIP
>>> imprint("model.tflite", {"new-crack": ["a.png", "b.png", "c.png"]}, "model.imprint")
>>> load("model.imprint").predict("cell.png").top_class                        # doctest: +SKIP
'new-crack'

The base is an ``edgetl export --embedding`` classifier (its own labels stay, decided by its
trained head, and the new classes join them), a bare embedding extractor (uint8 in, any output
that flattens to one vector, e.g. Coral's published ones: every class is imprinted), or an
imprinted model (its classes' means are updated as running means, new classes are added). Each
image's embedding is L2-normalised; a class's vector is the mean of its images' embeddings (the
file keeps the running mean and the count, so adding images later needs only the new ones). The
output is written atomically; the base file is never modified. See :mod:`edgetl_runtime.imprinted`
for the file and the scores, docs/imprinting.md for how well it works.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .atomic import write_bytes
from .contract import DecisionSpec, ModelSpec, OutputSpec, Provenance
from .errors import MetadataError, ModelFormatError
from .imprinted import DEFAULT_SCALE, SUFFIX, Artifact
from .model import Model, load
from .modelfile import read_model_file
from .preprocess import ImageSource

BATCH = 16
MAX_CLASSES = 1000


@dataclass(frozen=True)
class ImprintResult:
    """What :func:`imprint` wrote: the file, every label, the images behind each imprinted class, the time per image."""

    path: Path
    labels: tuple[str, ...]
    imprinted: dict[str, int]  # imprinted class -> images behind its mean (all of them, earlier ones too)
    added: dict[str, int]  # imprinted class -> images added by this call
    ms_per_image: float  # decode, resize, embedding and mean update, per image of this call
    base: str

    def to_dict(self) -> dict:
        return {"path": str(self.path), "labels": list(self.labels), "imprinted": self.imprinted,
                "added": self.added, "ms_per_image": round(self.ms_per_image, 3), "base": self.base}  # fmt: skip


@dataclass(frozen=True)
class _Base:
    """What is imprinted on: the file's model format and bytes (read once), an earlier imprint, the head's labels."""

    format: str
    data: bytes
    earlier: Artifact | None
    head_labels: tuple[str, ...]

    @property
    def classes(self) -> int:
        return len(self.head_labels)


def _start(model: Model, base: Path) -> _Base:
    """Return what ``base`` is to imprint on, and check that it can be."""
    fmt, data, earlier = read_model_file(base)
    if earlier is not None:
        return _Base(fmt, data, earlier, earlier.spec.labels[:earlier.base_classes])
    spec, export = model.info.embedded_spec, model.info.export
    if spec is None:
        return _Base(fmt, data, None, ())  # a bare embedding extractor
    if spec.task != "classification":
        raise MetadataError(f"{base}: an edgetl {spec.task} model cannot be imprinted on; use a classifier exported "
                            "with `edgetl export --embedding`")  # fmt: skip
    if not model.has_embedding:
        model.embeddings(np.zeros((0, *model.input_size, spec.channels), np.uint8))  # raises its clear error
    if export is None or set(export.prototype_labels) != set(range(len(spec.labels))):
        raise MetadataError(f"{base}: its embedding output has no prototypes of its labels; export it again with "
                            "`edgetl export --embedding`")  # fmt: skip
    return _Base(fmt, data, None, spec.labels)


def imprint(
    base: str | Path,
    classes: Mapping[str, Sequence[ImageSource]],
    output: str | Path,
    *,
    good: Sequence[str] = (),
    scale: float | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ImprintResult:
    """Imprint ``classes`` (name -> images) onto ``base`` and write the imprinted model to ``output``.

    ``good``: labels that mean "no defect" (added to the base's good labels), so predictions carry
    a defect score and a verdict. ``scale``: the factor on the cosines before the softmax (default
    10; kept from an imprinted base). ``device``/``threads``: where the base computes the
    embeddings (an Edge TPU-compiled base runs on the Edge TPU, and its absence is an error).
    ``progress(class, done, total)`` is called after each batch. Raises :class:`~edgetl_runtime.errors.ImageError` naming an image
    that cannot be read, before anything is written.
    """
    base, output = Path(base), Path(output)
    if not classes:
        raise ValueError("give at least one class to imprint: {'name': [image, ...]}")
    if scale is not None and not 0 < scale <= 1000:
        raise ValueError(f"scale {scale!r}: give a number in (0, 1000] (default {DEFAULT_SCALE:g})")
    if output.suffix != SUFFIX:
        raise ValueError(f"{output}: an imprinted model is written as *{SUFFIX}; name the output *{SUFFIX}")
    model = load(base, device=device, threads=threads)
    start = _start(model, base)
    earlier, head_labels = start.earlier, start.head_labels
    names = list(earlier.imprinted_labels) if earlier else []
    for name, images in classes.items():  # every name and good label checked before any image is read
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"class name {name!r}: give a non-empty name without surrounding spaces")
        if name in head_labels:
            raise ValueError(f"{name!r} is a label of the base's trained head ({', '.join(head_labels)}); its scores "
                             "come from training: imprint a new name")  # fmt: skip
        if isinstance(images, (str, bytes, Path)) or isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError(f"class {name!r}: give a list of images, not one image ({str(images)[:60]!r})")
    unknown = [g for g in good if g not in (*head_labels, *names, *classes)]
    if unknown:
        raise ValueError(f"good label(s) {unknown} are not among the labels {[*head_labels, *names, *classes]}")
    means = list(earlier.means) if earlier else []
    counts = list(earlier.counts) if earlier else []
    added: dict[str, int] = {}
    t0, n_images = time.perf_counter(), 0
    for name, images in classes.items():
        images = list(images)
        if not images:
            raise ValueError(f"class {name!r}: no images given")
        total = np.zeros(means[0].shape if means else 0, np.float64)
        for i in range(0, len(images), BATCH):
            batch = np.stack([model.pixels(img) for img in images[i:i + BATCH]])
            emb = model.embeddings(batch).astype(np.float64).sum(axis=0)
            total = emb if total.size == 0 else total + emb
            if progress:
                progress(name, min(i + BATCH, len(images)), len(images))
        n_images += len(images)
        added[name] = added.get(name, 0) + len(images)
        if name in names:  # running mean: the earlier images are not needed again
            k = names.index(name)
            means[k] = (means[k] * counts[k] + total) / (counts[k] + len(images))
            counts[k] += len(images)
        else:
            names.append(name)
            means.append(total / len(images))
            counts.append(len(images))
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} imprinted classes: at most {MAX_CLASSES}")
    artifact = _artifact(model, base, start, names, means, counts, good, scale)
    per_image = (time.perf_counter() - t0) * 1e3 / max(n_images, 1)
    try:
        path = write_bytes(output, artifact.to_bytes())
    except OSError as exc:  # name the output, not a temporary file beside it
        raise OSError(exc.errno, f"cannot write the imprinted model ({exc.strerror or exc})", str(output)) from None
    return ImprintResult(path, artifact.spec.labels, dict(zip(names, counts)), added, per_image, str(base))


def _artifact(model: Model, base: Path, start: _Base, names: list[str], means: list[np.ndarray], counts: list[int],
              good: Sequence[str], scale: float | None) -> Artifact:  # fmt: skip
    earlier, n_head = start.earlier, start.classes
    labels = (*start.head_labels, *names)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {list(labels)}")
    prior = earlier.spec if earlier else model.info.embedded_spec
    good_labels = tuple(dict.fromkeys([*(prior.good_labels if prior else ()), *good]))
    provenance = prior.provenance if prior else Provenance()
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    spec = ModelSpec(
        task="imprinted", labels=labels, good_labels=good_labels, input=model.info.spec.input, output=OutputSpec(),
        decision=prior.decision if prior and n_head else DecisionSpec(threshold_source="imprinted: nearest class mean"),
        provenance=Provenance(provenance.backbone, provenance.weights, provenance.data_hash,
                              provenance.sdk_version, created),
    )  # fmt: skip
    fmt, data, name = start.format, start.data, earlier.base_name if earlier is not None else base.name
    if earlier is not None:
        scale = earlier.scale if scale is None else scale
    stacked = np.asarray(means, np.float32)
    if not np.isfinite(stacked).all():
        raise ModelFormatError(f"{base}: the base produced non-finite embeddings; the file is corrupted: copy it again")
    return Artifact(spec, name, fmt, data, n_head, stacked.shape[1], stacked, tuple(counts),
                    float(DEFAULT_SCALE if scale is None else scale))  # fmt: skip

"""``edgetl export --embedding``: a classifier that also outputs its image embedding, ready to be imprinted on.

The embedding is the classifier's pooled backbone features (the ``pool`` layer its head reads),
a second output of shape (N, 1, 1, size), the layout of Coral's embedding extractors (so the
scores stay the file's one (N, classes) output). The export facts carry its size and, per label,
a few unit centres (spherical k-means) of the training images' embeddings *through the exported
file itself* (its quantization included): the prototypes that imprinted classes compete with on
the device (:mod:`edgetl_runtime.imprinted`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from edgetl_runtime.contract import ExportInfo, ModelSpec

from .errors import ExportError

POOL_LAYERS = ("pool", "quant_pool")  # the trainer's name, and tfmot's after quantization-aware training
BATCH = 32
# Prototypes per label: a label's images are often of several kinds (mono and poly cells, two part
# variants), and one mean between them sits closer to a new class than any real image does. On ELPV
# one mean per label sent 21 % of the other test cells to a class imprinted from 5 images, 4 per label
# 0.5 % (docs/imprinting.md).
PER_LABEL = 4
IMAGES_PER_PROTOTYPE = 10


def with_embedding(model: Any) -> Any:
    """Return ``model`` with a second output: its pooled features, reshaped to (N, 1, 1, size)."""
    from edgetl._tf import keras

    k = keras()
    names = {layer.name: layer for layer in model.layers}
    pool = next((names[n] for n in POOL_LAYERS if n in names), None)
    if pool is None:
        raise ExportError(f"--embedding: the model has no '{POOL_LAYERS[0]}' layer (the pooled features an edgetl "
                          "classifier's head reads); it was not trained by `edgetl train`")  # fmt: skip
    size = int(pool.output.shape[-1])
    embedding = k.layers.Reshape((1, 1, size), name="embedding")(pool.output)
    return k.Model(model.inputs, [model.outputs[0], embedding], name=f"{model.name}_embedding")


def size(model: Any) -> int:
    """Return the embedding size of a :func:`with_embedding` model."""
    return int(model.outputs[1].shape[-1])


def spherical_kmeans(x: np.ndarray, k: int, iterations: int = 30, seed: int = 0) -> np.ndarray:
    """Return ``k`` unit centres of the unit rows ``x`` (cosine k-means, k-means++ seeding, deterministic)."""
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):  # k-means++: far from the centres so far, by cosine distance
        gap = np.clip(1.0 - (x @ np.stack(centres).T).max(axis=1), 0.0, None)
        centres.append(x[rng.choice(len(x), p=gap / gap.sum())] if gap.sum() > 0 else x[rng.integers(len(x))])
    c = np.stack(centres)
    for _ in range(iterations):
        nearest = (x @ c.T).argmax(axis=1)
        c = np.stack([x[nearest == j].mean(axis=0) if np.any(nearest == j) else c[j] for j in range(k)])
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return c


def prototypes(data: bytes, options: Any, spec: ModelSpec, info: ExportInfo, pixels: np.ndarray,
               labels: np.ndarray, output: Path) -> tuple[tuple[tuple[float, ...], ...], tuple[int, ...]]:  # fmt: skip
    """Return ``(prototypes, their label indices)``: per label, a few unit centres of its images' embeddings
    through the exported file bytes ``data`` (:data:`PER_LABEL`, one per :data:`IMAGES_PER_PROTOTYPE` images).

    ``labels`` index ``spec.labels`` (-1: an image of no label, skipped). Every label needs an image.
    """
    import edgetl_runtime

    missing = [name for i, name in enumerate(spec.labels) if not np.any(labels == i)]
    if missing:
        raise ExportError(f"{output}: --embedding needs training images of every label for its prototypes; none of "
                          f"{missing} among the {len(pixels)} sampled (raise --calib-samples or pass --calib)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=".embedding-", dir=output.parent) as tmp:
        path = Path(tmp) / f"model{options.suffix}"
        path.write_bytes(data)
        model = edgetl_runtime.load(path, device="cpu")
        emb = np.concatenate([model.embeddings(pixels[i:i + BATCH]) for i in range(0, len(pixels), BATCH)])
    if emb.shape[1] != info.embedding:
        raise ExportError(f"{output}: the exported embedding has {emb.shape[1]} values, expected {info.embedding}")
    rows, owners = [], []
    for i in range(len(spec.labels)):
        mine = emb[labels == i]
        k = max(1, min(PER_LABEL, len(mine) // IMAGES_PER_PROTOTYPE))
        for centre in spherical_kmeans(mine, k):
            rows.append(tuple(float(v) for v in np.round(centre, 6)))
            owners.append(i)
    return tuple(rows), tuple(owners)

"""``edgetl export --embedding``: a classifier that also outputs its image embedding, ready to be imprinted on.

The embedding is the classifier's pooled backbone features (the ``pool`` layer its head reads),
a second output of shape (N, 1, 1, size), the layout of Coral's embedding extractors (so the
scores stay the file's one (N, classes) output). The export facts carry its size and, per label,
the normalised mean embedding of the training images *through the exported file itself* (its
quantization included): the prototypes that imprinted classes compete with on the device
(:mod:`edgetl_runtime.imprinted`).
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


def prototypes(data: bytes, options: Any, spec: ModelSpec, info: ExportInfo, pixels: np.ndarray,
               labels: np.ndarray, output: Path) -> tuple[tuple[float, ...], ...]:  # fmt: skip
    """Return per label the normalised mean embedding of ``pixels`` through the exported file bytes ``data``.

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
    rows = []
    for i in range(len(spec.labels)):
        mean = emb[labels == i].mean(axis=0)
        rows.append(tuple(float(v) for v in np.round(mean / max(float(np.linalg.norm(mean)), 1e-12), 6)))
    return tuple(rows)

"""Which (backbone, input size) pairs ``edgetl select`` compares, and their frozen features, cached.

The default grid is every backbone with ImageNet weights available offline, at its native input
size and 32 px below it; the smallest backbone also 32 px above it. The larger backbones' +32 px
points are left out: they are the two most expensive candidates (about a quarter of the whole
feature time on a 2-core CPU) and seldom fit an edge latency budget. ``sizes=`` overrides the
grid for every backbone.

Features are the global average of the backbone's last feature map, extracted once per
(backbone, weights, size, images) and cached as chunks of ``.npy`` files: a rerun, or a run
interrupted half-way, only computes what is missing.

>>> default_sizes("efficientnet_lite0"), default_sizes("efficientnet_lite2")
((192, 224, 256), (228, 260))
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["SelectionError", "Candidate", "default_sizes", "candidate_grid", "FeatureCache", "images_key",
           "pooled_extractor", "CHUNK"]

class SelectionError(ValueError):
    """``edgetl select`` cannot run as asked (no candidate, bad sizes, no profile); the message says what to do."""


CHUNK = 256  # images per cached feature file
SIZE_STEP = 32  # px between grid points: the backbones' strides divide it
WIDE_GRID = ("efficientnet_lite0",)  # backbones also tried 32 px above their native size


@dataclass(frozen=True, order=True)
class Candidate:
    """One pretrained backbone at one square input size (px)."""

    backbone: str
    size: int

    @property
    def name(self) -> str:
        return f"{self.backbone}@{self.size}"


def default_sizes(backbone: str) -> tuple[int, ...]:
    """Return the default input sizes (px) tried for ``backbone``."""
    from ..backbones import get_spec

    native = get_spec(backbone).default_input_size[0]
    above = (native + SIZE_STEP,) if backbone in WIDE_GRID else ()
    return (native - SIZE_STEP, native, *above)


def candidate_grid(backbones: Sequence[str] | None = None,
                   sizes: Sequence[int] | None = None) -> tuple[list[Candidate], list[tuple[str, str]]]:  # fmt: skip
    """Return ``(candidates, skipped)``: the grid, and ``(backbone, reason)`` for each backbone left out.

    ``backbones``: names (default: every backbone edgetl knows); one whose ImageNet weights are not
    available offline is skipped with the reason. ``sizes``: input sizes in px for every backbone
    (default :func:`default_sizes`). Raises :class:`SelectionError` for a bad size and
    :class:`~edgetl.backbones.UnknownBackbone` for an unknown name.
    """
    from ..backbones import get_spec, list_backbones, weights_available_offline

    names = list(dict.fromkeys(backbones)) if backbones else list_backbones()
    for name in names:
        get_spec(name)  # UnknownBackbone (a ValueError) lists the valid names
    if sizes is not None:
        bad = [s for s in sizes if not 32 <= int(s) <= 1024]
        if bad or not len(sizes):
            raise SelectionError(f"--sizes must be input sizes from 32 to 1024 px, got {list(sizes)}")
    chosen, skipped = [], []
    for name in names:
        if not weights_available_offline(name):
            skipped.append((name, f"ImageNet weights not available offline ({get_spec(name).weights_source}); "
                                  f"load_backbone('{name}') once with network access to cache them"))  # fmt: skip
            continue
        chosen += [Candidate(name, int(s)) for s in dict.fromkeys(sizes or default_sizes(name))]
    return chosen, skipped


def pooled_extractor(backbone: Any) -> Any:
    """Return a Keras model: pixels 0..255 (N, H, W, 3) -> the globally averaged last feature map (N, C)."""
    from .._tf import keras

    k = keras()
    pooled = k.layers.GlobalAveragePooling2D(name="select_pool")(backbone.output)
    return k.Model(backbone.input, pooled, name=f"pooled_{backbone.name}")


class FeatureCache:
    """Pooled features per (candidate, weights, images), as ``.npy`` chunks under ``root``.

    ``images_key`` must change whenever the images, their labels or their order change (see
    :func:`images_key`): the chunks hold rows in the order of the images.
    """

    def __init__(self, root: str | Path, images_key: str):
        self.root = Path(root)
        self.images_key = images_key

    def folder(self, candidate: Candidate, weights: str) -> Path:
        key = {"backbone": candidate.backbone, "size": candidate.size, "weights": weights, "images": self.images_key,
               "pooling": "global-average", "version": 1}  # fmt: skip
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.root / f"features-{candidate.backbone}-{candidate.size}-{weights}-{digest}"

    def complete(self, candidate: Candidate, weights: str, n: int) -> bool:
        """Return True when every chunk of the ``n`` images' features is cached."""
        folder = self.folder(candidate, weights)
        return all((folder / f"{i // CHUNK:05d}.npy").is_file() for i in range(0, n, CHUNK))

    def features(self, candidate: Candidate, weights: str, images: Callable[[], np.ndarray], n: int,
                 model: Callable[[], Any], batch_size: int = 32,
                 advance: Callable[[int], None] | None = None) -> np.ndarray:  # fmt: skip
        """Return the (n, C) features, computing only the chunks not yet cached.

        ``images()`` returns the uint8 pixels (n, H, W, 3) and ``model()`` the pooled extractor;
        neither is called when everything is cached. ``advance(k)`` is told about each chunk done.
        """
        from edgetl_runtime.atomic import atomic_path

        folder = self.folder(candidate, weights)
        folder.mkdir(parents=True, exist_ok=True)
        parts, pixels, extractor = [], None, None
        for start in range(0, n, CHUNK):
            path = folder / f"{start // CHUNK:05d}.npy"
            part = _cached(path, min(CHUNK, n - start))
            if part is None:
                pixels = images() if pixels is None else pixels
                extractor = model() if extractor is None else extractor
                batch = pixels[start : start + CHUNK].astype(np.float32)
                part = extractor.predict(batch, batch_size=batch_size, verbose=0).astype(np.float32)
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, part)
            parts.append(part)
            if advance is not None:
                advance(min(CHUNK, n - start))
        return np.concatenate(parts)


def _cached(path: Path, rows: int) -> np.ndarray | None:
    """Return the cached chunk at ``path`` when it holds ``rows`` finite feature rows, else None (recompute)."""
    if not path.is_file():
        return None
    try:
        part = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # a chunk damaged on disk is computed again
        return None
    ok = part.ndim == 2 and part.shape[0] == rows and part.dtype == np.float32 and np.isfinite(part).all()
    return part if ok else None


def images_key(dataset: Any) -> str:
    """Return a key of a data set's files' contents, labels *and order* (``content_hash`` ignores order)."""
    order = "\n".join(f"{s.path}\t{s.label}" for s in dataset.samples)
    return hashlib.sha256(f"{dataset.content_hash()}\n{order}".encode()).hexdigest()[:16]


"""``edgetl data inspect``: what a data set holds (counts, sizes, modes, duplicates, unreadable files)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from edgetl_runtime.errors import ImageError
from edgetl_runtime.preprocess import probe_image

from .dataset import _combined_hash, file_digest
from .loading import _run_parallel
from .scan import scan_dataset


def inspect_dataset(path: str | Path) -> dict[str, Any]:
    """Return a report on the data set at ``path``: counts, sizes, modes, duplicates, unreadable files."""
    dataset = scan_dataset(path)
    infos: list[Any] = [None] * len(dataset)
    digests: list[str] = [""] * len(dataset)

    def probe(i: int) -> None:
        file = dataset.samples[i].path
        try:
            infos[i] = probe_image(file)
        except ImageError as exc:
            infos[i] = exc.reason
        try:
            digests[i] = file_digest(file)
        except OSError as exc:
            digests[i] = f"unreadable:{exc}"

    _run_parallel(probe, len(dataset), "Inspecting images", progress=False)
    good = [info for info in infos if not isinstance(info, str)]
    groups: dict[str, list[str]] = {}
    for sample, digest in zip(dataset.samples, digests):
        groups.setdefault(digest, []).append(str(sample.path))
    return {
        "path": str(Path(path).expanduser().absolute()),
        "root": str(dataset.root) if dataset.root else None,
        "total": len(dataset),
        "classes": dataset.counts(),
        "sizes": _counted(f"{i.width}x{i.height}" for i in good),
        "modes": _counted(i.mode for i in good),
        "formats": _counted(i.format for i in good),
        "duplicates": sorted(sorted(g) for g in groups.values() if len(g) > 1),
        "unreadable": [
            {"path": str(s.path), "reason": info} for s, info in zip(dataset.samples, infos) if isinstance(info, str)
        ],
        "content_hash": _combined_hash(dataset, digests),
    }


def _counted(values: Iterable[str]) -> dict[str, int]:
    return dict(Counter(values).most_common())

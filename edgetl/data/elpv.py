"""The ELPV solar-cell data set (PyPI ``elpv-dataset``) written out as an edgetl folder data set.

ELPV holds 2624 electroluminescence images (300x300, 8-bit grayscale) of mono- and
polycrystalline solar cells, each with the probability (0, 1/3, 2/3, 1) that experts judged it
defective. A cell is ``defect`` when that probability is above 0.5.

>>> from edgetl.data.elpv import defect_label
>>> defect_label(2 / 3), defect_label(1 / 3)
('defect', 'good')
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgetl_runtime.atomic import write_json

from .dataset import DatasetError, _allocate

# Marks OUT as written by edgetl; "complete" is set only after every part is in place.
MARKER = ".edgetl-elpv.json"
_PARTS = ("train", "test", "manifest.csv")
_INSTALL_HINT = "the ELPV data set needs the elpv-dataset package: pip install 'edgetl[datasets]'"


@dataclass(frozen=True)
class ElpvCell:
    """One ELPV image as the package lists it."""

    source: Path
    probability: float
    cell_type: str  # "mono" or "poly"

    @property
    def label(self) -> str:
        return defect_label(self.probability)


def defect_label(probability: float) -> str:
    """Return ``"defect"`` when the experts' defect probability is above 0.5, else ``"good"``."""
    return "defect" if probability > 0.5 else "good"


def elpv_cells() -> list[ElpvCell]:
    """Return every cell listed by the installed ``elpv-dataset`` package, in its order."""
    try:
        from elpv_dataset import utils
    except ImportError:
        raise DatasetError(_INSTALL_HINT) from None
    labels = Path(utils.__file__).parent / "data" / "labels.csv"
    if not labels.is_file():
        raise DatasetError(f"{labels}: missing from the installed elpv-dataset; reinstall it ({_INSTALL_HINT})")
    cells = []
    # The package's own load_dataset() decodes all 2624 images into memory; the PNG files are
    # already what we want on disk, so read its label list (same columns) and copy the files.
    for line_no, line in enumerate(labels.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rel, prob, kind = line.split()
            cells.append(ElpvCell(labels.parent / rel, float(prob), kind))
        except ValueError:
            raise DatasetError(f"{labels}, line {line_no}: expected 'path probability type', got {line!r}") from None
    return cells


def _assign_splits(cells: list[ElpvCell], split: float, seed: int, limit: int | None) -> dict[int, str]:
    """Return cell index -> "train"/"test", stratified by (label, cell type)."""
    strata: dict[tuple[str, str], list[int]] = {}
    for i, cell in enumerate(cells):
        strata.setdefault((cell.label, cell.cell_type), []).append(i)
    keys = sorted(strata)
    rng = np.random.default_rng(seed)
    shuffled = {k: [strata[k][j] for j in rng.permutation(len(strata[k]))] for k in keys}
    if limit is not None and limit < len(cells):  # a smaller, equally stratified selection
        take = _allocate([len(strata[k]) for k in keys], limit, minimum=1)
        shuffled = {k: shuffled[k][:n] for k, n in zip(keys, take)}
    total = sum(len(v) for v in shuffled.values())
    n_train = _allocate([len(shuffled[k]) for k in keys], int(round(total * split)))
    return {
        i: ("train" if j < n else "test")
        for k, n in zip(keys, n_train)
        for j, i in enumerate(shuffled[k])
    }


def materialize_elpv(
    out: str | Path,
    split: float = 0.75,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ELPV as ``OUT/{train,test}/{good,defect}/*.png`` plus ``OUT/manifest.csv``; return a summary.

    ``split`` is the train fraction, stratified by label and cell type (mono/poly); ``limit``
    keeps a smaller stratified selection (for quick experiments). Re-running with the same
    arguments on a complete tree does nothing; other arguments rewrite it. The tree is built in a
    temporary folder and moved in place, and a marker file is written last, so an interrupted
    run is never taken for a complete one.
    """
    if not 0.0 < split < 1.0:
        raise DatasetError(f"split is the train fraction and must be between 0 and 1 (exclusive), got {split}")
    if limit is not None and limit < 8:
        raise DatasetError(f"limit must be at least 8 (two images per label and cell type), got {limit}")
    out = Path(out).expanduser().absolute()
    args = {"split": split, "seed": seed, "limit": limit}
    marker = out / MARKER
    previous = _read_marker(marker)
    complete = bool(previous and previous.get("complete"))
    if complete and previous["args"] == args and all((out / p).exists() for p in _PARTS):
        return {**previous["summary"], "reused": True}
    if not previous:
        clash = [p for p in _PARTS if (out / p).exists()]
        if clash:
            raise DatasetError(
                f"{out} already holds {', '.join(clash)} not written by 'edgetl data elpv'; "
                "choose an empty or new folder, or remove them"
            )
    cells = elpv_cells()
    splits = _assign_splits(cells, split, seed, limit)
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"args": args, "complete": False})  # incomplete until the end
    for stale in out.glob(".building-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    staging = out / f".building-{os.getpid()}"
    try:
        rows = _write_tree(staging, cells, splits, progress)
        for part in _PARTS:  # swap the finished parts in
            target = out / part
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(staging / part, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = _summary(out, rows, args)
    write_json(marker, {"args": args, "complete": True, "summary": summary})
    return {**summary, "reused": False}


def _write_tree(root: Path, cells: list[ElpvCell], splits: dict[int, str], progress: bool) -> list[dict[str, Any]]:
    from rich.progress import track

    for part in ("train", "test"):
        for label in ("good", "defect"):
            (root / part / label).mkdir(parents=True)
    rows = []
    chosen = sorted(splits)
    for i in track(chosen, description="Writing ELPV images", transient=True, disable=not progress):
        cell = cells[i]
        rel = Path(splits[i]) / cell.label / cell.source.name
        if not cell.source.is_file():
            raise DatasetError(f"{cell.source}: listed by elpv-dataset but missing; reinstall it ({_INSTALL_HINT})")
        shutil.copyfile(cell.source, root / rel)
        rows.append({
            "path": rel.as_posix(),
            "label": cell.label,
            "probability": f"{cell.probability:.4f}",
            "type": cell.cell_type,
            "split": splits[i],
        })
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "label", "probability", "type", "split"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (root / "manifest.csv").write_text(buffer.getvalue())
    return rows


def _summary(out: Path, rows: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    counts = {part: {"good": 0, "defect": 0} for part in ("train", "test")}
    by_type = {part: {"mono": 0, "poly": 0} for part in ("train", "test")}
    for row in rows:
        counts[row["split"]][row["label"]] += 1
        by_type[row["split"]][row["type"]] = by_type[row["split"]].get(row["type"], 0) + 1
    total = len(rows)
    defects = sum(c["defect"] for c in counts.values())
    return {
        "out": str(out),
        "train_dir": str(out / "train"),
        "test_dir": str(out / "test"),
        "manifest": str(out / "manifest.csv"),
        "total": total,
        "counts": counts,
        "cell_types": by_type,
        "defect_share": round(defects / total, 4) if total else 0.0,
        **args,
    }


def _read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None

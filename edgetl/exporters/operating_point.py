"""A lossy export's own threshold: the one at which it calls as many parts defective as the float model.

Quantization moves every defect score a little, and not evenly: on ELPV an int8 ONNX file scored
good cells about 0.03 higher than the float model, so at a low threshold (0.12, chosen for 95 %
recall) it rejected 8 points more good cells. Re-set through the exported file itself, the
threshold keeps the float model's operating point: the export's scores on the validation images
are matched to the float model's by rank (a quantile match, label-free, whatever rule chose the
threshold), and the exported threshold falls where the contract's threshold falls among the
float scores. The contract stays the run's, byte for byte; the file's export facts carry the
threshold (:attr:`edgetl_runtime.contract.ExportInfo.threshold`) and the runtime decides at it.

What each remedy was worth on ELPV, and why this one: docs/BENCHMARKS.md (issue 24).

>>> float_scores = np.array([0.9, 0.6, 0.4, 0.1])
>>> matched_threshold(float_scores, float_scores + 0.05, 0.5)
0.55
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ThresholdReset(NamedTuple):
    """What an export set for itself: its threshold, the contract's, and on how many images."""

    threshold: float
    contract_threshold: float
    images: int
    called: int  # images the float model calls defective at the contract's threshold

    @property
    def source(self) -> str:
        """Return the export facts' ``threshold_source``: how the threshold was set."""
        return (f"re-set through this file's quantized graph: it calls as many of {self.images} validation images "
                f"defective ({self.called}) as the float model at the contract's threshold "
                f"{self.contract_threshold:.4g}")  # fmt: skip

    def note(self) -> str:
        """Return the line the export prints and reports."""
        return (f"threshold re-set for this export: {self.contract_threshold:.4g} -> {self.threshold:.4g}, so that it "
                f"calls {self.called} of the {self.images} validation images defective, as the float model does "
                "(the contract is unchanged; the file carries its own threshold)")  # fmt: skip


def matched_threshold(float_scores: np.ndarray, exported_scores: np.ndarray, threshold: float) -> float:
    """Return the threshold on ``exported_scores`` that sits where ``threshold`` sits among ``float_scores``.

    Both are defect scores of the same images. Sorted, the two give a monotone map from the float
    scale to the exported one; ``threshold`` is interpolated between the two float scores around
    it, so an export that copies the float scores keeps the threshold exactly.
    """
    f = np.sort(np.asarray(float_scores, np.float64))
    e = np.sort(np.asarray(exported_scores, np.float64))
    if f.size == 0 or f.size != e.size:
        return float(threshold)
    above = int(np.searchsorted(f, threshold, side="left"))  # f[above:] >= threshold: called defective
    if above == 0:  # every image is called defective: keep the export's lowest score in
        return float(min(threshold, e[0]))
    if above == f.size:  # none is: keep the export's highest score out
        return float(min(1.0, max(threshold, np.nextafter(e[-1], np.inf))))
    lo_f, hi_f, lo_e, hi_e = f[above - 1], f[above], e[above - 1], e[above]
    share = (threshold - lo_f) / (hi_f - lo_f) if hi_f > lo_f else 1.0
    t = lo_e + share * (hi_e - lo_e)
    if t <= lo_e:  # the image below must stay below, also where the exported scores tie
        t = np.nextafter(lo_e, np.inf) if hi_e > lo_e else hi_e
    return float(np.clip(t, 0.0, 1.0))


def reset_threshold(float_scores: np.ndarray, exported_scores: np.ndarray, threshold: float) -> ThresholdReset:
    """Return the :class:`ThresholdReset` of an export from both models' defect scores on the same images."""
    t = matched_threshold(float_scores, exported_scores, threshold)
    return ThresholdReset(t, float(threshold), int(len(float_scores)), int(np.sum(np.asarray(float_scores) >= threshold)))


def exported_scores(data: bytes, fmt: str, pixels: np.ndarray, on: str = "host") -> tuple[np.ndarray, dict | None]:
    """Return the raw scores of the exported file ``data`` on uint8 ``pixels``, and what ran them (None on the host).

    ``on``: ``host``, or ``aarch64`` (in the emulated root; the second value then says which
    machine, emulator and runtime ran them, as :func:`edgetl.exporters.emulated.scores` does).
    """
    import shutil
    import tempfile
    from pathlib import Path

    import edgetl_runtime

    if on == "aarch64":
        from . import emulated

        return emulated.scores(data, fmt, pixels)

    folder = Path(tempfile.mkdtemp(prefix="edgetl-threshold-"))
    try:
        path = folder / f"model.{'onnx' if fmt == 'onnx' else 'tflite'}"
        path.write_bytes(data)
        model = edgetl_runtime.load(path, device="cpu")
        exported = model.scores(pixels)
        del model
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return exported, None

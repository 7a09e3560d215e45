"""The decision gate of an export: is the exported model worse than the float model beyond chance?

Both models judge the same labelled validation images, so their verdicts are compared image by
image. For a metric (decision accuracy over every image, defect recall over the defective ones)
an image is *lost* when the float model got it right and the export got it wrong, and *gained*
the other way round. Images both got right or both got wrong say nothing about the export.
If the export were no worse, a flipped image would be a loss or a gain with equal odds; the
exact one-sided sign test (McNemar's test for paired verdicts, as a binomial tail) gives the
probability of at least this many losses among the flips by chance alone. The gate fails:

- when that probability is below ``alpha`` (default :data:`DEFAULT_ALPHA`, 0.01): the export
  loses more images than chance explains; or
- when the metric fell by more than ``max_drop`` points (default :data:`DEFAULT_MAX_DROP`, 5): a
  hard limit that no sample size excuses (on 8 images, 100 % -> 75 % is 2 losses, p = 0.25, and
  still a collapse).

Three images of 200 (-1.5 points, p = 0.125) or one defect of 63 (p = 0.5) no longer fail an
export; ten losses and no gain (p = 0.001) do, however many images there are.

>>> paired_test(np.array([1, 1, 1, 0], bool), np.array([1, 0, 0, 0], bool)).p_value
0.25
>>> paired_test(np.ones(10, bool), np.zeros(10, bool)).p_value < DEFAULT_ALPHA
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_ALPHA = 0.01  # one-sided significance of the paired test, per metric
DEFAULT_MAX_DROP = 5.0  # points: the hard limit of a drop, whatever the test says

GATED_METRICS = ("decision_accuracy", "defect_recall")
_WHAT = {"decision_accuracy": "images right", "defect_recall": "defects found"}


@dataclass(frozen=True)
class PairedTest:
    """Float vs exported verdicts on the same images: ``lost``/``gained`` flips of ``out_of`` images, and the p-value.

    ``float_right`` and ``exported_right`` count the images each model got right; ``p_value`` is
    the one-sided exact probability of at least ``lost`` losses among ``lost + gained`` flips if
    the export were no worse (1.0 without a loss).
    """

    metric: str
    out_of: int
    float_right: int
    exported_right: int
    lost: int
    gained: int
    p_value: float

    @property
    def drop(self) -> float:
        """Return the metric's drop in points (float minus exported; negative when the export is better)."""
        return 100.0 * (self.float_right - self.exported_right) / self.out_of if self.out_of else 0.0

    def counts(self) -> str:
        """Return the counts behind the test, e.g. ``120 -> 117 of 123 defects found (4 lost, 1 gained, p = 0.19)``."""
        return (f"{self.float_right} -> {self.exported_right} of {self.out_of} {_WHAT.get(self.metric, 'right')} "
                f"({self.lost} lost, {self.gained} gained, p = {self.p_value:.2g})")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop_points": self.drop}


def sign_test(lost: int, gained: int) -> float:
    """Return P(X >= lost) for X ~ Binomial(lost + gained, 1/2): the exact one-sided sign test.

    >>> sign_test(3, 0), sign_test(0, 5), round(sign_test(10, 2), 4)
    (0.125, 1.0, 0.0193)
    """
    n = lost + gained
    if lost <= 0:
        return 1.0
    if n > _EXACT_FLIPS:
        return _normal_tail(lost, n)
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n  # exact integers, one correctly rounded division


_EXACT_FLIPS = 2000  # beyond this many flips (a collapse on a huge set) the exact sum is slow and needless


def _normal_tail(lost: int, n: int) -> float:
    """Return the sign test's tail by the normal approximation with continuity correction (many flips)."""
    z = (lost - 0.5 - n / 2) / math.sqrt(n / 4)
    return 0.5 * math.erfc(z / math.sqrt(2))


def paired_test(float_right: np.ndarray, exported_right: np.ndarray, metric: str = "decision_accuracy") -> PairedTest:
    """Return the :class:`PairedTest` of two models' per-image correctness (boolean arrays, same images)."""
    a, b = np.asarray(float_right, bool), np.asarray(exported_right, bool)
    lost, gained = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return PairedTest(metric, int(a.size), int(a.sum()), int(b.sum()), lost, gained, sign_test(lost, gained))


def paired_tests(float_called: np.ndarray, exported_called: np.ndarray, is_defect: np.ndarray) -> dict[str, PairedTest]:
    """Return the paired tests of decision accuracy and defect recall from both models' defect verdicts.

    ``float_called``/``exported_called``: each image called defective by that model; ``is_defect``:
    its truth. Recall is tested when there are defective images.
    """
    truth = np.asarray(is_defect, bool)
    right_f, right_e = np.asarray(float_called, bool) == truth, np.asarray(exported_called, bool) == truth
    tests = {"decision_accuracy": paired_test(right_f, right_e, "decision_accuracy")}
    if truth.any():
        tests["defect_recall"] = paired_test(right_f[truth], right_e[truth], "defect_recall")
    return tests


def verdict(test: PairedTest, alpha: float, max_drop: float) -> str | None:
    """Return why ``test`` fails the gate (``"drop"`` past the hard limit, ``"paired"`` beyond chance), or None."""
    if test.drop > max_drop + 1e-9:
        return "drop"
    if test.p_value < alpha:
        return "paired"
    return None


def failure_message(test: PairedTest, kind: str, alpha: float, max_drop: float) -> str:
    """Return the sentence a failed gate prints for ``test``."""
    name = test.metric.replace("_", " ")
    if kind == "drop":
        return (f"{name} fell {test.drop:.1f} points against the float model ({test.counts()}), more than the hard "
                f"limit of {max_drop:g} (--max-drop)")  # fmt: skip
    return (f"{name} is worse than the float model's beyond chance ({test.counts()}; below the significance "
            f"{alpha:g}, --alpha): the export loses images the float model gets right")  # fmt: skip

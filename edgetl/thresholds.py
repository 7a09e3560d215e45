"""Choosing a classifier's decision threshold by what a missed defect or a scrapped good part costs.

Two rules, each applied to the defect scores of the run's validation images (never the test set):

- **target recall** (``edgetl eval --target-recall R``): the highest threshold that still finds a
  share ``R`` of the defective images (the fewest false rejects at that recall);
- **maximum false alarm** (``edgetl eval --max-false-alarm F``, the scrap budget): the lowest
  threshold that rejects at most a share ``F`` of the good images (the most defects found within
  that budget), the same rule as ``edgetl train --task anomaly --max-false-alarm``.

How far a rate measured on the validation images can be trusted depends on how many of them
there were: :func:`rate_interval` gives its 95 % Wilson interval, and a warning says when it is
wide.

>>> is_defect = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
>>> score = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.3, 0.1, 0.05, 0.0])
>>> threshold_for_recall(is_defect, score, 0.75), threshold_for_false_alarm(is_defect, score, 0.0) > 0.7
(0.6, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["threshold_for_recall", "threshold_for_false_alarm", "rate_interval", "recall_interval",
           "ThresholdChoice", "choose_threshold", "FEW_DEFECTS", "FEW_GOOD"]

FEW_DEFECTS = 30  # below this many defective validation images, a threshold for recall is shaky
FEW_GOOD = 5  # a false-alarm budget needs at least this many expected false alarms to be measured at all


def threshold_for_recall(is_defect: np.ndarray, score: np.ndarray, recall: float) -> float:
    """Return the highest threshold whose defect recall on these scores is at least ``recall``."""
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {recall}")
    positives = np.sort(np.asarray(score)[np.asarray(is_defect, bool)])[::-1]
    if positives.size == 0:
        raise ValueError("no defective images in the validation data: cannot choose a threshold for recall")
    needed = int(np.ceil(recall * positives.size))
    return float(positives[needed - 1])


def threshold_for_false_alarm(is_defect: np.ndarray, score: np.ndarray, rate: float) -> float:
    """Return the lowest threshold at which at most a share ``rate`` of the good images score at or above it.

    The threshold sits just above the score of the first good image past the budget, so that image
    and every one below it pass.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"max false alarm is a share of the good images in [0, 1), got {rate}")
    negatives = np.sort(np.asarray(score, np.float64)[~np.asarray(is_defect, bool)])[::-1]
    if negatives.size == 0:
        raise ValueError("no good images in the validation data: cannot choose a threshold for a false-alarm rate")
    allowed = int(math.floor(rate * negatives.size + 1e-9))
    if allowed >= negatives.size:
        return 0.0
    return float(min(np.nextafter(negatives[allowed], np.inf), 1.0))


def rate_interval(hits: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Return the Wilson score interval of a rate of ``hits`` out of ``total`` (95 % by default).

    >>> [round(v, 3) for v in rate_interval(10, 10)]
    [0.722, 1.0]
    """
    if total <= 0:
        return (0.0, 1.0)
    z = {0.9: 1.6449, 0.95: 1.96, 0.99: 2.5758}.get(confidence, 1.96)
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total**2)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


recall_interval = rate_interval  # the name edgetl 0.1 exported


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen on the validation images: the rule, what it gives there, and the uncertainty."""

    threshold: float
    rule: str  # "target_recall" | "max_false_alarm"
    target: float
    defects: int
    found: int
    good: int
    false_alarms: int

    @property
    def source(self) -> str:
        """Return the contract's ``threshold_source`` text for this choice."""
        if self.rule == "target_recall":
            return f"target recall {self.target:g} on the validation split ({self.found}/{self.defects} defects)"
        return (f"max false alarm {self.target:g} on the validation split ({self.false_alarms}/{self.good} good "
                "images rejected)")  # fmt: skip

    def details(self) -> dict[str, Any]:
        """Return the JSON-ready figures of the choice (metrics.json keeps them)."""
        recall = self.found / self.defects if self.defects else None
        alarm = self.false_alarms / self.good if self.good else None
        return {self.rule: self.target, "validation_defects": self.defects, "validation_recall": recall,
                "recall_95ci": list(rate_interval(self.found, self.defects)), "validation_good": self.good,
                "validation_false_alarm": alarm,
                "false_alarm_95ci": list(rate_interval(self.false_alarms, self.good))}  # fmt: skip

    def warnings(self) -> list[str]:
        """Return what makes this choice shaky (few defects for a recall, few good images for a budget)."""
        if self.rule == "target_recall" and self.defects < FEW_DEFECTS:
            low, high = rate_interval(self.found, self.defects)
            return [f"the threshold {self.threshold:.4f} was chosen from only {self.defects} defective validation "
                    f"images: its recall there is {self.found}/{self.defects}, but the recall on new images is only "
                    f"known to lie within {low:.1%}-{high:.1%} (95 % Wilson interval). Label more defects (>= "
                    f"{FEW_DEFECTS}) for a threshold you can rely on"]  # fmt: skip
        if self.rule == "max_false_alarm" and self.target * self.good < FEW_GOOD:
            low, high = rate_interval(self.false_alarms, self.good)
            return [f"a false-alarm rate of {self.target:g} cannot be measured on {self.good} good validation images "
                    f"(fewer than {FEW_GOOD} expected false alarms): on new parts it is only known to lie within "
                    f"{low:.1%}-{high:.1%} (95 % Wilson interval). Hold out more good images (train --val-split) "
                    "for a budget you can rely on"]  # fmt: skip
        return []


def choose_threshold(is_defect: np.ndarray, score: np.ndarray, *, target_recall: float | None = None,
                     max_false_alarm: float | None = None) -> ThresholdChoice:  # fmt: skip
    """Return the :class:`ThresholdChoice` of one rule (exactly one of ``target_recall``, ``max_false_alarm``)."""
    if (target_recall is None) == (max_false_alarm is None):
        raise ValueError("choose the threshold by one rule: a target recall or a max false alarm, not both")
    truth, score = np.asarray(is_defect, bool), np.asarray(score, np.float64)
    if target_recall is not None:
        threshold, rule, target = threshold_for_recall(truth, score, target_recall), "target_recall", target_recall
    else:
        threshold = threshold_for_false_alarm(truth, score, max_false_alarm)
        rule, target = "max_false_alarm", max_false_alarm
    called = score >= threshold
    return ThresholdChoice(threshold, rule, float(target), int(truth.sum()), int(np.sum(called & truth)),
                           int((~truth).sum()), int(np.sum(called & ~truth)))  # fmt: skip

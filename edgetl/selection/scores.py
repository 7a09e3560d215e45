"""Transferability scores of frozen features: LogME, leave-one-out k-NN, and the negative-transfer check.

Numpy only (no scipy, no scikit-learn): they run on the pooled features of a few hundred to a few
thousand images in well under a second each.

* :func:`logme`: the log maximum evidence of a Bayesian linear model from the features to each
  class's one-hot target, per image, averaged over classes (You et al., "LogME: Practical
  Assessment of Pre-trained Models for Transfer Learning", ICML 2021, with the fixed-point
  evidence maximisation of their 2021 follow-up "Ranking and Tuning Pre-trained Models"). Higher
  is better; it is comparable between feature sets of the same images and labels only.
* :func:`knn_balanced_accuracy`: leave-one-out k-nearest-neighbour (cosine) balanced accuracy, a
  second opinion that assumes nothing linear.
* :func:`negative_transfer_risk`: whether pretrained features are clearly better than a
  random-init network's on the same images.

>>> rng = np.random.default_rng(0)
>>> y = np.repeat([0, 1], 100)
>>> separable = rng.normal(size=(200, 16)) + 3.0 * y[:, None]
>>> bool(logme(separable, y) > logme(separable, rng.permutation(y)))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["logme", "knn_balanced_accuracy", "NegativeTransfer", "negative_transfer_risk",
           "LOGME_MARGIN", "KNN_MARGIN"]  # fmt: skip

# A pretrained candidate is flagged when neither score shows it beating the random-init network of
# the same architecture by at least this much. LogME is in nats per image: 0.02 is about the spread
# of LogME between random-label draws on a few hundred images (on ELPV the pretrained lead is about
# 0.1). k-NN: 2 points of balanced accuracy, below one standard error on 300 images (about 3 points),
# so k-NN alone is too noisy to flag a candidate: it has to agree with LogME.
LOGME_MARGIN = 0.02
KNN_MARGIN = 0.02


def logme(features: np.ndarray, labels: np.ndarray, max_iter: int = 11, tol: float = 1e-3) -> float:
    """Return the LogME score of ``features`` (N, D) for class ids ``labels`` (N,), in nats per image.

    One SVD of the features (via their Gram matrix); then, per class, alpha (prior precision of the weights) and beta
    (noise precision) are found by fixed-point iteration on the evidence of the one-hot target,
    and the maximum evidence divided by N is averaged over classes. The features are used as
    given (as in the reference implementation). Unlike the reference code, when N < D (fewer
    images than feature dimensions, or dead channels) the weight-prior term counts only the rank
    of the features, which is what the evidence's determinant gives; the two agree whenever the
    features have full column rank. Features of rank 0 (all zero: a dead network) get the evidence
    of a model with no weights, finite and below any informative features'.
    """
    f = np.asarray(features, np.float64)
    y = np.asarray(labels).reshape(-1)
    if f.ndim != 2 or len(f) != len(y):
        raise ValueError(f"features must be (N, D) with one label per row; got {f.shape} and {y.shape}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"LogME needs at least two classes; the labels hold {len(classes)}")
    n, d = f.shape
    # The SVD through the eigendecomposition of the smaller Gram matrix (N x N or D x D): several
    # times faster than np.linalg.svd on 1000 x 1280 features, and the squared singular values
    # are what the evidence needs.
    if n <= d:
        sigma, u = np.linalg.eigh(f @ f.T)
    else:
        sigma, v = np.linalg.eigh(f.T @ f)
        u = None
    keep = sigma > max(float(sigma.max()), 0.0) * 1e-10
    sigma = sigma[keep]
    u = u[:, keep] if u is not None else f @ v[:, keep] / np.sqrt(sigma)
    k = int(sigma.size)  # rank: directions of zero variance cancel between prior and determinant
    evidences = []
    for c in classes:
        target = (y == c).astype(np.float64)
        x2 = (u.T @ target) ** 2  # the target's energy along each singular direction
        rest = float(target @ target - x2.sum())  # the part outside the span of the features
        alpha, beta = 1.0, (1.0 if k else n / (rest + 1e-5))
        res2, m2 = rest, 0.0
        for _ in range(max_iter if k else 0):  # rank 0: no weights, beta alone maximises the evidence
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())  # effective number of parameters
            m2 = float((sigma * x2 / (sigma + t) ** 2).sum())  # |m|^2, the posterior mean's norm
            res2 = float((x2 / (1.0 + sigma / t) ** 2).sum()) + rest  # residual sum of squares
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= tol:
                break
        evidence = (k / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma))
                    - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi))  # fmt: skip
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def knn_balanced_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 10, block: int = 1024) -> float:
    """Return the leave-one-out k-NN balanced accuracy (mean per-class recall) of ``features`` for ``labels``.

    Cosine similarity of the centred features; each image is classified by a majority vote of its
    ``k`` nearest other images (ties go to the class whose neighbours are more similar in sum).
    Balanced, because inspection data are imbalanced: always answering "good" scores 1 / classes.
    """
    f = np.asarray(features, np.float64)
    y = np.asarray(labels).reshape(-1)
    if f.ndim != 2 or len(f) != len(y):
        raise ValueError(f"features must be (N, D) with one label per row; got {f.shape} and {y.shape}")
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2 or len(f) < 3:
        raise ValueError("k-NN needs at least two classes and three images")
    k = max(1, min(k, len(f) - 1))
    f = f - f.mean(axis=0)
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    predicted = np.empty(len(f), np.int64)
    for start in range(0, len(f), block):  # blocks of rows keep the similarity matrix small
        sim = f[start : start + block] @ f.T
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf  # leave the image itself out
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        votes = np.zeros((sim.shape[0], len(classes)))
        np.add.at(votes, (rows[:, None], y_idx[nearest]), 1.0 + 1e-6 * sim[rows[:, None], nearest])
        predicted[start : start + block] = votes.argmax(axis=1)
    recalls = [np.mean(predicted[y_idx == c] == c) for c in range(len(classes))]
    return float(np.mean(recalls))


@dataclass(frozen=True)
class NegativeTransfer:
    """Pretrained against random-init scores on the same images; ``at_risk`` when not clearly better."""

    logme_pretrained: float
    logme_random: float
    knn_pretrained: float
    knn_random: float
    n_images: int

    @property
    def logme_gain(self) -> float:
        return self.logme_pretrained - self.logme_random

    @property
    def knn_gain(self) -> float:
        return self.knn_pretrained - self.knn_random

    @property
    def at_risk(self) -> bool:
        """True when neither score puts the pretrained features ahead of the random ones by its margin."""
        return self.logme_gain < LOGME_MARGIN and self.knn_gain < KNN_MARGIN

    @property
    def verdict(self) -> str:
        """``risk`` (neither score clearly better), ``weak`` (one of the two) or ``ok`` (both)."""
        wins = (self.logme_gain >= LOGME_MARGIN) + (self.knn_gain >= KNN_MARGIN)
        return ("risk", "weak", "ok")[wins]

    def reason(self) -> str:
        """Return one line: what was compared and the verdict."""
        verdict = {"risk": "RISK of negative transfer", "ok": "pretrained features clearly better",
                   "weak": "pretrained features better on one score only"}[self.verdict]  # fmt: skip
        return (f"{verdict}: LogME {self.logme_pretrained:.3f} vs {self.logme_random:.3f} random-init "
                f"(gain {self.logme_gain:+.3f}, need >= {LOGME_MARGIN}), k-NN {self.knn_pretrained:.1%} vs "
                f"{self.knn_random:.1%} (gain {100 * self.knn_gain:+.1f} pp, need >= {100 * KNN_MARGIN:.0f} pp) "
                f"on {self.n_images} images")  # fmt: skip


def negative_transfer_risk(pretrained: np.ndarray, random_init: np.ndarray, labels: np.ndarray,
                           k: int = 10) -> NegativeTransfer:  # fmt: skip
    """Return the :class:`NegativeTransfer` comparison of two feature sets of the same images."""
    if len(pretrained) != len(random_init):
        raise ValueError("pretrained and random-init features must be of the same images")
    return NegativeTransfer(logme(pretrained, labels), logme(random_init, labels),
                            knn_balanced_accuracy(pretrained, labels, k), knn_balanced_accuracy(random_init, labels, k),
                            len(labels))  # fmt: skip

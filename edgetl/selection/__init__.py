"""Model selection: which pretrained backbone, at which input size, to fine-tune for these images and this device.

``edgetl select DATA --profile P`` (or :func:`select`) scores every candidate backbone x input
size from frozen features in minutes, without fine-tuning: LogME (You et al., ICML 2021) and a
leave-one-out k-NN as a second opinion (:mod:`.scores`), a check against a random-init network of
the same architecture (negative-transfer risk), and the latency on the profile's device, measured
with the runtime when this host is that device, else estimated from the profile's reference figure
(:mod:`.latency`). The result ranks them, marks the Pareto front (score x latency), recommends one
within the p50 budget and writes ``select.json`` and ``select.png`` (:mod:`.report`).
How to read it and how well the scores ranked fine-tuned accuracy on ELPV: docs/select.md.

>>> from edgetl.selection import select, SelectOptions                               # doctest: +SKIP
>>> result = select("data/elpv/train", "runs/select", SelectOptions(profile="raspberry-pi-4"))  # doctest: +SKIP
>>> result.recommended                                                                # doctest: +SKIP
'efficientnet_lite0@192'
"""

from __future__ import annotations

from .candidates import Candidate, candidate_grid, default_sizes
from .latency import Latency, count_macs, estimate_ms
from .pipeline import JSON_FILE, PLOT_FILE, SelectionError, SelectOptions, select
from .report import CandidateResult, Selection, pareto_front, recommend
from .scores import NegativeTransfer, knn_balanced_accuracy, logme, negative_transfer_risk

__all__ = [
    "select",
    "SelectOptions",
    "Selection",
    "SelectionError",
    "CandidateResult",
    "Candidate",
    "Latency",
    "NegativeTransfer",
    "candidate_grid",
    "default_sizes",
    "count_macs",
    "estimate_ms",
    "logme",
    "knn_balanced_accuracy",
    "negative_transfer_risk",
    "pareto_front",
    "recommend",
    "JSON_FILE",
    "PLOT_FILE",
]

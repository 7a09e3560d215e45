"""Training: two-phase transfer learning, a new head on a frozen backbone, then fine-tuning.

Stage 2 of edgetl (data -> training -> evaluation -> export -> runtime -> devices). Phase 1
(feature extraction) trains global pooling → dropout → dense on the frozen ImageNet backbone.
Without augmentation the backbone is a fixed function, so its pooled features are computed once
and cached: the head trains in seconds. Phase 2 unfreezes the top blocks (BatchNorm stays in
inference mode) with a 5x lower learning rate and augmentation, checkpointing every epoch,
stopping early on validation loss and restoring the best epoch. The run folder it writes
(:mod:`edgetl.run`) holds the model contract every later stage reads.

>>> TrainOptions().epochs
30
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .options import TrainOptions, TrainResult, auto_unfreeze, class_weights

__all__ = ["train", "TrainOptions", "TrainResult", "auto_unfreeze", "class_weights"]


def train(
    data: str | Path,
    backbone: str | None = None,
    options: TrainOptions | None = None,
    output: str | Path = "runs/latest",
    resume: bool = False,
) -> TrainResult:
    """Train a defect classifier on the data set at ``data`` and write the run to ``output``.

    ``backbone`` overrides ``options.backbone``. With ``resume=True`` an interrupted run in
    ``output`` continues from its last finished epoch with the options it was started with.
    """
    from .trainer import Trainer

    options = options or TrainOptions()
    if backbone is not None:
        options = dataclasses.replace(options, backbone=backbone)
    start = time.perf_counter()
    trainer = Trainer(Path(data), options, Path(output), resume=resume)
    return trainer.run(start)

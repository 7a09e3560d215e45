"""Training options and results, and the rules that pick unfreeze depth and class weights.

>>> TrainOptions().backbone
'efficientnet_lite0'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .augment import Augmentation


@dataclass(frozen=True)
class TrainOptions:
    """Every knob of ``edgetl train``; the defaults suit a few hundred to a few thousand images."""

    backbone: str = "efficientnet_lite0"  # its ImageNet weights ship with edgetl: works offline
    weights: str = "imagenet"  # "imagenet", "none", or a path to a weights file
    input_size: int | None = None  # pixels (square); None: the backbone's default
    alpha: float = 1.0  # width multiplier (mobilenet_v2)
    val_split: float = 0.2  # fraction of DATA held out for validation (stratified)
    epochs: int = 30  # phase 1 (head) epochs, early-stopped
    fine_tune_epochs: int = 12  # phase 2 epochs, early-stopped; 0 skips fine-tuning
    unfreeze: str | int = "auto"  # number of top backbone blocks to fine-tune, or "auto"
    batch_size: int = 32
    learning_rate: float = 1e-3  # phase 1
    fine_tune_learning_rate: float = 2e-4  # phase 2 peak, cosine-decayed to 0
    warmup_epochs: float = 0.0  # phase 2: linear warm-up from 0 to the peak over this many epochs
    layer_decay: float = 1.0  # phase 2: each block below the top learns at this factor of the one above (1: off)
    ema: float = 0.0  # phase 2: momentum of an exponential moving average of the weights (0: off; e.g. 0.99)
    select: str = "loss"  # the epoch kept and early stopping: lowest validation "loss", or highest "auc"
    dropout: float = 0.2
    augment: bool = True  # augmentation during phase 2
    augment_head: bool = False  # also augment phase 1 (then features cannot be cached)
    augmentation: Augmentation = field(default_factory=Augmentation)
    class_weight: str = "balanced"  # "balanced" or "none": defects are usually rare
    label_smoothing: float = 0.0  # training targets (1 - s) * one-hot + s / classes
    teacher: str | None = None  # a finished run folder whose soft labels the model learns (distillation)
    distill_weight: float = 0.5  # share of the teacher's soft labels in the loss when teacher is set
    distill_temperature: float = 2.0  # softmax temperature of the distillation term
    patience: int = 12  # early stopping on the selected validation metric (epochs); cosine decay makes late epochs best
    seed: int = 0
    strategy: str = "auto"  # auto | default | mirrored | multi-worker
    mixed_precision: str = "auto"  # auto (GPU with compute capability >= 7) | on (float16) | bfloat16 | off
    good_labels: tuple[str, ...] | None = None  # classes meaning "no defect"; None: by name
    verbose: int = 1

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "fine_tune_epochs": self.fine_tune_epochs >= 0,
            "batch_size": self.batch_size >= 1,
            "val_split": 0.0 < self.val_split < 1.0,
            "learning_rate": self.learning_rate > 0,
            "fine_tune_learning_rate": self.fine_tune_learning_rate > 0,
            "dropout": 0.0 <= self.dropout < 1.0,
            "patience": self.patience >= 1,
            "input_size": self.input_size is None or self.input_size >= 32,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
            "distill_weight": 0.0 <= self.distill_weight <= 1.0,
            "distill_temperature": self.distill_temperature > 0,
            "warmup_epochs": 0.0 <= self.warmup_epochs <= self.fine_tune_epochs,
            "layer_decay": 0.0 < self.layer_decay <= 1.0,
            "ema": 0.0 <= self.ema < 1.0,
            "select": self.select in ("loss", "auc"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(
                f"invalid training options: {values} (epochs, batch size and patience >= 1; "
                "fine-tune epochs >= 0; 0 < val split < 1; learning rates > 0; 0 <= dropout < 1; "
                "input size >= 32 px; 0 <= label smoothing < 1; 0 <= distill weight <= 1; "
                "distill temperature > 0; 0 <= warm-up epochs <= fine-tune epochs; 0 < layer decay <= 1; "
                "0 <= ema < 1; select is 'loss' or 'auc')"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["augmentation"] = self.augmentation.to_dict()
        return out


@dataclass(frozen=True)
class TrainResult:
    """Where the trained model is, its contract, and how good it is on the validation split."""

    run_dir: Path
    model_path: Path
    spec: Any  # edgetl_runtime.contract.ModelSpec, as written to RUN_DIR/model_spec.json
    metrics: dict[str, Any]
    config: dict[str, Any]
    seconds: float


def auto_unfreeze(n_train: int, n_blocks: int) -> tuple[int, str]:
    """Return (number of top blocks to fine-tune, why) for a training set of ``n_train`` images."""
    if n_train < 100:
        depth, why = 0, f"{n_train} training images (< 100): fine-tuning would overfit; head only"
    elif n_train < 400:
        depth, why = 1, f"{n_train} training images (100-399): only the last block"
    elif n_train < 1500:
        depth, why = 4, f"{n_train} training images (400-1499): the last 4 blocks"
    elif n_train < 5000:
        depth, why = 8, f"{n_train} training images (1500-4999): the last 8 blocks"
    else:
        depth, why = n_blocks, f"{n_train} training images (>= 5000): the whole backbone"
    return min(depth, n_blocks), why


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """Return per-class weights n / (classes * count) for ``mode="balanced"``, else None."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be 'balanced' or 'none', got {mode!r}")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return (len(y) / (n_classes * np.maximum(counts, 1))).astype(np.float32)

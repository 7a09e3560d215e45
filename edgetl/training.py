"""Two-phase transfer learning: a new head on a frozen backbone, then fine-tuning of the top blocks.

Phase 1 (feature extraction) trains global pooling → dropout → dense on the frozen ImageNet
backbone. Without augmentation the backbone is a fixed function, so its pooled features are
computed once and cached: the head trains in seconds. Phase 2 unfreezes the top blocks (BatchNorm
stays in inference mode) with a 5x lower learning rate and augmentation, checkpointing every
epoch, stopping early on validation loss and restoring the best epoch.

>>> TrainOptions().backbone
'efficientnet_lite0'
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ._tf import keras, tensorflow
from .augment import Augmentation

console = Console(stderr=True)


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
    dropout: float = 0.2
    augment: bool = True  # augmentation during phase 2
    augment_head: bool = False  # also augment phase 1 (then features cannot be cached)
    augmentation: Augmentation = field(default_factory=Augmentation)
    class_weight: str = "balanced"  # "balanced" or "none": defects are usually rare
    patience: int = 12  # early stopping on validation loss (epochs); phase 2's cosine decay makes late epochs best
    seed: int = 0
    strategy: str = "auto"  # auto | default | mirrored | multi-worker
    mixed_precision: str = "auto"  # auto (GPU with compute capability >= 7) | on | off
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
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(
                f"invalid training options: {values} (epochs, batch size and patience >= 1; "
                "fine-tune epochs >= 0; 0 < val split < 1; learning rates > 0; 0 <= dropout < 1; "
                "input size >= 32 px)"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["augmentation"] = self.augmentation.to_dict()
        return out


@dataclass(frozen=True)
class TrainResult:
    """Where the trained model is and how good it is on the validation split."""

    run_dir: Path
    model_path: Path
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


def make_strategy(name: str):
    """Return the tf.distribute strategy for ``name`` (auto: mirrored over >1 GPU, else default)."""
    tf = tensorflow()
    if name == "multi-worker":
        # Collective ops must be configured before TensorFlow starts: no device query before this.
        return tf.distribute.MultiWorkerMirroredStrategy()  # cluster from the TF_CONFIG variable
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    raise ValueError(f"strategy must be auto, default, mirrored or multi-worker, got {name!r}")


def configure_precision(mode: str) -> str:
    """Set the Keras mixed-precision policy for ``mode`` and return the policy name used."""
    tf = tensorflow()
    policy = "float32"
    if mode == "on":
        policy = "mixed_float16"
    elif mode == "auto":
        for gpu in tf.config.list_physical_devices("GPU"):
            capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            if capability and capability[0] >= 7:
                policy = "mixed_float16"
    elif mode != "off":
        raise ValueError(f"mixed_precision must be auto, on or off, got {mode!r}")
    keras().mixed_precision.set_global_policy(policy)
    return policy


def is_chief(strategy) -> bool:
    """Return True unless ``strategy`` is multi-worker and this process is not its chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


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

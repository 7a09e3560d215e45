"""Per-epoch checkpoints, resume state and graceful interruption for ``edgetl train``.

``RUN_DIR/checkpoints/state.json`` is the commit point: it is replaced atomically after the
epoch's weights and optimizer state are fully written, so a run killed at any moment resumes from
the last complete epoch. SIGINT/SIGTERM stop training at the end of the current batch; a second
SIGINT aborts at once.

>>> TrainingInterrupted("runs/x").run_dir
'runs/x'
"""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from edgetl_runtime.atomic import write_json

from .._tf import keras, tensorflow


class TrainingInterrupted(Exception):
    """Training was stopped by a signal; the last finished epoch is checkpointed."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        super().__init__(
            f"training interrupted; the last finished epoch is saved in {run_dir}/checkpoints. "
            f"Continue with the same command plus --resume"
        )


class StopFlag:
    """Set by SIGINT/SIGTERM while installed; training loops poll it between batches."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.event.set()

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class CheckpointStore:
    """The checkpoints folder of a run: resume state, per-epoch weights, best weights."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "checkpoints"
        self.state_path = self.dir / "state.json"

    def exists(self) -> bool:
        return self.state_path.is_file()

    def load_state(self) -> dict[str, Any]:
        from ..run import read_json

        return read_json(self.state_path) if self.exists() else {}

    def save_state(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, state)

    def write(self, model, optimizer, tag: str) -> str:
        """Write model weights (and optimizer state) as checkpoint ``tag`` and return the tag.

        State files refer to checkpoints by tag, never by path, so a run folder can be moved or
        resumed from another working directory.
        """
        tf = tensorflow()
        self.dir.mkdir(parents=True, exist_ok=True)
        objects = {"model": model} if optimizer is None else {"model": model, "optimizer": optimizer}
        tf.train.Checkpoint(**objects).write(str(self.dir / tag))
        return tag

    def restore(self, model, optimizer, tag: str) -> None:
        """Restore model weights (and optimizer state when given) from checkpoint ``tag``."""
        tf = tensorflow()
        if not (self.dir / f"{tag}.index").is_file():
            raise FileNotFoundError(
                f"{self.dir}: checkpoint {tag!r} is missing; the run folder is incomplete. "
                "Start a new run (a new -o folder)"
            )
        objects = {"model": model} if optimizer is None else {"model": model, "optimizer": optimizer}
        tf.train.Checkpoint(**objects).read(str(self.dir / tag)).expect_partial()

    def prune(self, keep: set[str]) -> None:
        """Delete checkpoint files whose tag is not in ``keep``."""
        for path in self.dir.glob("*.index"):
            tag = path.name[: -len(".index")]
            if tag not in keep:
                for f in self.dir.glob(f"{tag}.*"):
                    f.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def best_value(ph: dict[str, Any]) -> float:
    """The monitored value of a phase's kept epoch, lower is better (runs before ``select``: its loss)."""
    value = ph.get("best_value")
    return float(ph["best_loss"] if value is None else value)


def epoch_callback(store: CheckpointStore, state: dict[str, Any], phase: str, stop: StopFlag, patience: int,
                   select: str = "loss"):
    """Return a Keras callback that checkpoints each epoch, tracks the best, and honours ``stop``.

    Early stopping with ``patience`` epochs on the lowest ``val_loss`` (``select="loss"``) or the
    highest ``val_auc`` (``select="auc"``); the best epoch's weights are kept as a
    ``{phase}-best-eNNN`` checkpoint and restored by the trainer at the end of the phase. When the
    optimizer averages the weights (EMA), validation and the best checkpoint use the average, and
    training (and the per-epoch checkpoint for ``--resume``) continues from the raw weights.
    """
    from .optim import swap_in_average

    k = keras()

    class EpochCheckpoint(k.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.average = None

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if stop:
                self.model.stop_training = True

        def on_test_begin(self, logs: Any = None) -> None:
            self.average = swap_in_average(self.model)
            self.average.swap_in()

        def _raw_weights(self) -> None:
            if self.average is not None:
                self.average.swap_out()
                self.average = None

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if stop:  # the epoch did not finish cleanly: keep the previous checkpoint
                self._raw_weights()
                return
            logs = {key: float(v) for key, v in (logs or {}).items()}
            ph = state.setdefault(phase, {"history": [], "best_loss": None, "best_epoch": None, "wait": 0})
            ph["history"].append(logs)
            loss = logs.get("val_loss", logs.get("loss"))
            value = -logs["val_auc"] if select == "auc" and "val_auc" in logs else loss
            if ph["best_loss"] is None or value < best_value(ph) - 1e-6:
                ph["best_loss"], ph["best_value"], ph["best_epoch"], ph["wait"] = loss, value, epoch, 0
                # A new tag per best epoch: the previous best stays intact until state.json moves on.
                ph["best"] = store.write(self.model, None, f"{phase}-best-e{epoch:03d}")
            else:
                ph["wait"] += 1
            self._raw_weights()
            ph["last"] = store.write(self.model, self.model.optimizer, f"{phase}-epoch{epoch:03d}")
            ph["next_epoch"] = epoch + 1
            store.save_state(state)
            store.prune({ph["best"], ph["last"], *_other_phase_tags(state, phase)})
            if ph["wait"] >= patience:
                self.model.stop_training = True
                ph["early_stopped"] = True
                store.save_state(state)

    return EpochCheckpoint()


def _other_phase_tags(state: dict[str, Any], phase: str) -> set[str]:
    tags = set()
    for name, ph in state.items():
        if name != phase and isinstance(ph, dict):
            tags.update(ph[key] for key in ("best", "last", "model") if ph.get(key))
    return tags

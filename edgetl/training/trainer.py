"""The training run behind :func:`edgetl.train`: data, phases, checkpoints, run-folder output."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from datetime import datetime, timezone

import numpy as np
from edgetl_runtime.atomic import atomic_path, write_json
from edgetl_runtime.contract import InputSpec, ModelSpec, Provenance, default_good_labels

from .. import __version__
from .._tf import keras, tensorflow
from ..console import debug, err_console
from ..run import (CONFIG_FILE, METRICS_FILE, MODEL_FILE, SPLIT_FILE, RunError, claim, read_json, read_split,
                   write_spec)
from .augment import Augmentation, epoch_dataset, eval_dataset
from .checkpoint import CheckpointStore, StopFlag, TrainingInterrupted, best_value, epoch_callback
from .objective import make_accuracy, make_auc, make_loss, pack_targets, teacher_probabilities
from .optim import block_multipliers, make_optimizer
from .options import TrainOptions, TrainResult, auto_unfreeze, class_weights
from .setup import configure_precision, is_chief, make_strategy

FEATURE_BATCH = 32


class Trainer:
    """One training run; holds the data arrays and the models between phases."""

    def __init__(self, data: Path, options: TrainOptions, run_dir: Path, resume: bool):
        self.data, self.run_dir, self.resume = data, run_dir, resume
        self.store = CheckpointStore(run_dir)
        self.options = self._resolve_options(options)
        self.stop = StopFlag()
        self.state: dict[str, Any] = self.store.load_state() if resume else {}

    # ------------------------------------------------------------------ set-up

    def _resolve_options(self, options: TrainOptions) -> TrainOptions:
        run_dir = self.run_dir
        if self.resume:
            if not self.store.exists():
                if (run_dir / MODEL_FILE).is_file():
                    raise RunError(f"{run_dir}: this run already finished; nothing to resume")
                raise RunError(f"{run_dir}: no interrupted run to resume (no checkpoints/state.json)")
            saved_path = self.store.dir / "options.json"
            saved = read_json(saved_path)
            try:
                saved["augmentation"] = Augmentation(**saved["augmentation"])
                if saved.get("good_labels") is not None:
                    saved["good_labels"] = tuple(saved["good_labels"])
                # How much to print is the resuming command's choice, not the interrupted one's.
                return TrainOptions(**{**saved, "verbose": options.verbose})
            except (TypeError, ValueError, KeyError) as exc:
                raise RunError(f"{saved_path}: not the options of an interrupted edgetl run ({exc}); "
                               "start a new run in a new -o folder") from None
        if (run_dir / MODEL_FILE).is_file() or self.store.exists():
            raise RunError(
                f"{run_dir}: already holds a run. Choose a new -o folder, or add --resume to "
                "continue an interrupted one"
            )
        if options.teacher:  # absolute, so that --resume from another directory finds it
            options = dataclasses.replace(options, teacher=str(Path(options.teacher).expanduser().resolve()))
        return options

    def _load_data(self) -> None:
        from ..backbones import get_spec
        from ..data import ImageDataset, Sample, load_images, scan_dataset

        opts = self.options
        size = opts.input_size or get_spec(opts.backbone).default_input_size  # an int, or the backbone's (h, w)
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        # The model's input, decided once: every image below and on the device is prepared this way.
        self.input = InputSpec(height=height, width=width, color_mode="rgb", resize="bilinear", normalization="model")
        self.size = (height, width)
        dataset = scan_dataset(self.data)
        if self.resume and (self.run_dir / SPLIT_FILE).is_file():
            split = read_split(self.run_dir / SPLIT_FILE)

            def part(name: str) -> ImageDataset:
                samples = tuple(Sample(Path(p), label) for p, label in split[name])
                return ImageDataset(samples=samples, classes=dataset.classes, root=dataset.root)

            train_set, val_set = part("train"), part("val")
        else:
            train_set, val_set = dataset.split(opts.val_split, seed=opts.seed)
        self.labels = dataset.classes
        self.good_labels = tuple(opts.good_labels or default_good_labels(self.labels))
        if not self.good_labels:
            raise RunError(
                f"cannot tell which class means 'no defect' among {list(self.labels)}; "
                "pass --good-class NAME (e.g. --good-class ok)"
            )
        unknown = set(self.good_labels) - set(self.labels)
        if unknown:
            raise RunError(f"good class {sorted(unknown)} is not among the data set's classes {list(self.labels)}")
        self.data_hash = dataset.content_hash()
        err_console().print(f"[bold]data[/] {self.data}: {len(train_set)} train, {len(val_set)} validation "
                            f"images, classes {list(self.labels)}")
        train_imgs = load_images(train_set, self.input, progress=opts.verbose > 0)
        val_imgs = load_images(val_set, self.input, progress=opts.verbose > 0)
        self.x_train, self.y_train = train_imgs.x, train_imgs.y.astype(np.int32)
        self.x_val, self.y_val = val_imgs.x, val_imgs.y.astype(np.int32)
        self.split = {
            "train": [[str(s.path), s.label] for s in train_imgs.samples],
            "val": [[str(s.path), s.label] for s in val_imgs.samples],
        }
        self.skipped = [[str(p), r] for p, r in [*train_imgs.skipped, *val_imgs.skipped]]
        weights = class_weights(self.y_train, len(self.labels), opts.class_weight)
        self.sample_weight = None if weights is None else weights[self.y_train]
        teacher = self._teacher_probabilities(train_imgs.samples)
        self.t_train = pack_targets(self.y_train, len(self.labels), teacher, train=True)
        self.t_val = pack_targets(self.y_val, len(self.labels), train=False)  # plain cross-entropy

    def _teacher_probabilities(self, samples) -> np.ndarray | None:
        """Return the teacher's soft labels for the training images (cached in the run), or None."""
        opts = self.options
        if not opts.teacher:
            return None
        teacher = Path(opts.teacher)
        model_file = teacher / MODEL_FILE if teacher.is_dir() else teacher
        digest = hashlib.sha256()
        if model_file.is_file():
            with open(model_file, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        digest.update(json.dumps([str(s.path) for s in samples]).encode())
        path = self.run_dir / "cache" / f"teacher-{digest.hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path) as cached:
                return cached["probs"]
        err_console().print(f"[bold]teacher[/] {teacher}: scoring the {len(samples)} training images once "
                            "(4 flips each)")
        probs = teacher_probabilities(teacher, [s.path for s in samples], self.labels, progress=opts.verbose > 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, probs=probs)
        return probs

    def _build(self) -> None:
        from ..backbones import backbone_blocks

        keras().utils.set_random_seed(self.options.seed)
        self.backbone, self.model, self.features, self.head = self._assemble(self.options.weights)
        self.blocks = backbone_blocks(self.backbone, self.options.backbone)
        for layer in self.backbone.layers:
            layer.trainable = False

    def _assemble(self, weights: str | None):
        """Return (backbone, classifier, pooled-feature model, head on pooled features)."""
        from ..backbones import load_backbone

        k, opts = keras(), self.options
        backbone = load_backbone(opts.backbone, weights=weights, input_size=self.size, alpha=opts.alpha)
        pooled = k.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
        features = k.Model(backbone.input, pooled, name="features")
        dropout = k.layers.Dropout(opts.dropout, name="dropout")
        dense = k.layers.Dense(len(self.labels), activation="softmax", dtype="float32", name="scores")
        model = k.Model(backbone.input, dense(dropout(pooled)), name=f"edgetl_{opts.backbone}")
        feat_in = k.Input((pooled.shape[-1],), name="features")
        head = k.Model(feat_in, dense(dropout(feat_in)), name="head")
        return backbone, model, features, head

    def _float32_model(self, precision: str):
        """Return the classifier with float32 layers (a mixed-precision model would export float16 ops)."""
        if precision == "float32":
            return self.model
        keras().mixed_precision.set_global_policy("float32")
        _, model, _, _ = self._assemble(None)
        model.set_weights(self.model.get_weights())
        return model

    # ------------------------------------------------------------------ phases

    def _cached_features(self) -> tuple[np.ndarray, np.ndarray]:
        key = hashlib.sha256(
            json.dumps([self.data_hash, self.options.backbone, str(self.options.weights), self.size]).encode()
        ).hexdigest()[:16]
        path = self.run_dir / "cache" / f"features-{key}.npz"
        if path.is_file():
            with np.load(path) as cached:
                return cached["train"], cached["val"]
        err_console().print("[bold]phase 1[/] computing backbone features once (frozen backbone, no augmentation)")
        train, val = self._extract(self.x_train, "train"), self._extract(self.x_val, "val")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, train=train, val=val)
        return train, val

    def _extract(self, x: np.ndarray, name: str) -> np.ndarray:
        from rich.progress import Progress

        out = []
        console = err_console()  # not a terminal (logs, CI): no bar, it would leave blank lines
        quiet = self.options.verbose == 0 or not console.is_terminal
        with Progress(console=console, transient=True, disable=quiet) as bar:
            task = bar.add_task(f"features ({name})", total=len(x))
            for i in range(0, len(x), FEATURE_BATCH):
                if self.stop:
                    raise TrainingInterrupted(str(self.run_dir))
                batch = x[i : i + FEATURE_BATCH].astype(np.float32)
                out.append(np.asarray(self.features.predict_on_batch(batch)))  # graph mode, not eager
                bar.advance(task, len(batch))
        return np.concatenate(out) if out else np.zeros((0, self.features.output_shape[-1]), np.float32)

    def _fit(self, model, phase: str, train_ds, val_ds, epochs: int, lr: float, steps: int) -> None:
        k, opts = keras(), self.options
        ph = self.state.get(phase, {})
        first = int(ph.get("next_epoch", 0))
        if ph.get("done") or ph.get("early_stopped") or first >= epochs:
            return
        multipliers, ema = None, 0.0
        if phase == "phase2":
            # Cosine decay to zero over the phase: large early steps adapt the unfrozen blocks, small
            # late ones stop the validation loss from jumping around (seen on ELPV at a constant rate).
            # The schedule reads optimizer.iterations, which the checkpoint restores on --resume.
            warmup = int(round(opts.warmup_epochs * steps))
            if warmup:
                lr = k.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, epochs * steps - warmup),
                                                        warmup_target=float(lr), warmup_steps=warmup)
            else:
                lr = k.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, epochs * steps))
            multipliers, ema = self._layer_multipliers(), opts.ema
        optimizer = make_optimizer(lr, multipliers, ema)
        n = len(self.labels)
        loss = make_loss(n, opts.label_smoothing, opts.distill_weight if opts.teacher else 0.0,
                         opts.distill_temperature)
        metrics = [make_accuracy(n)]
        if opts.select == "auc":
            defects = [i for i, name in enumerate(self.labels) if name not in self.good_labels]
            if not defects:
                raise RunError(f"--select auc ranks defects against good images, but every class {list(self.labels)} "
                               "is marked good; use --select loss or mark fewer --good-class")
            metrics.append(make_auc(n, defects))
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        if ph.get("last"):
            self.store.restore(model, optimizer, ph["last"])
            err_console().print(f"[bold]{phase}[/] resuming at epoch {first + 1}/{epochs}")
        callbacks = [
            epoch_callback(self.store, self.state, phase, self.stop, opts.patience, opts.select),
            k.callbacks.TensorBoard(log_dir=str(self.run_dir / "logs" / phase), profile_batch=0),
        ]
        err_console().print(f"[bold]{phase}[/] up to {epochs} epochs")
        # Keras writes its progress to stdout; stdout is for results (``--json``), so it goes to stderr:
        # a live bar on a terminal, one line per epoch elsewhere (logs, CI).
        verbose = (1 if sys.stderr.isatty() else 2) if opts.verbose else 0
        with contextlib.redirect_stdout(sys.stderr):
            model.fit(train_ds(first), validation_data=val_ds, epochs=epochs, initial_epoch=first,
                      steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
        if self.stop:
            raise TrainingInterrupted(str(self.run_dir))
        self.state[phase]["done"] = True
        self.store.save_state(self.state)

    def _layer_multipliers(self) -> list[tuple[object, float]] | None:
        """Pair each fine-tuned backbone variable with its block's learning-rate factor (layer decay)."""
        if self.options.layer_decay == 1.0:
            return None
        pairs = []
        for block, factor in zip(self.blocks, block_multipliers(len(self.blocks), self.options.layer_decay)):
            for layer in block:
                pairs.extend((v, factor) for v in layer.trainable_weights)
        return pairs

    def _phase1(self) -> None:
        opts = self.options
        bs = opts.batch_size
        steps = int(np.ceil(len(self.x_train) / bs))
        if opts.augment_head:
            aug = opts.augmentation
            self._fit(self.model, "phase1", lambda first: epoch_dataset(
                self.x_train, self.t_train, self.sample_weight, bs, opts.seed, first, opts.epochs, aug),
                eval_dataset(self.x_val, self.t_val, bs), opts.epochs, opts.learning_rate, steps)
        else:
            f_train, f_val = self._cached_features()
            tf = tensorflow()
            val = tf.data.Dataset.from_tensor_slices((f_val, self.t_val)).batch(256)
            self._fit(self.head, "phase1", lambda first: epoch_dataset(
                f_train, self.t_train, self.sample_weight, bs, opts.seed, first, opts.epochs, None),
                val, opts.epochs, opts.learning_rate, steps)
        # The cached-feature head shares its Dense layer with the full model: restoring the head's
        # best checkpoint sets the full model's classifier.
        self.store.restore(self.model if opts.augment_head else self.head, None, self.state["phase1"]["best"])
        if not self.state["phase1"].get("model"):  # the full classifier after phase 1, for phase 2 to beat
            self.state["phase1"]["model"] = self.store.write(self.model, None, "phase1-model")
            self.store.save_state(self.state)

    def _phase2(self) -> None:
        opts = self.options
        depth, why = self._unfreeze_depth()
        self.state["unfreeze"] = {"blocks": depth, "of": len(self.blocks), "reason": why}
        debug(f"[bold]phase2[/] fine-tunes {depth} of {len(self.blocks)} blocks: {why}")
        if depth == 0 or opts.fine_tune_epochs == 0:
            return
        pretrained = self._pretrained()
        for block in self.blocks[len(self.blocks) - depth:]:
            for layer in block:
                # Pretrained BatchNorm stays frozen (inference mode): small batches would wreck its
                # ImageNet statistics. Without pretrained weights there are no statistics to keep.
                layer.trainable = not pretrained or not isinstance(layer, keras().layers.BatchNormalization)
        bs = opts.batch_size
        aug = opts.augmentation if opts.augment else None
        steps = int(np.ceil(len(self.x_train) / bs))
        self._fit(self.model, "phase2", lambda first: epoch_dataset(
            self.x_train, self.t_train, self.sample_weight, bs, opts.seed, first, opts.fine_tune_epochs, aug),
            eval_dataset(self.x_val, self.t_val, bs), opts.fine_tune_epochs, opts.fine_tune_learning_rate, steps)
        # Keep phase 2 only if it beat the head alone on validation loss (or AUC, with select="auc").
        if best_value(self.state["phase2"]) <= best_value(self.state["phase1"]):
            self.store.restore(self.model, None, self.state["phase2"]["best"])
        else:
            self.store.restore(self.model, None, self.state["phase1"]["model"])
            self.state["unfreeze"]["kept"] = (f"phase 1 weights (fine-tuning did not improve validation "
                                              f"{self.options.select})")

    def _pretrained(self) -> bool:
        return str(self.options.weights).lower() not in ("none", "")

    def _unfreeze_depth(self) -> tuple[int, str]:
        opts = self.options
        if opts.unfreeze == "auto":
            if not self._pretrained():
                return len(self.blocks), "no pretrained weights (--weights none): the whole network is trained"
            return auto_unfreeze(len(self.x_train), len(self.blocks))
        depth = int(opts.unfreeze)
        if depth < 0:
            raise ValueError(f"--unfreeze must be 'auto' or a number of blocks >= 0, got {depth}")
        return min(depth, len(self.blocks)), f"set by the user (--unfreeze {depth})"

    # ------------------------------------------------------------------ run

    def _trained_an_epoch(self) -> bool:
        return any(self.state.get(phase, {}).get("history") for phase in ("phase1", "phase2"))

    def _discard(self, created: bool) -> None:
        """Remove what this run wrote before its first epoch: the folder if it made it, else its files."""
        if created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        shutil.rmtree(self.store.dir, ignore_errors=True)
        (self.run_dir / SPLIT_FILE).unlink(missing_ok=True)

    def run(self, start: float) -> TrainResult:
        opts = self.options
        strategy = make_strategy(opts.strategy)  # first: multi-worker must exist before TF starts
        chief_dir = None
        if not is_chief(strategy):
            # Every worker trains; only the chief's files are the run (Keras' multi-worker pattern). A worker
            # writes in a hidden folder of the run, kept for --resume and removed once training is done.
            chief_dir = self.run_dir
            self.run_dir = self.run_dir / f".worker-{strategy.cluster_resolver.task_id}"
            self.store = CheckpointStore(self.run_dir)
        with claim(self.run_dir, self.resume) as created:  # nobody else writes it; nothing of others in it
            return self._run(start, strategy, chief_dir, created)

    def _run(self, start: float, strategy: Any, chief_dir: Path | None, created: bool) -> TrainResult:
        opts = self.options
        tf = tensorflow()
        if opts.seed is not None:
            tf.config.experimental.enable_op_determinism()
        precision = configure_precision(opts.mixed_precision)
        try:
            self._load_data()
            if not self.resume:
                self.store.dir.mkdir(parents=True, exist_ok=True)
                write_json(self.store.dir / "options.json", opts.to_dict())
                write_json(self.run_dir / SPLIT_FILE, self.split)
                self.store.save_state(self.state)  # from here on, --resume finds this run
            with self.stop, strategy.scope():
                self._build()
                self._phase1()
                self._phase2()
            self.store.save_state(self.state)
            result = self._finish(start, precision, strategy)
            if chief_dir is not None:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                result = dataclasses.replace(result, run_dir=chief_dir, model_path=chief_dir / MODEL_FILE)
            return result
        except (TrainingInterrupted, KeyboardInterrupt):
            raise  # checkpoints stay for --resume
        except BaseException:
            if not self.resume and not self._trained_an_epoch():
                self._discard(created)  # a failed set-up must not block the retry ("already holds a run")
            raise
        finally:
            keras().mixed_precision.set_global_policy("float32")  # leave the process as we found it

    def _finish(self, start: float, precision: str, strategy) -> TrainResult:
        from ..evaluation import defect_scores, evaluate_probs, plot_confusion, plot_history, plot_roc

        opts = self.options
        spec = ModelSpec(
            task="classification", labels=tuple(self.labels), good_labels=tuple(self.good_labels), input=self.input,
            provenance=Provenance(backbone=opts.backbone, weights=str(opts.weights), data_hash=self.data_hash,
                                  sdk_version=__version__,
                                  created=datetime.now(timezone.utc).replace(microsecond=0).isoformat()),
        )  # fmt: skip
        probs = self.model.predict(self.x_val.astype(np.float32), batch_size=opts.batch_size, verbose=0)
        result = evaluate_probs(probs, self.y_val, spec)
        seconds = time.perf_counter() - start
        config = {
            "options": opts.to_dict(),
            "data": str(self.data.resolve()),
            "n_train": len(self.x_train),
            "n_val": len(self.x_val),
            "skipped_files": self.skipped,
            "unfreeze": self.state.get("unfreeze"),
            "precision_policy": precision,
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "train_seconds": round(seconds, 1),
        }
        # The model last: a run counts as finished once model.keras exists, so its contract and
        # config must already be there.
        write_spec(self.run_dir, spec)
        write_json(self.run_dir / CONFIG_FILE, config)
        with atomic_path(self.run_dir / MODEL_FILE) as tmp:
            self._float32_model(precision).save(tmp)
        metrics = {"validation": result.metrics, "history": {p: self.state.get(p, {}).get("history", [])
                                                            for p in ("phase1", "phase2")}}
        write_json(self.run_dir / METRICS_FILE, metrics)
        plot_history(metrics["history"], self.run_dir / "training_curves.png")
        plot_confusion(result.metrics["confusion_matrix"], self.labels, self.run_dir / "confusion_matrix.png",
                       f"{self.run_dir.name}: validation split\n{len(self.y_val)} images, threshold {spec.threshold:.3f}")
        truth = np.array([self.labels[i] not in self.good_labels for i in self.y_val])
        plot_roc(truth, defect_scores(probs, spec), self.run_dir / "roc_curve.png")
        self.store.clear()  # the run is complete: model.keras replaces the checkpoints
        m = result.metrics
        # good/defect verdict accuracy ("accuracy" in metrics written before the 0.2 metric names)
        accuracy = next((m[k] for k in ("decision_accuracy", "accuracy") if m.get(k) is not None), None)
        auc = m.get("roc_auc")
        err_console().print(f"[bold green]done[/] in {seconds:.0f} s: validation accuracy "
                            f"{'n/a' if accuracy is None else f'{accuracy:.4f}'}, ROC AUC "
                            f"{'n/a' if auc is None else f'{auc:.4f}'}")
        return TrainResult(self.run_dir, self.run_dir / MODEL_FILE, spec, result.metrics, config, seconds)

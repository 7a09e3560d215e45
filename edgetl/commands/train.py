"""``edgetl train``: two-phase transfer learning on a folder or CSV data set.

Output: progress and informational lines on stderr; on stdout the result: what was written and
the next commands, or with ``--json`` one JSON object, or with ``--quiet`` the model's path alone.
Exit codes: 0 trained; 2 bad input (data, options, run folder); 130 interrupted (the last finished
epoch is checkpointed: rerun with ``--resume``).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from ..console import QUIET, verbosity, verbosity_options
from ..anomaly.fit import AnomalyOptions
from ..training import TrainOptions
from ..training.augment import Augmentation
from ..weights import WeightsFileError, WeightsUnavailable
from . import InputError, check_output_files


@click.command()
@click.argument("data", type=click.Path(exists=True))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(), help="Run folder to write.")
@click.option("--backbone", default=TrainOptions.backbone, show_default=True,
              help="efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2 | mobilenet_v2 | mobilenet_v3_small | mobilenet_v3_large")
@click.option("--weights", default=TrainOptions.weights, show_default=True, help="imagenet | none | PATH")
@click.option("--input-size", type=int, default=None, help="Input size in pixels (square). [default: backbone's]")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Width multiplier (mobilenet_v2).")
@click.option("--val-split", type=float, default=TrainOptions.val_split, show_default=True,
              help="Fraction of DATA held out for validation (stratified by class).")
@click.option("--epochs", type=int, default=TrainOptions.epochs, show_default=True, help="Phase 1 (head) epochs.")
@click.option("--fine-tune-epochs", type=int, default=TrainOptions.fine_tune_epochs, show_default=True,
              help="Phase 2 (fine-tuning) epochs; 0 trains the head only.")
@click.option("--unfreeze", default="auto", show_default=True, help="'auto' or the number of top blocks to fine-tune.")
@click.option("--batch-size", type=int, default=TrainOptions.batch_size, show_default=True, help="Images per step.")
@click.option("--lr", "learning_rate", type=float, default=TrainOptions.learning_rate, show_default=True,
              help="Phase 1 (head) learning rate.")
@click.option("--fine-tune-lr", type=float, default=TrainOptions.fine_tune_learning_rate, show_default=True,
              help="Phase 2 learning rate.")
@click.option("--warmup-epochs", type=float, default=TrainOptions.warmup_epochs, show_default=True,
              help="Phase 2: linear learning-rate warm-up over this many epochs before the cosine decay.")
@click.option("--layer-decay", type=float, default=TrainOptions.layer_decay, show_default=True,
              help="Phase 2: each block below the top learns at this factor of the one above (1: off).")
@click.option("--ema", type=float, default=TrainOptions.ema, show_default=True,
              help="Phase 2: keep a moving average of the weights with this momentum, e.g. 0.99 (0: off).")
@click.option("--select", type=click.Choice(["loss", "auc"]), default=TrainOptions.select, show_default=True,
              help="Keep the epoch with the lowest validation loss, or the highest validation ROC AUC.")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Augment during fine-tuning.")
@click.option("--rotate", type=float, default=0.0, show_default=True,
              help="Augmentation: also rotate by up to this many degrees.")
@click.option("--gamma", type=float, default=0.0, show_default=True,
              help="Augmentation: also apply a gamma from [1/(1+g), 1+g].")
@click.option("--class-weight", type=click.Choice(["balanced", "none"]), default="balanced", show_default=True,
              help="Weight classes inversely to their frequency (defects are usually rare).")
@click.option("--patience", type=int, default=TrainOptions.patience, show_default=True,
              help="Early stopping: epochs without a better validation loss (AUC with --select auc).")
@click.option("--label-smoothing", type=float, default=TrainOptions.label_smoothing, show_default=True,
              help="Train on (1 - s) * one-hot + s / classes targets.")
@click.option("--teacher", type=click.Path(exists=True), default=None,
              help="Distil from this finished run folder (same classes): the model also learns its soft labels.")
@click.option("--distill-weight", type=float, default=TrainOptions.distill_weight, show_default=True,
              help="Share of the teacher's soft labels in the loss (with --teacher).")
@click.option("--distill-temperature", type=float, default=TrainOptions.distill_temperature, show_default=True,
              help="Softmax temperature of the distillation term (with --teacher).")
@click.option("--good-class", "good_classes", multiple=True, help="Class meaning 'no defect' (repeatable).")
@click.option("--task", type=click.Choice(["classification", "anomaly"]), default="classification", show_default=True,
              help="anomaly: fit a detector to the good images only (no defect labels needed).")
@click.option("--max-false-alarm", type=float, default=AnomalyOptions.max_false_alarm, show_default=True,
              help="Anomaly: share of good images allowed to score as anomalies; sets the threshold on the "
                   "held-out good images (--val-split of them).")
@click.option("--dims", type=int, default=AnomalyOptions.dims, show_default=True,
              help="Anomaly: feature channels kept (fewer: a smaller, faster file).")
@click.option("--clusters", type=int, default=AnomalyOptions.clusters, show_default=True,
              help="Anomaly: kinds of good part modelled per position.")
@click.option("--top-area", type=float, default=AnomalyOptions.top_area, show_default=True,
              help="Anomaly: an image's score averages its most anomalous cells over this share of it (0: the worst cell).")
@click.option("--flips", is_flag=True, help="Anomaly: also fit the mirrored good images (if a mirrored part is good).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strategy", type=click.Choice(["auto", "default", "mirrored", "multi-worker"]), default="auto",
              show_default=True, help="multi-worker reads the cluster from TF_CONFIG.")
@click.option("--mixed-precision", type=click.Choice(["auto", "on", "bfloat16", "off"]), default="auto",
              show_default=True, help="auto: float16 on a GPU that has it; on: float16; bfloat16: e.g. on CPUs with AMX.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in the -o folder.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as one JSON object on stdout (progress stays on stderr).")
@click.option("--json-file", type=click.Path(dir_okay=False), default=None, help="Also write the JSON result here.")
@verbosity_options
def train(data, run_dir, backbone, weights, input_size, alpha, val_split, epochs, fine_tune_epochs, unfreeze,
          batch_size, learning_rate, fine_tune_lr, warmup_epochs, layer_decay, ema, select, augment, rotate, gamma,
          class_weight, patience, label_smoothing, teacher,
          distill_weight, distill_temperature, good_classes, task, max_false_alarm, dims, clusters, top_area, flips, seed,
          strategy, mixed_precision, resume, as_json, json_file):
    """Fine-tune a defect classifier on DATA (class folders or a path,label CSV) into RUN_DIR, or with
    --task anomaly fit a detector to DATA's good images only (docs/anomaly.md).

    \b
    Examples:
      edgetl train data/elpv/train -o runs/elpv
      edgetl train data/elpv/train -o runs/elpv --resume      # after an interruption
      edgetl train data/elpv/train -o runs/elpv --json > train.json
      edgetl train data/elpv/train -o runs/small --teacher runs/big     # knowledge distillation
      edgetl train data/good-parts -o runs/anomaly --task anomaly       # from good images only

    Exit codes: 0 trained, 2 bad input, 130 interrupted (continue with --resume).
    """
    from ..training.checkpoint import TrainingInterrupted
    from ..training import train as run_training

    if task == "anomaly":
        return _anomaly(data, run_dir, backbone, weights, input_size, val_split, batch_size, good_classes,
                        max_false_alarm, dims, clusters, top_area, flips, seed, resume, as_json, json_file)
    _refuse_options_of("anomaly", ("max_false_alarm", "dims", "clusters", "top_area", "flips"))
    if unfreeze != "auto" and not unfreeze.isdigit():
        raise click.BadParameter("must be 'auto' or a number of blocks", param_hint="--unfreeze")
    check_output_files(json_file)  # before the training, not after it
    try:
        options = TrainOptions(
            backbone=backbone, weights=weights, input_size=input_size, alpha=alpha, val_split=val_split,
            epochs=epochs, fine_tune_epochs=fine_tune_epochs,
            unfreeze=unfreeze if unfreeze == "auto" else int(unfreeze), batch_size=batch_size,
            learning_rate=learning_rate, fine_tune_learning_rate=fine_tune_lr, warmup_epochs=warmup_epochs,
            layer_decay=layer_decay, ema=ema, select=select, augment=augment,
            augmentation=Augmentation(rotate=rotate, gamma=gamma),
            class_weight=class_weight, patience=patience, label_smoothing=label_smoothing,
            teacher=str(teacher) if teacher else None, distill_weight=distill_weight,
            distill_temperature=distill_temperature, seed=seed, strategy=strategy,
            mixed_precision=mixed_precision, good_labels=tuple(good_classes) or None,
            verbose=0 if verbosity() <= QUIET else 1,  # 0: no progress bars
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    # stdout carries the result only: with --json anything else that writes there goes to stderr.
    to_stderr = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with to_stderr:
            result = run_training(data, options=options, output=run_dir, resume=resume)
    except (TrainingInterrupted, KeyboardInterrupt) as exc:
        message = str(exc) if isinstance(exc, TrainingInterrupted) else (
            f"training aborted; the last finished epoch is saved in {run_dir}/checkpoints. "
            "Continue with the same command plus --resume")
        click.echo(f"edgetl train: {message}", err=True)
        sys.exit(130)
    except (ValueError, OSError, ImportError, WeightsUnavailable, WeightsFileError) as exc:
        _disk_full(exc, run_dir, resumable=True)
        raise InputError(str(exc)) from None  # a message the user can act on, not a traceback
    except Exception as exc:  # TensorFlow reports a full disk as its own ResourceExhaustedError
        _disk_full(exc, run_dir, resumable=True)
        raise
    _report(result, Path(data), as_json, json_file)


def _disk_full(exc: BaseException, run_dir: str, resumable: bool) -> None:
    """Raise an :class:`InputError` naming the run folder when ``exc`` says the disk is full; else return."""
    import errno

    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc):
        then = (f" The last finished epoch is kept: free space, then rerun the same command with --resume"
                if resumable else " Free space and run it again")  # fmt: skip
        raise InputError(f"{run_dir}: the disk is full (No space left on device) while writing the run.{then}.") from None


# What an anomaly fit takes from the command's options; any other one given is refused.
ANOMALY_USES = {"data", "run_dir", "backbone", "weights", "input_size", "val_split", "batch_size", "good_classes",
                "task", "max_false_alarm", "dims", "clusters", "top_area", "flips", "seed", "resume", "as_json",
                "json_file"}


def _refuse_options_of(task: str, names: tuple[str, ...] | None = None) -> None:
    """Raise a usage error for options given on the command line that ``task`` does not use.

    ``names``: the options only ``task`` takes; None: every option outside :data:`ANOMALY_USES`.
    """
    ctx = click.get_current_context()
    given = [p for p in ctx.command.params if p.expose_value
             and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]  # fmt: skip
    wrong = [p for p in given if (p.name in names if names is not None else p.name not in ANOMALY_USES)]
    if wrong:
        flags = ", ".join(p.opts[-1] if p.opts[-1].startswith("--") else p.opts[0] for p in wrong)
        other = "anomaly" if names is not None else "classification"
        raise click.UsageError(f"{flags}: only for --task {other}")


def _anomaly(data, run_dir, backbone, weights, input_size, val_split, batch_size, good_classes, max_false_alarm,
             dims, clusters, top_area, flips, seed, resume, as_json, json_file) -> None:  # fmt: skip
    """``edgetl train --task anomaly``: fit a detector to the good images of DATA (see edgetl.anomaly.fit)."""
    from ..anomaly.fit import fit_run

    _refuse_options_of("classification")
    if resume:
        raise InputError("--resume is for classifiers: an interrupted anomaly fit continues by running the same "
                         "command again (its extracted features are cached in the run folder)")  # fmt: skip
    check_output_files(json_file)
    try:
        options = AnomalyOptions(backbone=backbone, weights=weights, input_size=input_size, holdout=val_split,
                                 max_false_alarm=max_false_alarm, dims=dims, clusters=clusters, top_area=top_area,
                                 flips=flips,
                                 batch_size=batch_size, seed=seed, good_labels=tuple(good_classes) or None,
                                 verbose=0 if verbosity() <= QUIET else 1)  # fmt: skip
    except ValueError as exc:
        raise InputError(str(exc)) from None
    to_stderr = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with to_stderr:
            result = fit_run(data, options, run_dir)
    except KeyboardInterrupt:
        click.echo(f"edgetl train: interrupted; run the same command again to continue (the features extracted so "
                   f"far are cached in {run_dir}/cache)", err=True)  # fmt: skip
        sys.exit(130)
    except (ValueError, OSError, ImportError, WeightsUnavailable, WeightsFileError) as exc:
        _disk_full(exc, run_dir, resumable=False)
        raise InputError(str(exc)) from None
    except Exception as exc:
        _disk_full(exc, run_dir, resumable=False)
        raise
    _report(result, Path(data), as_json, json_file)


def _report(result: Any, data: Path, as_json: bool, json_file: str | None) -> None:
    """Print what was written and what to run next (or the JSON result); write ``json_file``."""
    payload = _result_json(result, data)
    if json_file:
        from edgetl_runtime.atomic import write_json

        try:
            write_json(Path(json_file), payload)
        except OSError as exc:
            raise InputError(f"{json_file}: cannot write the JSON result ({exc.strerror or exc})") from exc
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    elif verbosity() <= QUIET:
        click.echo(str(result.model_path))
    else:
        click.echo(_summary(result.run_dir, payload["next"]))


def _written(run_dir: Path) -> list[tuple[Path, str]]:
    """Return (path, what it is) for each entry of the run folder, known entries first."""
    from ..run import RUN_FILES

    present = {p.name: p for p in sorted(run_dir.iterdir()) if not p.name.startswith(".")}
    known = [(present.pop(name), what) for name, what in RUN_FILES.items() if name in present]
    return known + [(path, "") for path in present.values()]


def _test_data_hint(data: Path) -> str:
    """Return a test set to suggest for ``edgetl eval``: DATA's sibling ``test`` folder if there is one."""
    sibling = data.parent / "test"
    if data.is_dir() and data.name != "test" and sibling.is_dir():
        return shlex.quote(str(sibling))
    return "TEST_DATA"


def _result_json(result: Any, data: Path) -> dict[str, Any]:
    run = shlex.quote(str(result.run_dir))
    return {
        "run_dir": str(result.run_dir),
        "model": str(result.model_path),
        "seconds": round(result.seconds, 1),
        "validation": result.metrics,
        "files": [str(path) for path, _ in _written(result.run_dir)],
        "next": [
            f"edgetl eval {run} {_test_data_hint(data)}",
            f"edgetl export {run} --format tflite --quant int8",
            f"edgetl benchmark {run}",
        ],
    }


def _summary(run_dir: Path, next_commands: list[str]) -> str:
    """Return the human end message: what the run folder holds and what to run next."""
    names = [(f"{path.name}/" if path.is_dir() else path.name, what) for path, what in _written(run_dir)]
    listed = ", ".join(f"{name} ({what})" if what else name for name, what in names)
    return "\n".join([f"wrote {run_dir}: {listed}", "next:", *(f"  {cmd}" for cmd in next_commands)])

"""``edgetl train``: two-phase transfer learning on a folder or CSV data set."""

from __future__ import annotations

import json
import sys

import click

from ..training import TrainOptions


@click.command()
@click.argument("data", type=click.Path(exists=True))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(), help="Run folder to write.")
@click.option("--backbone", default=TrainOptions.backbone, show_default=True,
              help="mobilenet_v2 | mobilenet_v3_small | mobilenet_v3_large | efficientnet_lite0")
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
@click.option("--augment/--no-augment", default=True, show_default=True, help="Augment during fine-tuning.")
@click.option("--class-weight", type=click.Choice(["balanced", "none"]), default="balanced", show_default=True,
              help="Weight classes inversely to their frequency (defects are usually rare).")
@click.option("--patience", type=int, default=TrainOptions.patience, show_default=True,
              help="Early stopping: epochs without a lower validation loss.")
@click.option("--good-class", "good_classes", multiple=True, help="Class meaning 'no defect' (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strategy", type=click.Choice(["auto", "default", "mirrored", "multi-worker"]), default="auto",
              show_default=True, help="multi-worker reads the cluster from TF_CONFIG.")
@click.option("--mixed-precision", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in the -o folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(data, run_dir, backbone, weights, input_size, alpha, val_split, epochs, fine_tune_epochs, unfreeze,
          batch_size, learning_rate, fine_tune_lr, augment, class_weight, patience, good_classes, seed,
          strategy, mixed_precision, resume, as_json):
    """Fine-tune a defect classifier on DATA (class folders or a path,label CSV) into RUN_DIR."""
    from ..training.checkpoint import TrainingInterrupted
    from ..training import train as run_training

    if unfreeze != "auto" and not unfreeze.isdigit():
        raise click.BadParameter("must be 'auto' or a number of blocks", param_hint="--unfreeze")
    options = TrainOptions(
        backbone=backbone, weights=weights, input_size=input_size, alpha=alpha, val_split=val_split,
        epochs=epochs, fine_tune_epochs=fine_tune_epochs, unfreeze=unfreeze if unfreeze == "auto" else int(unfreeze),
        batch_size=batch_size, learning_rate=learning_rate, fine_tune_learning_rate=fine_tune_lr, augment=augment,
        class_weight=class_weight, patience=patience, seed=seed, strategy=strategy,
        mixed_precision=mixed_precision, good_labels=tuple(good_classes) or None,
    )
    try:
        result = run_training(data, options=options, output=run_dir, resume=resume)
    except TrainingInterrupted as exc:
        click.echo(f"edgetl train: {exc}", err=True)
        sys.exit(130)
    except (ValueError, OSError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"run_dir": str(result.run_dir), "model": str(result.model_path),
                               "seconds": round(result.seconds, 1), "validation": result.metrics}, indent=2))
    else:
        click.echo(f"model: {result.model_path}")

"""``edgetl eval``: metrics of a run or exported model on a labelled data set."""

from __future__ import annotations

import json

import click


@click.command("eval")
@click.argument("model", type=click.Path(exists=True))
@click.argument("data", type=click.Path(exists=True))
@click.option("--target-recall", type=float, default=None,
              help="Choose the decision threshold reaching this defect recall on the run's validation "
                   "split, store it with the model, and use it here.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print metrics as JSON.")
def eval_cmd(model, data, target_recall, batch_size, as_json):
    """Evaluate MODEL (a run folder, .keras, .tflite or .onnx) on DATA."""
    from rich.console import Console
    from rich.table import Table

    from ..evaluation import evaluate

    try:
        result = evaluate(model, data, target_recall=target_recall, batch_size=batch_size, progress=not as_json)
    except (ValueError, OSError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    m = result.metrics
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    table = Table(title=f"{model} on {data} ({m['n']} images, threshold {m['threshold']:.3f})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc"):
        value = m[key]
        table.add_row(key if key not in ("precision", "recall", "f1") else f"defect {key}",
                      "n/a" if value is None else f"{value:.4f}")
    c = m["confusion"]
    table.add_row("confusion (tp fp tn fn)", f"{c['tp']} {c['fp']} {c['tn']} {c['fn']}")
    Console().print(table)

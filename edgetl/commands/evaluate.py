"""``edgetl eval``: decision metrics of a run or exported model on a labelled data set, and a report.

Exit codes: 0 evaluated; 2 bad input (model, data, options).
"""

from __future__ import annotations

import json
import warnings

import click

from ..console import err_console, verbosity, verbosity_options
from . import InputError, check_output_files, table_console

METRIC_ROWS = (
    ("decision_accuracy", "decision accuracy", "share of images whose verdict (defect/good) is right"),
    ("defect_recall", "defect recall", "share of defective images called defect"),
    ("defect_precision", "defect precision", "share of defect verdicts that are defective"),
    ("roc_auc", "ROC AUC", "ranking quality of the defect score, threshold-free"),
    ("class_accuracy", "class accuracy", "share of images whose decided class is right"),
    ("balanced_accuracy", "balanced accuracy", "mean of defect recall and good recall"),
    ("false_reject_rate", "false-reject rate", "share of good parts rejected (scrap)"),
    ("escape_rate", "escape rate", "share of defective parts passed"),
)


@click.command("eval")
@verbosity_options
@click.argument("model", type=click.Path(exists=True))
@click.argument("data", type=click.Path(exists=True))
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Choose the decision threshold reaching this defect recall on the run's validation "
                   "split, store it with the model, and use it here.")
@click.option("--max-false-alarm", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Choose the decision threshold that rejects at most this share of the good parts on the run's "
                   "validation split (the scrap budget), store it with the model, and use it here.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Evaluate at this defect-score threshold instead of the stored one (not stored).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Where the report goes [RUN/eval/<data folder>, or MODEL.eval/<data folder> for a file].")
@click.option("--no-report", is_flag=True, help="Only the metrics: no plots, no gallery.")
@click.option("--heatmap", "heatmap_dir", type=click.Path(file_okay=False), default=None,
              help="Anomaly detectors: write each image with its anomaly heatmap over it to this folder (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout (nothing else there).")
@click.option("--json-file", type=click.Path(dir_okay=False), default=None, help="Write the metrics as JSON to this file.")
def eval_cmd(model, data, target_recall, max_false_alarm, threshold, batch_size, report_dir, no_report, heatmap_dir,
             as_json, json_file):
    """Evaluate MODEL (a run folder, .keras, .tflite, .onnx or .imprint) on DATA (<label>/ subfolders or a CSV).

    \b
    The verdict of an image is "defect" when its defect score (1 - the summed probability of
    the good classes) reaches the threshold. Written to the report folder: metrics.json,
    confusion_matrix.png and verdict_matrix.png (counts and rates), roc.png, pr.png, and
    misclassified.html (the missed defects and false alarms with their scores).
    """
    from rich.table import Table

    from ..evaluation import evaluate

    check_output_files(json_file)
    err = err_console()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate(model, data, target_recall=target_recall, batch_size=batch_size, progress=not as_json and verbosity() >= 0,
                              threshold=threshold, report_dir=report_dir, write_report=not no_report,
                              heatmap_dir=heatmap_dir, max_false_alarm=max_false_alarm)  # fmt: skip
    except (ValueError, OSError, ImportError) as exc:
        raise InputError(str(exc)) from None
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    del caught  # the few-defects warning is printed above, once
    m = result.metrics
    if json_file:
        from edgetl_runtime.atomic import write_json

        try:
            write_json(json_file, m)
        except OSError as exc:
            raise InputError(f"{json_file}: cannot write ({exc.strerror or exc})") from None
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    if verbosity() < 0:  # --quiet: the headline figures only
        click.echo(" ".join(f"{k}={m[k]:.4f}" for k, _, _ in METRIC_ROWS[:4] if m.get(k) is not None))
        return
    table = Table(title=f"{model} on {data}: {m['n']} images, threshold {m['threshold']:.4g} ({m['threshold_source']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    for key, name, meaning in METRIC_ROWS:
        if m.get(key) is None and (key == "class_accuracy" or m.get("confusion") is None):
            continue
        value = m.get(key)
        table.add_row(name, "n/a" if value is None else f"{value:.4f}", meaning)
    c = m["confusion"]
    if c is not None:
        table.add_row("verdicts", f"{c['tp']} {c['fp']} {c['tn']} {c['fn']}", "tp fp tn fn (positive = defect)")
    if "threshold_stored" in m:
        low, high = m["recall_95ci"]
        table.add_row("validation recall", f"{m['validation_recall']:.4f}",
                      f"95% CI {low:.2f}-{high:.2f} on {m['validation_defects']} validation defects")  # fmt: skip
        low, high = m["false_alarm_95ci"]
        table.add_row("validation false rejects", f"{m['validation_false_alarm']:.4f}",
                      f"95% CI {low:.2f}-{high:.2f} on {m['validation_good']} good validation images")  # fmt: skip
    out = table_console()
    out.print(table)
    if "threshold_stored" in m:
        stored = m["threshold_stored"]
        out.print(f"stored threshold {m['threshold']:.4g} in {stored['path']} (was {stored['previous']:.4g}, "
                  f"{stored['previous_source']}); exports made from now on carry it", soft_wrap=True)
    if result.report_dir is not None:
        out.print(f"report: {result.report_dir} (metrics.json, confusion_matrix.png, roc.png, pr.png, misclassified.html)",
                  soft_wrap=True)

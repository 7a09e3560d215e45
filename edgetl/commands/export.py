"""``edgetl export``: a run to TFLite / Edge TPU / ONNX, quantized, metadata inside, validated.

Exit codes: 0 exported and validated; 1 validation failed (the ``.report.json`` is kept, nothing
is written at the output path); 2 bad input (run, data, options or output path).
"""

from __future__ import annotations

import json

import click

from edgetl_runtime.contract import FORMATS, QUANTIZATIONS

from ..console import verbosity, verbosity_options
from ..exporters.gate import DEFAULT_ALPHA, DEFAULT_MAX_DROP
from ..exporters.options import IO_TYPES
from . import InputError, table_console


class ValidationFailed(click.ClickException):
    exit_code = 1


@click.command("export")
@verbosity_options
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Target file format (default tflite, or the --profile's).")
@click.option("--quant", type=click.Choice(QUANTIZATIONS), default=None,
              help="fp32 | fp16 | dynamic (TFLite only) | int8 (calibrated) | qat (quantization-aware fine-tune).")
@click.option("--calib", type=click.Path(), default=None,
              help="Folder of calibration images (default: the run's training split).")
@click.option("--calib-samples", type=int, default=200, show_default=True, help="Calibration images to use.")
@click.option("--io-type", type=click.Choice(IO_TYPES), default=None,
              help="Input/output tensor type of int8/qat TFLite models (default uint8: raw pixels).")
@click.option("--data", "val_data", type=click.Path(), default=None,
              help="Held-out images for validation (default: the run's validation split).")
@click.option("--profile", "profile_name", default=None,
              help="Device profile (devices/*.toml name or path): format and quantization come from it.")
@click.option("--atol", type=float, default=None,
              help="Fail when any score differs from the float model's by more than this (default: 1e-3 for fp32, report only otherwise).")
@click.option("--min-agreement", type=float, default=None,
              help="Fail below this top-1 agreement with the float model, over all images (default per quantization).")
@click.option("--max-drop", type=click.FloatRange(0, 100), default=DEFAULT_MAX_DROP, show_default=True,
              help="Hard limit: fail when decision accuracy or defect recall on the validation images falls by "
                   "more than this many points against the float model, however few the images.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=DEFAULT_ALPHA, show_default=True,
              help="Fail when a paired test of the verdicts, image by image, says the export loses images beyond "
                   "chance with a p-value below this (0: off).")
@click.option("--no-validate", is_flag=True, help="Skip validation against the float model.")
@click.option("--tta", is_flag=True,
              help="Average the scores over the image's four flips inside the model (4 inferences per image).")
@click.option("--full-int8", is_flag=True,
              help="int8: keep the classification head (dense layer, softmax) in int8 too, for accelerators that "
                   "need every op in int8 (the Edge TPU always does). Default: the head runs in float, so scores "
                   "near a low threshold are not rounded together.")
@click.option("--roi", default=None, metavar="X,Y,W,H",
              help="The part's box in the camera frame (pixels, or fractions of width and height): cropped from the "
                   "calibration and validation images before the resize, and stored in the file so the device crops "
                   "its frames the same way.")
@click.option("--validate-on", "validate_on", type=click.Choice(["host", "aarch64"]), default="host",
              show_default=True,
              help="Where the exported file runs for its threshold, drift reference and gate: this machine, or "
                   "aarch64 (a Raspberry Pi's or Jetson's CPU arithmetic, in the emulated root that "
                   "benchmarks/arm64.py builds; needs root; a few minutes).")
@click.option("--embedding", is_flag=True,
              help="Add the image embedding as a second output (and a few prototypes per label), so the file can "
                   "learn new classes on the device: edgetl-runtime imprint.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (nothing else there).")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output file (default: RUN_DIR/export/model-<format>-<quant>.<ext>).")
def export(run_dir, fmt, quant, calib, calib_samples, io_type, val_data, profile_name, atol, min_agreement, max_drop,
           alpha, no_validate, tta, full_int8, roi, validate_on, embedding, as_json, output):
    """Export the model of RUN_DIR (a `edgetl train` folder) for an edge device.

    \b
    Examples:
      edgetl export runs/elpv --format tflite --quant int8 -o model.tflite
      edgetl export runs/elpv --format edgetpu -o coral.tflite
      edgetl export runs/elpv --format onnx --quant fp16 -o model.onnx
      edgetl export runs/elpv --profile raspberry-pi-4 -o pi.tflite
      edgetl export runs/elpv --quant int8 --tta -o model-tta.tflite   # flips averaged in the graph
      edgetl export runs/elpv --quant int8 --embedding -o model.tflite   # imprintable on the device
      sudo edgetl export runs/elpv --quant int8 --validate-on aarch64 -o pi.tflite   # the Pi's arithmetic

    The validation report is written beside the model as OUTPUT.report.json.
    """
    from pathlib import Path

    from ..exporters import ExportError, ExportOptions, ValidationError, export as run_export, options_for_profile

    fields = dict(calib_data=Path(calib) if calib else None, calib_samples=calib_samples,
                  val_data=Path(val_data) if val_data else None, validate=not no_validate,
                  atol=atol, min_agreement=min_agreement, max_drop=max_drop, alpha=alpha, tta=tta,
                  embedding=embedding, float_head=not full_int8, roi=roi, validate_on=validate_on)  # fmt: skip
    try:
        if profile_name:
            if fmt or quant:
                raise ExportError("--profile sets the format and quantization; drop --format/--quant or --profile")
            options, profile = options_for_profile(profile_name, **fields)
            _warn_input_size(run_dir, profile)
        else:
            fmt = fmt or "tflite"
            quant = quant or ("int8" if fmt == "edgetpu" else "fp32")
            options = ExportOptions(format=fmt, quantization=quant, io_type=io_type or "uint8", **fields)
        if io_type and options.format == "edgetpu" and io_type != "uint8":
            raise ExportError("the Edge TPU needs uint8 input and output: drop --io-type or pass --io-type uint8")
        if io_type and not options.is_integer:
            raise ExportError(f"--io-type applies to int8/qat models only; --quant {options.quantization} keeps float32 I/O")
        if io_type:
            options = options.replace(io_type=io_type)
        result = run_export(run_dir, options, output)
    except ValidationError as exc:
        _show(exc.report, None, as_json)
        raise ValidationFailed(str(exc)) from None
    except (ExportError, ValueError, OSError) as exc:
        raise InputError(str(exc)) from None
    _show(result.report, result, as_json)


def _warn_input_size(run_dir: str, profile) -> None:
    """Warn when the run's input size differs from the size the profile's budgets assume."""
    from ..run import RunError, load_run

    try:
        size = load_run(run_dir).spec.input_size
    except RunError:
        return  # export reports the missing run itself
    if tuple(size) != tuple(profile.export.input_size):
        click.echo(
            f"warning: the model takes {size[0]}x{size[1]} px but {profile.name}'s latency budget assumes "
            f"{profile.export.input_size[0]}x{profile.export.input_size[1]} px; retrain with --input-size "
            f"{profile.export.input_size[0]} to compare against the budget",
            err=True,
        )


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _show(report, result, as_json: bool) -> None:
    """Print the validation report (rich table) and what was written, or the JSON of both."""
    if as_json:
        payload = result.to_dict() if result is not None else {"validation": report.to_dict() if report else None}
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    from rich.table import Table

    console = table_console(stderr=result is None)
    if verbosity() < 0:  # --quiet: what was written, or the reason it was not
        if result is not None:
            click.echo(str(result.path))
        return
    if report is not None:
        _validation_table(console, report, Table)
    if result is None:
        return
    console.print(f"wrote {result.path} ({result.size_bytes / 1024:.1f} KiB, {result.format} {result.quantization})")
    if result.report_path:
        console.print(f"report {result.report_path}")
    if result.edgetpu is not None:
        console.print(result.edgetpu.summary())
    if result.note:
        console.print(result.note, soft_wrap=True)
    for step in result.adjusted:
        if report is None or step not in (report.note or ""):  # said under the table already
            console.print(step, soft_wrap=True)
    if result.qat is not None and result.qat.float_layers:
        layers = result.qat.float_layers
        console.print(f"QAT: {len(layers)} layer(s) outside tfmot's int8 scheme were calibrated post-training (first: {layers[0]})")


def _validation_table(console, report, Table) -> None:
    from pathlib import Path

    exported, reference = report.exported_metrics or {}, report.float_metrics or {}
    threshold, own = reference.get("threshold"), exported.get("threshold")
    at = "" if threshold is None else f", threshold {threshold:.4g}"
    if own is not None and threshold is not None and own != threshold:
        at += f" (the file's own: {own:.4g})"
    table = Table(title=f"Validation of {Path(report.path).name} against the float model ({report.n_images} images{at})")
    for name, justify in (("metric", "left"), ("float", "right"), ("exported", "right"), ("Δ pts", "right"),
                          ("lost/gained", "right"), ("p", "right"), ("limit", "left")):  # fmt: skip
        table.add_column(name, justify=justify)
    tests = {t.metric: t for t in report.paired}
    gate = f"drop ≤ {report.max_drop:g}, p ≥ {report.alpha:g}"
    for metric in ("decision_accuracy", "defect_recall", "defect_precision", "roc_auc", "class_accuracy"):
        if exported.get(metric) is None and reference.get(metric) is None:
            continue
        delta = report.delta(metric)
        fmt = (lambda v: "n/a" if v is None else f"{v:.4f}") if metric == "roc_auc" else _pct
        test = tests.get(metric)
        table.add_row(metric.replace("_", " "), fmt(reference.get(metric)), fmt(exported.get(metric)),
                      "n/a" if delta is None else f"{delta:+.1f}", f"{test.lost}/{test.gained}" if test else "",
                      f"{test.p_value:.2g}" if test else "", gate if test else "")  # fmt: skip
    tol = report.tolerance
    all_images = report.quantization == "fp32" or any(f.kind == "agreement" and "on all images" in f.message
                                                      for f in report.failures)  # fmt: skip
    table.add_row("top-1 agreement (all)", "", f"{report.agreement:.1%}", "", "", "",
                  f"≥ {tol.min_agreement:.0%}" if all_images else "")  # fmt: skip
    if report.quantization != "fp32":
        table.add_row(f"agreement ({report.decisive_images} decisive)", "", _pct(report.decisive_agreement), "", "", "",
                      "" if all_images else f"≥ {tol.min_agreement:.0%}")  # fmt: skip
    if report.rank_agreement is not None:
        table.add_row("rank agreement", "", f"{report.rank_agreement:.4f}", "", "", "", "report only")
    table.add_row("max |score diff|", "", f"{report.max_abs_diff:.2e}", "", "", "",
                  "report only" if tol.max_abs_diff is None else f"≤ {tol.max_abs_diff:g}")  # fmt: skip
    table.add_row("verdict", "", "[green]pass[/green]" if report.passed else "[red]FAIL[/red]", "", "", "", "")
    console.print(table)
    console.print(f"ran on {report.engine}, {report.provider or '-'}, {report.device}. lost/gained: images the float "
                  "model got right and the export wrong / the other way round; p: how likely that many losses are "
                  "by chance (exact paired test)", soft_wrap=True)  # fmt: skip
    for failure in report.failures:
        console.print(f"[red]failed:[/red] {failure.message}", soft_wrap=True)
    if report.note:
        console.print(report.note, soft_wrap=True)

"""``edgetl benchmark``: every export a device supports, its size, accuracy and speed, in one table.

Exit codes: 0 at least one row was exported, checked and timed (rows with errors are in the
table); 1 every row failed, or --markdown was asked for on a busy machine (without --allow-busy);
2 bad input (run, data, device, options or output paths).
"""

from __future__ import annotations

import json
import sys

import click

from ..console import err_console, verbosity_options
from ..exporters.gate import DEFAULT_MAX_DROP
from . import InputError, check_output_files, table_console


class AllRowsFailed(click.ClickException):
    exit_code = 1


class BusyMachine(click.ClickException):
    exit_code = 1


@click.command("benchmark")
@verbosity_options
@click.argument("run_dir", type=click.Path())
@click.option("--profile", "profile_name", default=None,
              help="Device profile (name or TOML path); default: the profile detected for this host.")
@click.option("--data", type=click.Path(), default=None,
              help="Labelled folder of test images (<label>/ subfolders); default: the run's validation split.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed predictions per row.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed predictions first.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [the profile's].")
@click.option("--formats", multiple=True,
              help="Only these rows: format or format:quant, comma-separated or repeated (e.g. tflite:int8,onnx); "
                   "QAT, a two-epoch fine-tune, only by name: tflite:qat [every post-training quantization].")
@click.option("--max-drop", type=click.FloatRange(0, 100), default=DEFAULT_MAX_DROP, show_default=True,
              help="Flag a row whose decision accuracy or defect recall is more than this many points below the float "
                   "model's, or worse beyond chance (the export gate's paired test).")
@click.option("--tta", is_flag=True, help="Add a row with test-time augmentation (export --tta) for the target.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON on stdout (nothing else there).")
@click.option("--json-file", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the table as JSON to this file.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Write the table as Markdown here (for docs: refused when the machine is busy at the start).")
@click.option("--allow-busy", is_flag=True, help="Write --markdown even from a busy machine (the table says so).")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Folder for the exported models [RUN_DIR/benchmark].")
def benchmark(run_dir, profile_name, data, runs, warmup, threads, formats, max_drop, tta, as_json, json_out, md_out,
              allow_busy, output):
    """Export RUN_DIR in every format and quantization the device supports; compare size, accuracy, speed.

    \b
    QAT fine-tunes the model (two epochs): its row is added with --formats ...,tflite:qat.

    \b
    Each row: exported file size; decision accuracy on the test images through edgetl-runtime
    and its difference from the float Keras model in points (Δ pp); defect recall; top-1
    agreement with the float model; median end-to-end latency on this host. The JSON has every
    metric (defect precision, ROC AUC, class accuracy, p99, throughput). A row that fails shows
    its error; the others still run.

    \b
    Examples:
      edgetl benchmark runs/elpv
      edgetl benchmark runs/elpv --profile raspberry-pi-4 --data data/elpv/test --markdown bench.md
      edgetl benchmark runs/elpv --formats tflite:int8,onnx:int8 --runs 200 --json-file bench.json
    """
    from edgetl_runtime.atomic import write_bytes, write_json

    from ..benchmark import BenchmarkError, benchmark as run_benchmark

    from edgetl_runtime.host import BusyMachineError, busy_warning, machine_state, require_idle

    check_output_files(json_out, md_out)  # before the minutes of exporting and timing
    err = err_console()
    state = machine_state()
    warning = busy_warning(state)
    if warning:
        err.print(warning, markup=False)
    if md_out:
        try:
            require_idle(state, allow_busy, f"write benchmark figures to {md_out}")
        except BusyMachineError as exc:
            raise BusyMachine(str(exc)) from None
    try:
        table = run_benchmark(run_dir, profile=profile_name, data=data, runs=runs, warmup=warmup, threads=threads,
                              formats=formats, output_dir=output, max_drop=max_drop, tta=tta,
                              progress=lambda msg: err.print(f"[dim]{msg}[/dim]"))  # fmt: skip
    except (BenchmarkError, ValueError, OSError) as exc:
        raise InputError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(table.to_dict(), indent=2, default=str))
    else:
        table_console().print(table.to_rich())
    try:
        if json_out:
            write_json(json_out, table.to_dict())
            err.print(f"wrote {json_out}")
        if md_out:
            write_bytes(md_out, table.to_markdown().encode("utf-8"))
            err.print(f"wrote {md_out}")
    except OSError as exc:
        raise InputError(f"cannot write the report: {exc}") from None
    if table.host_profile and table.host_profile != table.profile:
        err.print(f"note: this host looks like {table.host_profile}, not {table.profile}; "
                  f"latencies are this host's, not the device's")  # fmt: skip
    if not any(row.ok for row in table.rows):
        raise AllRowsFailed("every row failed; see the status column " + json.dumps([r.error for r in table.rows])[:500])
    sys.stdout.flush()

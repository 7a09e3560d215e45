"""The ``edgetl-runtime`` command: predict, info and bench on the device, without TensorFlow.

Conventions (shared with ``edgetl``): ``--json`` prints machine-readable output on stdout and
nothing else there; ``--json-file PATH`` writes it to a file; ``-q/--quiet`` keeps notes off
stderr, ``-v/--verbose`` adds detail. Exit codes: 0 success, 1 a check failed (an image could
not be classified, a budget was missed, the host is not the profile's device), 2 bad input.

>>> from click.testing import CliRunner
>>> CliRunner().invoke(main, ["--help"]).exit_code
0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .errors import EdgetlRuntimeError, EngineNotInstalled

from .clitools import (EXIT_CHECK_FAILED, InputError, _expand, _load, _profile, _VERBOSITY, _writable_file,  # noqa: F401
                       device_option, fallback_option, labels_option, note, profile_option, softmax_option,
                       threads_option, verbosity_options)  # fmt: skip (InputError and note: public names of this module)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgetl-runtime")
def main() -> None:  # noqa: D401 - click group
    """Run edgetl models (.tflite, Edge TPU .tflite, .onnx) on this device.

    \b
    Exit codes: 0 success; 1 a check failed (an image could not be classified, a latency
    budget was missed, this host is not the profile's device); 2 bad input.
    """
    _VERBOSITY["level"] = 0  # each invocation starts at normal verbosity (in-process callers, tests)
    from .atomic import exit_cleanly_on_sigterm

    exit_cleanly_on_sigterm()
    if "edgetl_runtime.backends.litert" in sys.modules:
        sys.modules["edgetl_runtime.backends.litert"].keep_native_logs(False)


PREDICTION_COLUMNS = ("image", "verdict", "defect_score", "top_class", "top_probability")


def cell(text: str) -> str:
    r"""Return ``text`` for one cell of a tab-separated row: tabs, newlines and other control characters escaped.

    A label or a file name may contain them; printed as they are, they would forge rows and columns.

    >>> cell("good\tdefect\nforged row")
    'good\\tdefect\\nforged row'
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _row(path: Path, pred: Any) -> str:
    score = "-" if pred.defect_score is None else f"{pred.defect_score:.4f}"
    top = f"{pred.top_probability:.4f}" if pred.score_kind == "probabilities" else "-"  # a logit is no probability
    return "\t".join((cell(str(path)), cell(pred.verdict or "-"), score, cell(pred.top_class), top))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="one JSON object per image on stdout (JSON Lines)")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="defect-score threshold for the verdict [the model's]")
@click.option("--heatmap", "heatmap_dir", type=click.Path(file_okay=False), default=None,
              help="anomaly detectors: write each image with its anomaly heatmap over it to this folder (PNG)")
@click.option("--roi", default=None, metavar="X,Y,W,H",
              help="the part's box in each image (pixels, or fractions of width and height), cropped before the "
                   "resize [the file's, else the whole image]")
@device_option
@profile_option
@threads_option
@labels_option
@softmax_option
@fallback_option
@verbosity_options
def predict(model: str, paths: tuple[str, ...], as_json: bool, threshold: float | None, heatmap_dir: str | None,
            roi: str | None, device: str | None, profile_name: str | None, threads: int | None, labels: str | None,
            softmax: bool, allow_cpu_fallback: bool) -> None:  # fmt: skip
    """Classify images (files or folders); an unreadable image is reported and the rest go on.

    \b
    Columns (tab-separated, JSON uses the same names):
      verdict          defect or good: defect_score >= the threshold (- without good classes)
      defect_score     1 - the summed probability of the good classes
      top_class        the most probable class, with top_probability
    An anomaly detector's JSON also holds its heatmap; --heatmap DIR draws it over each image.
    Exits with status 1 when any image could not be classified.
    """
    from .errors import ImageError

    m = _load(model, device, threads, labels, _profile(profile_name), threshold=threshold, softmax=softmax,
              allow_cpu_fallback=allow_cpu_fallback, roi=roi)  # fmt: skip
    problems: list[str] = []
    images = _expand(paths, problems)
    if not images and not problems:
        raise InputError(f"no images found in {', '.join(paths)} (.png, .jpg, .bmp, .tif, .webp, ...)")
    overlays = _overlay_folder(heatmap_dir, m)
    if not as_json:
        click.echo("\t".join(PREDICTION_COLUMNS))
    for problem in problems:  # what a folder held that could not be read: said, and counted as not classified
        click.echo(f"error: {cell(problem)}", err=True)
    failed, told = len(problems), False
    for index, path in enumerate(images):
        try:
            pred = m.predict(path)
            if overlays is not None:
                from .heatmap import overlay_name, write_overlay

                write_overlay(overlays / overlay_name(path, index), m.pixels(path), pred.heatmap)
        except (ImageError, OSError, RuntimeError, EdgetlRuntimeError, ValueError) as exc:  # one bad item: go on
            failed += 1
            reason = exc.reason if isinstance(exc, ImageError) else (str(exc) or exc.__class__.__name__)
            if as_json:
                click.echo(json.dumps({"image": str(path), "error": reason}))
            click.echo(f"error: {cell(str(path))}: {cell(reason)}", err=True)
            continue
        if m.output_problem is not None and not told:
            told = True
            note(m.output_problem)
        if as_json:
            click.echo(json.dumps({"image": str(path), **pred.to_dict()}))
        else:
            click.echo(_row(path, pred))
    if failed:
        click.echo(f"{failed} image(s) could not be classified", err=True)
        sys.exit(EXIT_CHECK_FAILED)


def _overlay_folder(heatmap_dir: str | None, model: Any) -> Path | None:
    """Return the ``--heatmap`` folder, created; a usage error for a model without a heatmap."""
    if heatmap_dir is None:
        return None
    if not model.has_heatmap:
        raise InputError(f"--heatmap: {model.info.path} is a {model.info.spec.task} model and has no anomaly heatmap; "
                         "it is for models exported from `edgetl train --task anomaly`")  # fmt: skip
    folder = Path(heatmap_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--heatmap {folder}: cannot create the folder ({exc.strerror or exc})") from None
    return folder


def summarize_labels(labels: list[str], limit: int = 8) -> str:
    """Return ``labels`` shown in full when short, else the count with the first and last few.

    >>> summarize_labels([str(i) for i in range(1001)])
    '1001 labels: 0, 1, 2, 3, 4, 5, ..., 999, 1000'
    """
    if len(labels) <= limit:
        return ", ".join(labels)
    return f"{len(labels)} labels: {', '.join(labels[: limit - 2])}, ..., {', '.join(labels[-2:])}"


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the details as JSON on stdout (every label)")
@device_option
@profile_option
@labels_option
@fallback_option
@verbosity_options
def info(model: str, as_json: bool, device: str | None, profile_name: str | None, labels: str | None,
         allow_cpu_fallback: bool) -> None:  # fmt: skip
    """Show a model's contract (task, labels, input, decision), export, tensors, engine and device."""
    details = _load(model, device, None, labels, _profile(profile_name),
                    allow_cpu_fallback=allow_cpu_fallback).info.to_dict()  # fmt: skip
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    spec, export = details.pop("spec"), details.pop("export")
    for key in ("path", "format", "engine", "provider", "device", "threads", "embedded_metadata"):
        _field(key, details[key])
    for key in ("input", "output"):
        t = details[key]
        quant = " scale={:.6g} zero_point={}".format(*t["quantization"]) if t["quantization"] else ""
        _field(f"{key} tensor", f"{t['name']} {t['shape']} {t['dtype']}{quant}")
    for key, value in [*spec.items(), *((f"export.{k}", v) for k, v in (export or {}).items())]:
        if key in ("labels", "good_labels") and isinstance(value, list):
            value = summarize_labels([str(v) for v in value]) or "(none)"
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, [], {}, ""))
        if value not in (None, {}, [], ""):
            _field(key, value)
    for text in details.get("notes", []):
        _field("note", text)


def _field(key: str, value: Any, width: int = 100) -> None:
    """Print ``key value``, wrapped to ``width`` columns under the value."""
    import textwrap

    click.echo(textwrap.fill(str(value), width=width, initial_indent=f"{key:18} ", subsequent_indent=" " * 19,
                             break_on_hyphens=False))  # fmt: skip


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@profile_option
@device_option
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@threads_option
@click.option("--concurrency", type=click.IntRange(1, 256), default=1, show_default=True,
              help="threads for the throughput run (1 to 256)")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="folder of <label>/ subfolders: also report the decision metrics on these images")
@click.option("--force", is_flag=True, help="compare with the --profile's budget even on a host that is not that device")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON on stdout (and nothing else there)")
@click.option("--json-file", type=click.Path(dir_okay=False), default=None, help="write the report as JSON to this file")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="write a latency histogram PNG here (needs matplotlib)")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), default=None, help="image to time [synthetic 640x480 JPEG]")
@click.option("--pipeline", "pipeline_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="folder of images: time the station's pipeline against a predict loop and the engine alone "
                   "(--runs parts)")
@labels_option
@fallback_option
@verbosity_options
def bench(
    model: str,
    profile_name: str | None,
    device: str | None,
    runs: int,
    warmup: int,
    threads: int | None,
    concurrency: int,
    data: str | None,
    force: bool,
    as_json: bool,
    json_file: str | None,
    plot: str | None,
    image: str | None,
    pipeline_dir: str | None,
    labels: str | None,
    allow_cpu_fallback: bool,
) -> None:
    """Time a model: load, first inference, per-stage latency percentiles, throughput, memory.

    With --pipeline DIR: sequential versus pipelined throughput over DIR's images, per-stage
    p50/p99 and the pipeline's efficiency (end-to-end ÷ inference-only throughput).

    With --profile, the profile's device, threads and engine options apply (--device/--threads
    override them) and the report gets a verdict against the profile's budget: PASS, FAIL, or
    NOT THIS DEVICE when this host is not the profile's device (unless --force). The report
    records the machine (CPU model, cores, load average, date) and warns when it is busy.
    Exits with status 1 unless the verdict is PASS.
    """
    from . import bench as b
    from .host import busy_warning, emulation_warning, machine_state

    for out in (json_file, plot):  # fail before minutes of timing, not after
        _writable_file(out)
    if plot:
        try:
            b.require_matplotlib()
        except EngineNotInstalled as exc:
            raise InputError(str(exc)) from None
    profile = _profile(profile_name)
    if force and profile is None:
        raise InputError("--force compares with a profile's budget: pass --profile NAME too")
    if profile is not None and not force:
        matches, why = b.host_matches(profile)
        if not matches:  # before loading: the profile's accelerator may not even exist here
            result = b.not_this_device(profile, why)
            if as_json:
                click.echo(json.dumps({"model": model, "verdict": result.to_dict(profile.name)}, indent=2))
            else:
                click.echo("\n".join([f"{profile.name}: {result.status}", *result.reasons]))
            if json_file:
                from .atomic import write_json

                write_json(json_file, {"model": model, "verdict": result.to_dict(profile.name)})
            sys.exit(EXIT_CHECK_FAILED)
    state = machine_state()
    for warning in (busy_warning(state), emulation_warning(state)):
        if warning:
            click.echo(warning, err=True)
    if pipeline_dir is not None:
        return _bench_pipeline(model, pipeline_dir, runs, device, threads, labels, profile, as_json, json_file)
    try:
        report = b.run_benchmark(model, runs, warmup, threads, concurrency, device, image, labels, profile,
                                 data=data, allow_cpu_fallback=allow_cpu_fallback)  # fmt: skip
    except EdgetlRuntimeError as exc:
        raise InputError(str(exc)) from None
    result = b.verdict(report, profile, force=force) if profile is not None else None
    payload = report.to_dict()
    if result is not None:
        payload["verdict"] = result.to_dict(profile.name)
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        table = b.format_report(report, result, profile.name if profile is not None else None)
        try:
            from rich.console import Console

            Console().print(table)
        except ImportError:
            click.echo(table)
    try:
        if json_file:
            from .atomic import write_json

            write_json(json_file, payload)
        if plot:
            b.plot_latency(report, plot)
    except EdgetlRuntimeError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"cannot write the report: {exc}") from None
    if result is not None and not result.passed:
        sys.exit(EXIT_CHECK_FAILED)


def _bench_pipeline(model: str, folder: str, runs: int, device: str | None, threads: int | None, labels: str | None,
                    profile: Any, as_json: bool, json_file: str | None) -> None:  # fmt: skip
    from .host import machine_state
    from .line.bench import format_pipeline, pipeline_benchmark

    images = _expand((folder,))
    if not images:
        raise InputError(f"--pipeline {folder}: no images in it")
    m = _load(model, device, threads, labels, profile)
    state = machine_state()
    report = {**pipeline_benchmark(m, images, runs), "machine": state.to_dict(), "model": model}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(format_pipeline(report))
    if json_file:
        from .atomic import write_json

        write_json(json_file, report)
    if report["lost"] or report["duplicates"]:
        sys.exit(EXIT_CHECK_FAILED)


def _classes(values: tuple[str, ...]) -> dict[str, list[Path]]:
    """Return ``{name: image files}`` from ``--class NAME=IMG[,IMG...]`` values (a folder stands for its images)."""
    classes: dict[str, list[Path]] = {}
    for value in values:
        name, sep, images = value.partition("=")
        if not sep or not name.strip() or not images.strip():
            raise click.BadParameter(f"{value!r}: expected NAME=IMG[,IMG...] (images or folders)", param_hint="--class")
        files = _expand(tuple(p for p in images.split(",") if p))
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(f"--class {name}: no such image file(s): {', '.join(missing[:5])}")
        if not files:
            raise InputError(f"--class {name}: no images found in {images}")
        classes.setdefault(name.strip(), []).extend(files)
    return classes


@main.command()
@click.argument("base", type=click.Path(dir_okay=False))
@click.option("--class", "class_values", multiple=True, required=True, metavar="NAME=IMG[,IMG...]",
              help="a class and its images (files or folders, comma-separated); repeat for more classes")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the imprinted model to write (*.imprint)")
@click.option("--good", multiple=True, help="a label that means 'no defect' (repeatable): predictions get a verdict")
@click.option("--scale", type=click.FloatRange(0, 1000, min_open=True), default=None,
              help="factor on the cosine similarities before the softmax [10, or the base's]")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout")
@device_option
@threads_option
@verbosity_options
def imprint(base: str, class_values: tuple[str, ...], output: str, good: tuple[str, ...], scale: float | None,
            as_json: bool, device: str | None, threads: int | None) -> None:  # fmt: skip
    """Teach BASE new classes from a few images each (weight imprinting), on this device.

    \b
    BASE: an `edgetl export --embedding` model (its labels stay, the new classes join them),
    a bare embedding extractor (uint8 in, one vector out), or an imprinted model (its class
    means are updated with the new images, new classes are added). BASE is never modified
    (name an .imprint BASE as the output too to update it in place, atomically).
    \b
      edgetl-runtime imprint model.tflite --class new-crack=a.png,b.png,c.png -o model.imprint
      edgetl-runtime imprint extractor.tflite --class ok=ok/ --class scratch=scratch/ --good ok -o parts.imprint
    """
    from .imprinting import imprint as run_imprint

    classes = _classes(class_values)
    _writable_file(output)
    shown = {"class": None}

    def progress(name: str, done: int, total: int) -> None:
        if _VERBOSITY["level"] >= 0 and (shown["class"] != name or done == total):
            click.echo(f"imprinting {name}: {done}/{total} images", err=True)
            shown["class"] = name

    try:
        result = run_imprint(base, classes, output, good=good, scale=scale, device=device, threads=threads,
                             progress=progress)  # fmt: skip
    except (EdgetlRuntimeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"{exc.filename or base}: {exc.strerror or exc}") from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    counts = ", ".join(f"{k} ({v} image{'s' if v > 1 else ''})" for k, v in result.imprinted.items())
    click.echo(f"wrote {result.path}: labels {', '.join(result.labels)}; imprinted {counts}; "
               f"{result.ms_per_image:.1f} ms per image")  # fmt: skip


def _register_station_commands() -> None:
    from .adopt_cli import adopt
    from .line.cli import history, serve

    main.add_command(serve)
    main.add_command(history)
    main.add_command(adopt)


_register_station_commands()

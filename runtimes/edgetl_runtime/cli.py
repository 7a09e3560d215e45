"""The ``edgetl-runtime`` command: predict, info and bench on the device, without TensorFlow.

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

from .backends.base import DEVICE_GRAMMAR
from .errors import EdgetlRuntimeError


def _load(model: str, device: str | None, threads: int | None, labels: str | None, profile: Any = None) -> Any:
    from .model import load

    try:
        return load(model, device=device, threads=threads, labels=labels, profile=profile)
    except EdgetlRuntimeError as exc:
        raise click.ClickException(str(exc)) from None


def _expand(paths: tuple[str, ...]) -> list[Path]:
    """Return the image files named by ``paths``; a folder stands for the images inside it."""
    from .preprocess import is_image_file

    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f)) if p.is_dir() else [p]
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgetl-runtime")
def main() -> None:
    """Run edgetl models (.tflite, Edge TPU .tflite, .onnx) on this device."""


device_option = click.option(
    "--device", default=None, help=f"device string: {DEVICE_GRAMMAR} [cpu, or the profile's]"
)
profile_option = click.option(
    "--profile", "profile_name", default=None,
    help="device profile (name such as raspberry-pi-4, or a TOML path): its device, threads and engine options apply",
)


def _profile(name: str | None) -> Any:
    if not name:
        return None
    from .profiles import load_profile

    try:
        return load_profile(name)
    except (EdgetlRuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [all, at most 4]")
labels_option = click.option(
    "--labels", type=click.Path(exists=True, dir_okay=False), default=None, help="labels file, for a model without edgetl metadata"
)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="one JSON object per image (JSON Lines)")
@device_option
@profile_option
@threads_option
@labels_option
def predict(model: str, paths: tuple[str, ...], as_json: bool, device: str | None, profile_name: str | None,
            threads: int | None, labels: str | None) -> None:
    """Classify images (files or folders); an unreadable image is reported and the rest go on.

    Exits with status 1 when any image could not be classified.
    """
    from .errors import ImageError

    m = _load(model, device, threads, labels, _profile(profile_name))
    failed = 0
    for path in _expand(paths):
        try:
            pred = m.predict(path)
        except (ImageError, OSError) as exc:
            failed += 1
            reason = exc.reason if isinstance(exc, ImageError) else str(exc)
            if as_json:
                click.echo(json.dumps({"path": str(path), "error": reason}))
            click.echo(f"error: {path}: {reason}", err=True)
            continue
        if as_json:
            click.echo(json.dumps({"path": str(path), **pred.to_dict()}))
        else:
            verdict = "" if pred.is_defect is None else ("DEFECT" if pred.is_defect else "ok")
            click.echo(f"{path}\t{pred.label}\t{pred.score:.3f}\t{verdict}".rstrip())
    if failed:
        click.echo(f"{failed} image(s) could not be classified", err=True)
        sys.exit(1)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the details as JSON")
@device_option
@profile_option
@labels_option
def info(model: str, as_json: bool, device: str | None, profile_name: str | None, labels: str | None) -> None:
    """Show a model's contract (task, labels, input, decision), export, tensors, engine and device."""
    details = _load(model, device, None, labels, _profile(profile_name)).info.to_dict()
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    spec, export = details.pop("spec"), details.pop("export")
    for key in ("path", "format", "engine", "device", "threads", "embedded_metadata"):
        click.echo(f"{key:18} {details[key]}")
    for key in ("input", "output"):
        t = details[key]
        quant = f" quantization(scale, zero_point)={tuple(t['quantization'])}" if t["quantization"] else ""
        click.echo(f"{key + ' tensor':18} {t['name']} {t['shape']} {t['dtype']}{quant}")
    for key, value in [*spec.items(), *((f"export.{k}", v) for k, v in (export or {}).items())]:
        if value not in (None, {}, []):
            click.echo(f"{key:18} {value}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@profile_option
@device_option
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@threads_option
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True, help="threads for the throughput run")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="write the report as JSON here")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="write a latency histogram PNG here (needs matplotlib)")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), default=None, help="image to time [synthetic 640x480 JPEG]")
@labels_option
def bench(
    model: str,
    profile_name: str | None,
    device: str | None,
    runs: int,
    warmup: int,
    threads: int | None,
    concurrency: int,
    json_out: str | None,
    plot: str | None,
    image: str | None,
    labels: str | None,
) -> None:
    """Time a model: load, first inference, per-stage latency percentiles, throughput, memory.

    With --profile, the profile's device, threads and engine options apply (--device/--threads
    override them) and the report gets a PASS/FAIL verdict against the profile's budget.
    Exits with status 2 when a profile was given and its budget is not met.
    """
    from pathlib import Path

    from . import bench as b

    for out in (json_out, plot):  # fail before minutes of timing, not after
        if out and not Path(out).resolve().parent.is_dir():
            raise click.ClickException(f"{out}: folder {Path(out).parent} does not exist; create it first")
    profile = _profile(profile_name)
    try:
        report = b.run_benchmark(model, runs, warmup, threads, concurrency, device, image, labels, profile)
    except EdgetlRuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    result = b.verdict(report, profile) if profile is not None else None
    table = b.format_report(report, result, profile.name if profile is not None else None)
    try:
        from rich.console import Console

        Console().print(table)
    except ImportError:
        click.echo(table)
    if json_out:
        from .atomic import write_json

        data = report.to_dict()
        if result is not None:
            data["verdict"] = {"profile": profile.name, "passed": result.passed, "reasons": list(result.reasons)}
        write_json(json_out, data)
    if plot:
        try:
            b.plot_latency(report, plot)
        except EdgetlRuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    if result is not None and not result.passed:
        sys.exit(2)

"""``edgetl devices list | show NAME | detect``: the device profiles and which one fits this host.

>>> from click.testing import CliRunner
>>> CliRunner().invoke(devices, ["show", "coral-usb", "--json"]).output.count('"edgetpu:usb"') >= 1
True
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgetl_runtime.profiles import (
    DetectionResult,
    DeviceProfile,
    HostInfo,
    ProfileError,
    detect,
    list_profiles,
    load_profile,
)

from ..console import verbosity_options


def profile_to_dict(profile: DeviceProfile) -> dict[str, Any]:
    """Return the profile as plain JSON-ready data (tuples become lists, the path a string)."""
    data = dataclasses.asdict(profile)
    data["path"] = str(profile.path)
    return json.loads(json.dumps(data))


def _console() -> Console:
    # Wide enough that names and budgets are not wrapped when output is piped or captured.
    return Console(width=max(Console().width, 140))


def _load_all() -> list[DeviceProfile]:
    try:
        return list_profiles()
    except ProfileError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def devices() -> None:
    """Device profiles (devices/*.toml): list them, show one, detect this host."""


@devices.command("list")
@verbosity_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """List every device profile with its export target and latency budget."""
    profiles = _load_all()
    if as_json:
        click.echo(json.dumps([profile_to_dict(p) for p in profiles], indent=2))
        return
    table = Table(title="Device profiles")
    for column in ("name", "export", "runtime", "reference", "its p50 ms", "p50 / p99 ms", "memory MB"):
        table.add_column(column)
    for p in profiles:
        table.add_row(
            p.name,
            f"{p.export.format}/{p.export.quantization} {p.export.input_size[0]}x{p.export.input_size[1]}",
            f"{p.runtime.device} x{p.runtime.threads}",
            f"{p.reference.backbone} {p.reference.quantization}",
            _reference_p50(p),
            f"{p.budget.p50_ms:g} / {p.budget.p99_ms:g}",
            f"{p.budget.memory_mb:g}",
        )
    _console().print(table)
    _console().print("its p50: the reference model's end-to-end latency on the device; in brackets its model share (the "
                     "rest is decode and resize) and how that was had; `edgetl devices show NAME` gives the sources",
                     markup=False, highlight=False)  # fmt: skip


def _reference_p50(profile: DeviceProfile) -> str:
    """Return the reference's p50 on the device and how its model share was had ("23 (17 published)"), or "-"."""
    ref = profile.reference
    if ref.device_p50_ms is None:
        return "-"
    return f"{ref.device_p50_ms:g} ({round(ref.device_p50_ms - ref.overhead_ms, 2):g} {ref.basis})"


@devices.command("show")
@verbosity_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def show_cmd(name: str, as_json: bool) -> None:
    """Show everything in one profile; NAME is a profile name or a path to a .toml file."""
    try:
        profile = load_profile(name)
    except ProfileError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(profile_to_dict(profile), indent=2))
        return
    console = _console()
    table = Table(title=f"{profile.name}: {profile.description}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    d = profile.detect
    rules = [f"arch in {', '.join(d.arch)}" if d.arch else "",
             f"device-tree model contains {' | '.join(d.model_contains)}" if d.model_contains else "",
             f"Edge TPU on {d.edgetpu}" if d.edgetpu else "",
             f"Tegra {'present' if d.tegra else 'absent'}" if d.tegra is not None else ""]
    rows = [
        ("file", str(profile.path)),
        ("detect", "; ".join(r for r in rules if r) + f" (priority {d.priority})"),
        ("export", f"{profile.export.format}, {profile.export.quantization}, "
                   f"{profile.export.input_size[0]}x{profile.export.input_size[1]} px"),
        ("runtime", f"device {profile.runtime.device}, threads {profile.runtime.threads}"),
        ("engine options", ", ".join(f"{k}={v}" for k, v in profile.runtime.options.items()) or "-"),
        ("reference model", f"{profile.reference.backbone}, {profile.reference.input_size[0]}x"
                            f"{profile.reference.input_size[1]} px, {profile.reference.quantization}"),
        ("its p50 on the device", _reference_detail(profile)),
        ("budget", f"p50 <= {profile.budget.p50_ms:g} ms, p99 <= {profile.budget.p99_ms:g} ms, "
                   f"memory <= {profile.budget.memory_mb:g} MB"),
        ("budget's source", profile.budget.source or "-"),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))  # sources cite TOML tables ("see [reference]"), not rich markup
    console.print(table)
    if profile.published:
        figures = Table(title="Published figures (approximate, for context)")
        for column in ("model", "device", "ms", "source"):
            figures.add_column(column, overflow="fold")
        for f in profile.published:
            figures.add_row(escape(f.model), escape(f.device), f"{f.latency_ms:g}",
                            escape(f.source + (f"\n{f.note}" if f.note else "")))
        console.print(figures)


def _reference_detail(profile: DeviceProfile) -> str:
    """Return the reference's p50 line of ``devices show``: figure, overhead, basis and source."""
    ref = profile.reference
    if ref.device_p50_ms is None:
        return "- (none: edgetl select cannot estimate latencies for this profile)"
    return (f"{ref.device_p50_ms:g} ms end to end, of which {ref.overhead_ms:g} ms decode/resize/postprocess; "
            f"{str(ref.basis).upper()}: {ref.source}")


def _detection_to_dict(result: DetectionResult) -> dict[str, Any]:
    return {
        "profile": result.profile.name if result.profile else None,
        "reasons": list(result.reasons),
        "candidates": [p.name for p in result.candidates],
        "host": json.loads(json.dumps(dataclasses.asdict(result.host))),
    }


@devices.command("detect")
@verbosity_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("/"),
              show_default=True, help="Read /proc, /sys, /dev and /etc under this folder (for a copied tree).")
@click.option("--arch", default=None, help="Use this CPU architecture instead of this machine's (with --root).")
def detect_cmd(as_json: bool, root: Path, arch: str | None) -> None:
    """Say which device profile matches this host, and why. Exits 1 when none does."""
    host = HostInfo.probe(root, arch=arch)
    try:
        result = detect(host)
    except ProfileError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(_detection_to_dict(result), indent=2))
    else:
        console = _console()
        facts = (f"arch {host.arch}, device-tree model {host.model or '-'}, "
                 f"Edge TPU {', '.join(host.edgetpu) or 'none'}, Tegra {'yes' if host.tegra else 'no'}")
        console.print(f"host: {facts}", markup=False, highlight=False)
        if result.profile:
            console.print(f"profile: [bold]{result.profile.name}[/bold] ({result.profile.description})", highlight=False)
        for reason in result.reasons:
            console.print(f"  - {reason}", markup=False, highlight=False)
        if result.profile:
            console.print(f"next: edgetl-runtime bench MODEL --profile {result.profile.name}", markup=False, highlight=False)
    if result.profile is None:
        raise SystemExit(1)

"""``edgetl select``: which backbone and input size to fine-tune, before fine-tuning any.

Output: progress on stderr; on stdout the ranked table and the recommendation (``--json``: the
whole result as one JSON object). ``OUTPUT/select.json`` and ``OUTPUT/select.png`` are written
either way. Exit codes: 0 ranked; 2 bad input (data, profile, backbones, sizes, output folder).
"""

from __future__ import annotations

import json
import sys

import click

from ..console import err_console, verbosity_options
from . import InputError, table_console


def _csv(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@click.command("select")
@verbosity_options
@click.argument("data", type=click.Path(exists=True))
@click.option("--profile", "profile_name", default=None,
              help="Device profile (name or TOML path) whose latency budget applies; default: this host's.")
@click.option("--backbones", multiple=True,
              help="Only these backbones (comma-separated or repeated); default: every one with offline weights.")
@click.option("--sizes", multiple=True,
              help="Input sizes in px for every backbone (comma-separated or repeated), e.g. 192,224; "
                   "default: native and native-32 (efficientnet_lite0 also +32).")
@click.option("--max-images", type=click.IntRange(min=4), default=1000, show_default=True,
              help="Score a stratified sample of this many images (fewer: faster, noisier).")
@click.option("--random-images", type=click.IntRange(min=0), default=300, show_default=True,
              help="Images of the negative-transfer check against random-init networks (0: no check).")
@click.option("--no-measure", is_flag=True,
              help="Estimate latencies from the profile's reference figure even when this host is the device "
                   "(no export, no timing: faster, rougher).")
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Timed predictions per measured candidate.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for cached features and exported latency references [OUTPUT/cache].")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="runs/select", show_default=True,
              help="Folder for select.json and select.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (nothing else there).")
def select(data, profile_name, backbones, sizes, max_images, random_images, no_measure, runs, cache_dir, output,
           as_json):  # fmt: skip
    """Rank pretrained backbones x input sizes for the images in DATA on a device, without fine-tuning.

    \b
    For each candidate: LogME and leave-one-out k-NN balanced accuracy of its frozen features
    (higher: transfers better), its compute (GMACs) and its p50 latency on the profile's device,
    measured with edgetl-runtime when this host is that device, else ESTIMATED (rough, on the
    slow side) from the profile's reference figure, scaled by compute (MACs). '*' marks the
    Pareto front (no other candidate is both better and faster); 'transfer RISK' means the
    pretrained features are not clearly better than those of a random-init network of the same
    architecture ('weak': better on one of the two scores only). The recommendation is the best
    LogME within the profile's p50 budget. DATA holds one subfolder per class (or a CSV manifest).
    How to read the table: docs/select.md.

    \b
    Examples:
      edgetl select data/elpv/train
      edgetl select data/elpv/train --profile raspberry-pi-4 -o runs/select-pi4
      edgetl select data/parts --backbones efficientnet_lite0 --sizes 160,192,224 --max-images 500
    """
    from edgetl_runtime.profiles import ProfileError

    from ..backbones import UnknownBackbone
    from ..data import DatasetError
    from ..selection import SelectionError, SelectOptions, select as run_select

    try:
        size_list = tuple(int(s) for s in _csv(sizes)) or None
    except ValueError:
        raise InputError(f"--sizes takes whole pixel counts such as 192,224; got {','.join(sizes)}") from None
    try:
        options = SelectOptions(profile=profile_name, backbones=tuple(_csv(backbones)) or None, sizes=size_list,
                                max_images=max_images, random_images=random_images, measure=not no_measure,
                                cache_dir=cache_dir, bench_runs=runs)  # fmt: skip
        result = run_select(data, output, options)
    except (SelectionError, DatasetError, ProfileError, UnknownBackbone) as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:  # an unwritable output or cache folder, an unreadable file
        where = exc.filename or output
        raise InputError(f"{where}: {exc.strerror or exc}; check the path and its permissions (--output, --cache, "
                         "DATA)") from None  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    console = table_console()
    console.print(result.to_rich())
    err = err_console()
    for note in result.notes:
        err.print(f"[yellow]note[/] {note}", markup=True, highlight=False)
    at_risk = [r.name for r in result.rows if r.at_risk]
    if at_risk:
        console.print(f"negative-transfer risk: {', '.join(at_risk)} (their ImageNet features are not clearly better "
                      "than a random network's on this data; see transfer in select.json)")  # fmt: skip
    if result.latency_source in ("estimated", "mixed"):
        console.print(f"estimated from: {result.reference['figure']}", markup=False, highlight=False)
    lead = "recommended" if result.recommended else "no recommendation"
    console.print(f"{lead}: {result.reason}", highlight=False)
    console.print(f"wrote {result.json_path} and {result.plot_path} ({result.seconds:.0f} s)", highlight=False)
    sys.stdout.flush()

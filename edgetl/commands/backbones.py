"""``edgetl backbones``: which pretrained backbones exist and whether their weights are on this machine.

>>> from edgetl.commands.backbones import backbones
>>> sorted(backbones.commands)
['list']
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..console import verbosity_options


def backbone_rows(count_params: bool = True) -> list[dict[str, Any]]:
    """Return one dict per backbone: name, input size, parameter count, offline weights, weights source.

    ``count_params`` builds each backbone (random weights, no download) to count its parameters
    (feature extractor, ``include_top=False``); that loads TensorFlow and takes a few seconds.
    """
    from edgetl.backbones import get_spec, list_backbones, load_backbone, weights_available_offline

    rows = []
    for name in list_backbones():
        spec = get_spec(name)
        params = None
        if count_params:
            params = int(load_backbone(name, weights=None, include_top=False).count_params())
        rows.append(
            {
                "name": name,
                "input_size": list(spec.default_input_size),
                "params": params,
                "imagenet_offline": weights_available_offline(name),
                "normalization": spec.normalization,
                "weights_source": spec.weights_source,
            }
        )
    return rows


@click.group()
def backbones() -> None:
    """Pretrained backbones the trainer can start from."""


@backbones.command("list")
@verbosity_options
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
@click.option("--no-params", is_flag=True, help="Skip counting parameters (does not load TensorFlow).")
def list_cmd(as_json: bool, no_params: bool) -> None:
    """List backbones: input size, parameters, and whether ImageNet weights are available offline.

    \b
    'offline: yes' means `--weights imagenet` works without network access on this machine.
    MobileNet weights live in the Keras cache ($KERAS_HOME/models or ~/.keras/models); copy the
    file named in the error message there, or pass a weights file path, on air-gapped machines.
    """
    rows = backbone_rows(count_params=not no_params)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edgetl backbones")
    table.add_column("backbone", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("ImageNet weights offline")
    table.add_column("weights from")
    for row in rows:
        h, w = row["input_size"]
        params = "-" if row["params"] is None else f"{row['params'] / 1e6:.2f} M"
        offline = "[green]yes[/green]" if row["imagenet_offline"] else "[yellow]no (downloads on first use)[/yellow]"
        table.add_row(row["name"], f"{h}x{w}", params, offline, row["weights_source"].split(" (")[0])
    Console().print(table)

"""``edgetl data``: prepare and check image data sets (ELPV import, inspection).

>>> from click.testing import CliRunner
>>> CliRunner().invoke(data, ["--help"]).exit_code
0
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from ..console import verbosity_options
from ..data import DatasetError

EXIT_DATASET = 2  # a data set problem the user must fix (same as a usage error)


def _dataset_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DatasetError into a one-paragraph message on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DatasetError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(EXIT_DATASET) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Prepare and check image data sets (one folder per class, or a path,label CSV)."""


@data.command("elpv")
@verbosity_options
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", default=0.75, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Fraction of images for OUT/train (stratified by label and cell type).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the train/test split.")
@click.option("--limit", default=None, type=click.IntRange(min=8),
              help="Keep only this many images (stratified), for quick experiments.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_dataset_errors
def elpv_cmd(out: Path, split: float, seed: int, limit: int | None, as_json: bool) -> None:
    """Write the ELPV solar-cell data set to OUT/{train,test}/{good,defect} and OUT/manifest.csv.

    A cell is 'defect' when the experts' defect probability is above 0.5. Needs the
    elpv-dataset package: pip install 'edgetl[datasets]'. Re-running with the same options
    does nothing.
    """
    from ..data.elpv import materialize_elpv

    summary = materialize_elpv(out, split=split, seed=seed, limit=limit, progress=not as_json)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    state = "already complete, nothing to do" if summary["reused"] else "written"
    console.print(f"ELPV in {summary['out']}: {state}", highlight=False, soft_wrap=True)
    table = Table()
    for column in ("split", "good", "defect", "total", "defect share", "mono", "poly"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for part in ("train", "test"):
        c, t = summary["counts"][part], summary["cell_types"][part]
        n = c["good"] + c["defect"]
        share = f"{c['defect'] / n:.1%}" if n else "-"
        table.add_row(part, str(c["good"]), str(c["defect"]), str(n), share, str(t["mono"]), str(t["poly"]))
    console.print(table)
    console.print(f"next: edgetl train {summary['train_dir']}", highlight=False)


@data.command("inspect")
@verbosity_options
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_dataset_errors
def inspect_cmd(dataset: Path, as_json: bool) -> None:
    """Report class counts, image sizes and modes, duplicates and unreadable files of DATASET.

    DATASET is a folder with one subfolder per class, or a CSV manifest with a path,label header.
    Exits with code 1 when some files cannot be read.
    """
    from ..data import inspect_dataset

    report = inspect_dataset(dataset)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if report["unreadable"]:
        raise SystemExit(1)


def _print_report(report: dict[str, Any]) -> None:
    console = Console()
    total = report["total"]
    console.print(f"[bold]{report['path']}[/]", highlight=False, soft_wrap=True)
    classes = Table(title=f"{total} images, {len(report['classes'])} classes")
    classes.add_column("class")
    classes.add_column("images", justify="right")
    classes.add_column("share", justify="right")
    for name, n in report["classes"].items():
        classes.add_row(name, str(n), f"{n / total:.1%}")
    console.print(classes)
    for key, title in (("sizes", "size (w x h)"), ("modes", "mode"), ("formats", "format")):
        table = Table(title=title.split()[0].capitalize() + "s")
        table.add_column(title)
        table.add_column("images", justify="right")
        for value, n in report[key].items():
            table.add_row(value, str(n))
        console.print(table)
    if report["duplicates"]:
        dup = Table(title=f"Duplicate files ({len(report['duplicates'])} groups with identical content)")
        dup.add_column("group", justify="right")
        dup.add_column("files", overflow="fold")
        for i, group in enumerate(report["duplicates"], 1):
            dup.add_row(str(i), "\n".join(group))
        console.print(dup)
    else:
        console.print("No duplicate files.")
    if report["unreadable"]:
        bad = Table(title=f"Unreadable files ({len(report['unreadable'])}): training skips them")
        bad.add_column("file", overflow="fold")
        bad.add_column("reason", overflow="fold")
        for item in report["unreadable"]:
            bad.add_row(item["path"], item["reason"])
        console.print(bad)
    else:
        console.print("All files readable.")
    console.print(f"content hash: {report['content_hash']}", highlight=False)

"""``edgetl-runtime serve`` (the station) and ``edgetl-runtime history`` (what it decided, per hour)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from ..errors import EdgetlRuntimeError


def _input_error(message: str) -> click.ClickException:
    from ..clitools import InputError

    return InputError(message)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--source", "source_spec", required=True, metavar="SRC",
              help="dir:PATH, video:PATH, camera:N, /dev/videoN, rtsp://..., http://..., gst:PIPELINE, or http "
                   "(images POSTed to /api/inspect); see docs/line.md")
@click.option("--sink", "sink_specs", multiple=True, metavar="SINK",
              help="repeatable: jsonl:PATH, mqtt://HOST:PORT/TOPIC, webhook:URL, rejects:DIR, modbus://HOST:PORT/COIL")
@click.option("--history", "history_path", type=click.Path(dir_okay=False), default="edgetl-line.sqlite",
              show_default=True, help="SQLite file of every part (the ledger a restart resumes from)")
@click.option("--trigger", default=None, metavar="stdin|http|gpio:PIN",
              help="one decision per part-present signal, on the next camera frame")
@click.option("--roi", default=None, metavar="X,Y,W,H", help="the part's box in the frame (pixels or fractions) [the file's]")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="defect-score threshold [the model's]")
@click.option("--http", "http_address", default="127.0.0.1:8080", show_default=True, metavar="[HOST:]PORT",
              help="the status API, HTTP source and trigger (another host than this one needs --token or --no-auth)")
@click.option("--no-http", is_flag=True, help="no HTTP listener")
@click.option("--token", default=None, envvar="EDGETL_STATION_TOKEN", help="bearer token every POST must carry [$EDGETL_STATION_TOKEN]")
@click.option("--no-auth", is_flag=True, help="accept POSTs from anyone who can reach --http")
@click.option("--max-body-mb", type=click.FloatRange(min=0.01, max=1024), default=32.0, show_default=True)
@click.option("--device", default=None, help="cpu, edgetpu[:usb|pci], cuda[:N], tensorrt[:N] [cpu, or the profile's]")
@click.option("--profile", "profile_name", default=None, help="device profile: its device, threads and engine options")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="engine threads [all cores, at most 4]")
@click.option("--decode-workers", type=click.IntRange(1, 64), default=None, help="decoding threads [cores - 1]")
@click.option("--queue", "queue_size", type=click.IntRange(1, 4096), default=8, show_default=True,
              help="parts waiting to be decoded (a live source drops the oldest beyond it)")
@click.option("--drift-window", type=click.IntRange(20, 100_000), default=200, show_default=True,
              help="recent parts the drift alarm compares with the reference")
@click.option("--drift-baseline", type=click.IntRange(20, 1_000_000), default=None,
              help="take the first N parts as the drift reference instead of the model file's (a line whose defect "
                   "rate differs from the validation data's)")
def serve(model: str, source_spec: str, sink_specs: tuple[str, ...], history_path: str, trigger: str | None,
          roi: str | None, threshold: float | None, http_address: str, no_http: bool, token: str | None, no_auth: bool,
          max_body_mb: float, device: str | None, profile_name: str | None, threads: int | None,
          decode_workers: int | None, queue_size: int, drift_window: int, drift_baseline: int | None) -> None:  # fmt: skip
    """Run the inspection at the line: parts from SRC, decisions to the history and every --sink.

    \b
    Examples:
      edgetl-runtime serve model.tflite --source dir:/srv/incoming --sink mqtt://broker/plant/line1/st3
      edgetl-runtime serve model.tflite --source camera:0 --trigger gpio:17 --sink modbus://plc:502/8
      edgetl-runtime serve model.tflite --source http --http 0.0.0.0:8080 --token $TOKEN
    Runs until the source ends or SIGTERM/SIGINT, which stop the intake, finish the parts in
    flight, flush every sink and exit 0. Status: GET http://127.0.0.1:8080/api/status.
    """
    from ..clitools import _profile
    from .http import StationServer, parse_address
    from .pipeline import Line
    from .sinks import SinkError
    from .sources import SourceError, open_source
    from .sources.trigger import TriggeredSource

    server = None
    try:
        address = None if no_http else parse_address(http_address)
        source = open_source(source_spec, history_path)
        if trigger:
            source = TriggeredSource(source, trigger)
        line = Line(model, source, sink_specs, history=history_path, decode_workers=decode_workers,
                    queue_size=queue_size, drift_window=drift_window, drift_baseline=drift_baseline, device=device,
                    threads=threads, profile=_profile(profile_name), roi=roi, threshold=threshold)  # fmt: skip
        if address is not None:
            server = StationServer(line, address, token, no_auth, int(max_body_mb * 2**20))
    except (EdgetlRuntimeError, SourceError, SinkError, OSError, TypeError) as exc:
        raise _input_error(str(exc)) from None
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    line.start()
    if server is not None:
        server.start()
    click.echo(f"station: {line.model.info.path} ({line.model.info.engine}, {line.model.info.device}) <- {source.name}"
               f"; history {line.history_path}; sinks: {', '.join(s.name for s in line.sinks) or 'none'}"
               + (f"; page {server.url}/" if server else ""), err=True)  # fmt: skip
    for text in line.model.info.notes:  # what was guessed or fitted at load (a bare model's scaling, labels)
        click.echo(f"note: {text}", err=True)
    drift = line.drift_status()
    if "note" in drift:
        click.echo(f"note: no drift alarm: {drift['note']}", err=True)
    while not stopping.is_set() and not line.wait(0.2):
        pass
    if server is not None and stopping.is_set():
        server.stop()  # no new requests while the parts in flight finish
        server = None
    line.stop()
    if server is not None:
        server.stop()
    for name, rows in line.owed.items():
        click.echo(f"sink {name}: {rows} row(s) not delivered, owed in the history {line.history_path}; sent at the "
                   "next start with the same --history and --sink", err=True)  # fmt: skip
    status = line.status()
    click.echo(f"station stopped: {status['parts']} parts decided, {status['rejects']} rejected, {status['errors']} "
               f"errors, {status['dropped']} dropped; history {line.history_path}", err=True)  # fmt: skip
    if line.error:
        click.echo(f"error: {line.error}", err=True)
        sys.exit(1)


@click.command()
@click.argument("database", type=click.Path(exists=True, dir_okay=False))
@click.option("--hours", type=click.FloatRange(min=0), default=None, help="only the last N hours [all]")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="also write every row as CSV here")
@click.option("--json", "as_json", is_flag=True, help="print the hourly figures as JSON")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
              help="write a PNG: yield and defect rate per hour, the defect-score distribution per day (matplotlib)")
def history(database: str, hours: float | None, csv_out: str | None, as_json: bool, plot_out: str | None) -> None:
    """Yield and defect rate per hour of a station's history (the --history file of serve)."""
    import time

    from .history import History, HistoryError

    since = time.time() - hours * 3600 if hours is not None else None
    if plot_out:
        from ..bench import require_matplotlib

        try:
            require_matplotlib()
        except EdgetlRuntimeError as exc:
            raise _input_error(str(exc)) from None
    try:
        db = History(database, readonly=True)
        try:
            rows, totals = db.hourly(since), db.counts()
            days = db.daily_scores(since) if plot_out else []
            written = db.write_csv(csv_out, since) if csv_out else None
        finally:
            db.close()
    except (HistoryError, OSError) as exc:
        raise _input_error(f"{database}: {exc}") from None
    except Exception as exc:  # sqlite3.DatabaseError from a file that is not a history
        raise _input_error(f"{database}: not a station history ({exc})") from None
    if as_json:
        click.echo(json.dumps({"hours": rows, "totals": totals}, indent=2))
    else:
        click.echo("\t".join(("hour (UTC)", "parts", "rejects", "yield", "defect_rate", "errors", "dropped")))
        for r in rows:
            pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
            click.echo("\t".join((r["hour"], str(r["parts"]), str(r["rejects"]), pct(r["yield"]), pct(r["defect_rate"]),
                                  str(r["errors"]), str(r["dropped"]))))  # fmt: skip
    if written is not None:
        click.echo(f"wrote {written} rows to {csv_out}", err=True)
    if plot_out:
        plot_history(rows, days, plot_out, title=Path(database).name)
        click.echo(f"wrote {plot_out}", err=True)


def plot_history(hours: list[dict], days: list[dict], out: str | Path, title: str = "") -> Path:
    """Write the history's two charts as one PNG: yield and defect rate per hour; the score distribution per day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..atomic import atomic_path

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7))
    if hours:
        x = np.arange(len(hours))
        top.bar(x, [100 * (h["yield"] or 0) for h in hours], color="#1b7f3b", label="yield %")
        top.plot(x, [100 * (h["defect_rate"] or 0) for h in hours], "o-", color="#c62828", label="defect rate %")
        step = max(1, len(hours) // 12)
        top.set_xticks(x[::step], [h["hour"][5:] for h in hours][::step], rotation=30, ha="right", fontsize=8)
    top.set_ylim(0, 100)
    top.set_ylabel("% of decided parts")
    top.set_title(f"{title}: yield and defect rate per hour (UTC)", fontsize=10)
    top.legend(fontsize=8, loc="lower left")
    if days:
        counts = np.array([d["counts"] for d in days], float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = bottom.imshow(shares.T, origin="lower", aspect="auto", cmap="Blues", extent=(-0.5, len(days) - 0.5, 0, 1))
        fig.colorbar(image, ax=bottom, label="share of the day's parts")
        bottom.set_xticks(range(len(days)), [d["day"] for d in days], rotation=30, ha="right", fontsize=8)
    bottom.set_ylabel("defect score")
    bottom.set_title("defect-score distribution per day", fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(out)

"""Benchmark a model on this host: load time, first inference, per-stage latency, throughput, memory.

Latency is measured per image, end to end (decode + resize + normalize, inference, scores), and per
stage. A device profile's budget (``p50_ms``, ``p99_ms``, ``memory_mb``) turns a report into a
PASS/FAIL :class:`Verdict` - on the profile's own device only: on a host the profile does not
detect, the verdict is "not this device" unless the caller forces it (and then it says so).
Every report records the machine state (CPU model, cores, load average, date) beside its figures,
and, with labelled images, the decision metrics of :mod:`edgetl_runtime.decision`.

>>> stats = StageStats.of([1.0, 2.0, 3.0, 4.0])
>>> (stats.p50, stats.min, stats.max)
(2.5, 1.0, 4.0)
"""

from __future__ import annotations

import io
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

STAGES = ("preprocess", "inference", "postprocess", "total")
BENCH_IMAGE_SIZE = (480, 640)  # (height, width) of the synthetic camera frame used by default


@dataclass(frozen=True)
class StageStats:
    """Latency statistics of one stage, in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> StageStats:
        """Return the statistics of ``samples_ms`` (at least one sample)."""
        x = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(x.mean()), float(x.std()), float(x.min()), float(x.max()))


@dataclass(frozen=True)
class BenchReport:
    """Everything measured by :func:`run_benchmark`; ``to_dict()`` is the JSON written by the CLI."""

    model: str
    engine: str
    device: str
    threads: int | None
    runs: int
    warmup: int
    concurrency: int
    image: str
    load_ms: float  # edgetl_runtime.load(), which includes one warm-up inference on a blank input
    first_inference_ms: float  # the first predict() of the image, decode included
    stages: dict[str, StageStats]
    throughput_ips: float  # images per second, one stream
    concurrent_throughput_ips: float  # images per second with `concurrency` threads
    peak_rss_mb: float  # peak resident memory of the whole process
    rss_mb: float  # resident memory after the runs
    host: dict[str, Any] = field(default_factory=dict)  # machine state at the start (see host.py)
    latencies_ms: tuple[float, ...] = ()  # end-to-end latency of every timed run
    provider: str = ""  # the kernels that ran (xnnpack, an ONNX Runtime provider, the Edge TPU delegate)
    metrics: dict[str, Any] | None = None  # decision metrics on labelled images (--data), else None
    host_end: dict[str, Any] = field(default_factory=dict)  # machine state at the end
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stages"] = {name: asdict(s) for name, s in self.stages.items()}
        out["latencies_ms"] = list(self.latencies_ms)
        out["notes"] = list(self.notes)
        return out


class Verdict(NamedTuple):
    """A report against a device profile: ``status`` PASS, FAIL or NOT THIS DEVICE; one reason per check.

    ``forced``: the host does not match the profile and the budget was checked anyway.
    """

    passed: bool
    reasons: tuple[str, ...]
    status: str = "PASS"
    forced: bool = False

    def to_dict(self, profile: str) -> dict[str, Any]:
        return {"profile": profile, "status": self.status, "passed": self.passed, "forced": self.forced,
                "reasons": list(self.reasons)}  # fmt: skip


NOT_THIS_DEVICE = "NOT THIS DEVICE"


def host_matches(profile: Any, host: Any = None) -> tuple[bool, tuple[str, ...]]:
    """Return ``(this host is the profile's device, the detection reasons)``."""
    from .profiles import HostInfo

    return profile.detect.check(host if host is not None else HostInfo.probe())


def synthetic_image(size: tuple[int, int] = BENCH_IMAGE_SIZE, seed: int = 0) -> bytes:
    """Return a JPEG camera-like frame (bytes) so that ``preprocess`` includes a real decode."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    base = np.linspace(60, 200, w)[None, :, None] + rng.normal(0, 12, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def memory_mb() -> tuple[float, float]:
    """Return ``(peak, current)`` resident memory of this process in MB.

    Linux: ``VmHWM``/``VmRSS`` from /proc (``ru_maxrss`` survives exec, so a child started by a big
    parent would report the parent's peak). Elsewhere: ``getrusage`` for both.
    """
    try:
        with open("/proc/self/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024
    except (OSError, KeyError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = peak / 1024**2 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
        return peak_mb, peak_mb


def run_benchmark(
    model_path: str | Path,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    concurrency: int = 1,
    device: str | None = None,
    image: str | Path | bytes | None = None,
    labels: str | Path | Sequence[str] | None = None,
    profile: Any = None,
    engine_options: dict[str, Any] | None = None,
    data: str | Path | None = None,
    allow_cpu_fallback: bool = False,
) -> BenchReport:
    """Return a :class:`BenchReport` for ``model_path`` on ``device`` (a device string, default ``cpu``).

    ``profile``: a device profile whose runtime settings (device, threads, engine options) apply
    unless ``device``/``threads`` are given; ``engine_options`` as for :func:`edgetl_runtime.load`. ``image`` defaults to a synthetic 640x480 JPEG;
    ``runs`` timed predictions follow ``warmup`` untimed ones; with ``concurrency`` > 1 another
    ``runs`` predictions are spread over that many threads to measure throughput. ``data``: a
    folder of ``<label>/`` subfolders of images; their decision metrics go into the report.
    A bare model needs no ``labels`` (classes are then numbered).
    """
    from .host import machine_state
    from .model import load

    if runs < 1 or warmup < 0 or concurrency < 1:
        raise ValueError("runs and concurrency must be >= 1 and warmup >= 0")
    state = machine_state()
    source: Any = synthetic_image() if image is None else (image if isinstance(image, bytes) else Path(image))
    t0 = time.perf_counter()
    model = load(model_path, device=device, threads=threads, labels=labels, profile=profile,
                 engine_options=engine_options, allow_cpu_fallback=allow_cpu_fallback)
    load_ms = (time.perf_counter() - t0) * 1e3
    labelled = labelled_files(model, data) if data is not None else None  # bad input fails before the timing
    t0 = time.perf_counter()
    model.predict(source)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        model.predict(source)

    samples: dict[str, list[float]] = {name: [] for name in STAGES}
    t0 = time.perf_counter()
    for _ in range(runs):
        s = time.perf_counter()
        timings = model.predict(source).timings
        total = (time.perf_counter() - s) * 1e3
        for name in STAGES[:-1]:
            samples[name].append(timings[name])
        samples["total"].append(total)
    single_ips = runs / (time.perf_counter() - t0)

    concurrent_ips = single_ips
    if concurrency > 1:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda _: model.predict(source), range(concurrency)))  # each thread warm
            t0 = time.perf_counter()
            list(pool.map(lambda _: model.predict(source), range(runs)))
            concurrent_ips = runs / (time.perf_counter() - t0)

    peak, current = memory_mb()
    # After the timing and the memory reading: the metrics' batches must not warm the model up
    # before "first inference" nor raise the peak memory checked against the budget.
    metrics = labelled_metrics(model, data, files=labelled) if data is not None else None
    info = model.info
    return BenchReport(
        model=str(model_path),
        engine=info.engine,
        device=info.device,
        threads=info.threads,
        runs=runs,
        warmup=warmup,
        concurrency=concurrency,
        image="synthetic 640x480 JPEG" if image is None else ("<bytes>" if isinstance(image, bytes) else str(image)),
        load_ms=load_ms,
        first_inference_ms=first_ms,
        stages={name: StageStats.of(values) for name, values in samples.items()},
        throughput_ips=single_ips,
        concurrent_throughput_ips=concurrent_ips,
        peak_rss_mb=peak,
        rss_mb=current,
        host=state.to_dict(),
        latencies_ms=tuple(samples["total"]),
        provider=info.provider,
        metrics=metrics,
        host_end=machine_state().to_dict(),
        notes=info.notes,
    )


def labelled_files(model: Any, folder: str | Path) -> list[tuple[Path, int]]:
    """Return ``(image, label index)`` for the ``<label>/`` subfolders of ``folder``; an error when unusable."""
    from .errors import ImageError
    from .preprocess import is_image_file

    folder = Path(folder)
    labels = model.labels
    classes = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise ImageError(str(folder), "expected a folder of <label>/ subfolders of images for --data")
    unknown = [c.name for c in classes if c.name not in labels]
    if unknown:
        raise ImageError(str(folder), f"classes {unknown} are not among the model's labels {list(labels)[:20]}")
    files = [(f, labels.index(c.name)) for c in classes for f in sorted(c.rglob("*")) if f.is_file() and is_image_file(f)]
    if not files:
        raise ImageError(str(folder), "no images found in its <label>/ subfolders")
    return files


def labelled_metrics(model: Any, folder: str | Path, batch_size: int = 32,
                     files: list[tuple[Path, int]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Return the decision metrics of ``model`` on ``folder`` (``<label>/`` subfolders of images)."""
    from .decision import decision_metrics

    files = files if files is not None else labelled_files(model, folder)
    probs = []
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        probs.append(model.scores(np.stack([model.pixels(f) for f, _ in chunk])))
    spec = model.info.spec
    y = np.array([label for _, label in files])
    out = decision_metrics(np.concatenate(probs), y, spec.labels, spec.good_labels, spec.threshold)
    out["data"] = str(folder)
    return out


def not_this_device(profile: Any, why: tuple[str, ...]) -> Verdict:
    """Return the NOT THIS DEVICE verdict for ``profile`` with the detection reasons ``why``."""
    return Verdict(False, (f"this host is not a {profile.name}: " + "; ".join(why),
                           "latencies measured here say nothing about that device's budget; run on the device, "
                           "or pass --force to compare anyway"), NOT_THIS_DEVICE)  # fmt: skip


def verdict(report: BenchReport, profile: Any, force: bool = False, host: Any = None) -> Verdict:
    """Return the :class:`Verdict` of ``report`` against ``profile.budget`` (p50_ms, p99_ms, memory_mb).

    On a host that the profile does not detect (``host``: a :class:`~edgetl_runtime.profiles.HostInfo`,
    default this one) the status is NOT THIS DEVICE (not passed) unless ``force``; a forced
    verdict says so in its reasons. A budget field that is missing or None is not checked.
    """
    matches, why = host_matches(profile, host)
    if not matches and not force:
        return not_this_device(profile, why)
    prefix = (f"forced: this host is not a {profile.name} ({'; '.join(why)}); the budget is compared anyway",) if not matches else ()
    budget = profile.budget
    total = report.stages["total"]
    checks = [
        ("p50 latency", total.p50, getattr(budget, "p50_ms", None), "ms"),
        ("p99 latency", total.p99, getattr(budget, "p99_ms", None), "ms"),
        ("peak memory", report.peak_rss_mb, getattr(budget, "memory_mb", None), "MB"),
    ]
    reasons, passed = [], True
    for what, value, limit, unit in checks:
        if limit is None:
            continue
        ok = value <= float(limit)
        passed &= ok
        reasons.append(
            f"{'PASS' if ok else 'FAIL'} {what} {value:.1f} {unit} {'<=' if ok else '>'} budget {float(limit):g} {unit}"
        )
    return Verdict(bool(passed), (*prefix, *tuple(reasons)), "PASS" if passed else "FAIL", not matches)


def _machine_line(state: dict[str, Any], when: str) -> str:
    load = state.get("load") or ()
    shown = " ".join(f"{v:.2f}" for v in load) if load else "n/a"
    return (f"machine {when}: {state.get('cpu_model', '?')}, {state.get('cores', '?')} cores, load {shown}"
            f"{' (BUSY)' if state.get('busy') else ''}, {state.get('date', '?')}")  # fmt: skip


def format_report(report: BenchReport, result: Verdict | None = None, profile_name: str | None = None) -> Any:
    """Return a rich renderable of ``report``: the stage table, then one line per fact (plain text without rich)."""
    rows = [
        (name, *(f"{getattr(s, k):.2f}" for k in ("p50", "p90", "p99", "mean", "std", "min", "max")))
        for name, s in report.stages.items()
    ]
    header = ("stage (ms)", "p50", "p90", "p99", "mean", "std", "min", "max")
    title = f"{Path(report.model).name} on {report.device} ({report.engine}, {report.provider}, {report.threads} threads)"
    lines = [
        f"load {report.load_ms:.1f} ms (with one warm-up inference on a blank input), first prediction "
        f"{report.first_inference_ms:.1f} ms, "
        f"{report.runs} runs after {report.warmup} warm-up",
        f"throughput {report.throughput_ips:.1f} img/s (1 stream), "
        f"{report.concurrent_throughput_ips:.1f} img/s ({report.concurrency} threads)",
        f"memory: peak {report.peak_rss_mb:.0f} MB, now {report.rss_mb:.0f} MB",
        _machine_line(report.host, "at start"),
        _machine_line(report.host_end, "at end"),
    ]
    if report.metrics is not None:
        m = report.metrics
        shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("decision_accuracy", "defect_recall", "defect_precision",
                                                       "roc_auc", "class_accuracy") if m.get(k) is not None)
        lines.append(f"on {m['n']} labelled images (threshold {m['threshold']:g}): {shown}")
    lines += [f"note: {n}" for n in report.notes]
    if result is not None:
        lines += [f"{profile_name or 'profile'}: {result.status}{' (forced)' if result.forced else ''}", *result.reasons]
    try:
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        table = [title] + ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
        return "\n".join(table + lines)
    from rich.console import Group
    from rich.markup import escape
    from rich.text import Text

    table = Table(title=escape(title), title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return Group(table, Text("\n".join(lines)))


def report_text(report: BenchReport, result: Verdict | None = None, profile_name: str | None = None) -> str:
    """Return :func:`format_report` as plain text (for logs and assertion messages)."""
    rendered = format_report(report, result, profile_name)
    if isinstance(rendered, str):
        return rendered
    import io

    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=100, color_system=None).print(rendered)
    return buffer.getvalue()


def require_matplotlib() -> None:
    """Raise :class:`~edgetl_runtime.errors.EngineNotInstalled` unless matplotlib can be imported (for --plot).

    Called before the timing starts, so a missing library is said at once, not after minutes of runs.
    """
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        from .errors import EngineNotInstalled

        raise EngineNotInstalled("--plot needs matplotlib, which is not installed: pip install "
                                 "'edgetl-runtime[bench]' (or pip install matplotlib)")


def plot_latency(report: BenchReport, out: str | Path) -> Path:
    """Write a histogram of end-to-end latencies to ``out`` (PNG, atomically) and return its path."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .atomic import atomic_path

    total = report.stages["total"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(report.latencies_ms, bins=min(50, max(10, report.runs // 5)), color="#4477aa")
    for name, value, style in (("p50", total.p50, "-"), ("p99", total.p99, "--")):
        ax.axvline(value, color="black", linestyle=style, label=f"{name} {value:.2f} ms")
    ax.set_xlabel("end-to-end latency per image (ms)")
    ax.set_ylabel("runs")
    ax.set_title(f"{Path(report.model).name} on {report.device} ({report.runs} runs)")
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out

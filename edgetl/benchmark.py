"""Benchmark a run on this host: export every format x quantization a device supports, check, time.

For each candidate of the device profile (:func:`candidates`) the run is exported, its decision
metrics (:func:`edgetl_runtime.decision.decision_metrics`, the same as ``edgetl eval`` and the
export report) are measured through ``edgetl_runtime`` on labelled test images next to the float
Keras model's on the same pixels (:func:`edgetl.exporters.validate.compare`), and it is timed with
:func:`edgetl_runtime.bench.run_benchmark` on the profile's runtime device. A candidate that fails
to export, validate or run becomes a row with its error; it never aborts the table (as in
Ultralytics' ``yolo benchmark``).

>>> [f"{c.format}:{c.quantization}" for c in candidates(load_profile("coral-usb"))]
['edgetpu:int8', 'tflite:int8']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgetl_runtime.atomic import check_writable
from edgetl_runtime.profiles import DeviceProfile, detect, load_profile

from .exporters.gate import DEFAULT_MAX_DROP
from .exporters.registry import SUPPORTED

__all__ = ["Candidate", "BenchmarkRow", "BenchmarkTable", "BenchmarkError", "candidates", "benchmark"]


class BenchmarkError(ValueError):
    """The benchmark cannot start (no run, no test images, unknown device, nothing to benchmark)."""


@dataclass(frozen=True)
class Candidate:
    """One export to benchmark: format, quantization, the runtime device string, CPU threads, engine options."""

    format: str
    quantization: str
    device: str
    threads: int
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    tta: bool = False  # scores averaged over four flips inside the graph (export --tta)


def candidates(profile: DeviceProfile, threads: int | None = None) -> list[Candidate]:
    """Return the exports worth benchmarking for ``profile``; the profile's own target is noted.

    litert profiles: every TFLite quantization (x86-64 CPU profiles add ONNX rows, to compare the
    two engines); edgetpu: Edge TPU int8 plus the same int8 model on the CPU as fallback;
    onnxruntime: ONNX fp32/fp16/int8. ``threads`` overrides the profile's thread count.
    """
    rt, target = profile.runtime, profile.export
    n = threads or rt.threads
    native = [Candidate(target.format, q, rt.device, n, options=rt.options) for q in SUPPORTED[target.format]]
    if target.format == "edgetpu":
        native = [Candidate("edgetpu", "int8", rt.device, n, options=rt.options),
                  Candidate("tflite", "int8", "cpu", n, "CPU fallback")]
    elif target.format == "tflite" and any(a.lower() in ("x86_64", "amd64") for a in profile.detect.arch):
        native += [Candidate("onnx", q, "cpu", n) for q in SUPPORTED["onnx"]]
    is_target = lambda c: (c.format, c.quantization) == (target.format, target.quantization)  # noqa: E731
    return [replace(c, note=c.note or "profile target") if is_target(c) else c for c in native]


def _named(c: Candidate, wanted: str) -> bool:
    """True when ``wanted`` (``tflite`` or ``tflite:int8``) names ``c``; QAT only by its full name (it trains)."""
    return wanted == f"{c.format}:{c.quantization}" or (wanted == c.format and c.quantization != "qat")


def select(cands: Sequence[Candidate], formats: Sequence[str] | None) -> list[Candidate]:
    """Return the candidates named by ``formats`` (``tflite``, ``onnx:int8``, ...); all but QAT when empty.

    QAT is a fine-tune (two epochs on the training images, minutes on a CPU for a real data set), not
    a conversion: it is benchmarked when asked for by name, ``tflite:qat``.
    """
    if not formats:
        return [c for c in cands if c.quantization != "qat"]
    wanted = [w.strip().lower() for item in formats for w in item.split(",") if w.strip()]
    picked = [c for c in cands if any(_named(c, w) for w in wanted)]
    offered = ", ".join(f"{c.format}:{c.quantization}" for c in cands)
    unknown = [w for w in wanted if not any(w in (c.format, f"{c.format}:{c.quantization}") for c in cands)]
    if unknown:
        raise BenchmarkError(f"--formats {','.join(unknown)}: not offered for this device; choose among {offered}")
    return picked


@dataclass(frozen=True)
class BenchmarkRow:
    """One line of the table; measurements are None where the row failed (``error`` says why)."""

    format: str
    quantization: str
    device: str
    path: str | None = None
    size_bytes: int | None = None
    metrics: dict[str, Any] | None = None  # decision metrics of the export on the test images
    accuracy_delta: float | None = None  # decision accuracy - the float model's, in points, same images
    agreement: float | None = None  # top-1 agreement with the float model
    validation_passed: bool | None = None
    validation_failures: tuple[str, ...] = ()
    engine: str | None = None
    provider: str | None = None
    p50_ms: float | None = None  # end to end: decode + resize of the frame, inference, postprocess
    p99_ms: float | None = None
    inference_p50_ms: float | None = None  # the engine's invoke alone
    fps: float | None = None
    error: str | None = None
    failed_at: str | None = None  # export | accuracy | benchmark
    note: str = ""
    tta: bool = False  # four-flip test-time augmentation inside the exported graph

    @property
    def size_mb(self) -> float | None:
        return None if self.size_bytes is None else self.size_bytes / 1e6

    @property
    def decision_accuracy(self) -> float | None:
        return (self.metrics or {}).get("decision_accuracy")

    @property
    def defect_recall(self) -> float | None:
        return (self.metrics or {}).get("defect_recall")

    @property
    def roc_auc(self) -> float | None:
        return (self.metrics or {}).get("roc_auc")

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["validation_failures"] = list(self.validation_failures)
        out["size_mb"] = self.size_mb
        return out


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


@dataclass(frozen=True)
class BenchmarkTable:
    """Every row of a benchmark, with the float model's accuracy and where it ran."""

    run_dir: str
    profile: str
    host_profile: str | None  # what detection says this host is
    data: str
    n_images: int
    float_metrics: dict[str, Any] | None  # decision metrics of the float Keras model, same images
    runs: int
    warmup: int
    rows: tuple[BenchmarkRow, ...]
    host: dict[str, Any] = field(default_factory=dict)  # machine state at the start (edgetl_runtime.host)
    anomaly: bool = False  # the run is an anomaly detector

    HEADER = ("format", "quant", "device", "MB", "accuracy", "Δ pp", "recall", "AUC", "agree", "p50 ms", "status")

    def cells(self, row: BenchmarkRow) -> tuple[str, ...]:
        """Return the display strings of ``row`` in :attr:`HEADER` order."""
        if row.error:
            status = f"error ({row.failed_at}): {row.error}"
        elif row.validation_passed is False:
            status = "accuracy drift: " + "; ".join(row.validation_failures)
        else:
            status = "ok"
        if row.note:
            status = f"{status} [{row.note}]"
        return (row.format, row.quantization, row.device, _fmt(row.size_mb, ".3g"), _fmt(row.decision_accuracy, ".1%"),
                _fmt(row.accuracy_delta, "+.1f"), _fmt(row.defect_recall, ".1%"), _fmt(row.roc_auc, ".3f"),
                _fmt(row.agreement, ".1%"),
                _fmt(row.p50_ms, ".2f"), status)  # fmt: skip

    @property
    def title(self) -> str:
        m = self.float_metrics or {}
        acc, recall = _fmt(m.get("decision_accuracy"), ".1%"), _fmt(m.get("defect_recall"), ".1%")
        auc = _fmt(m.get("roc_auc"), ".3f")
        return (f"edgetl benchmark of {self.run_dir} for {self.profile} (host: {self.host_profile or 'unknown'}); "
                f"float model: decision accuracy {acc}, defect recall {recall}, ROC AUC {auc} on {self.n_images} images of "
                f"{self.data} (threshold {m.get('threshold', float('nan')):.3g}); {self.runs} runs after "
                f"{self.warmup} warm-up, synthetic 640x480 JPEG, end to end")  # fmt: skip

    @property
    def machine(self) -> str:
        """One line: the machine state the figures were taken in."""
        h = self.host
        load = " ".join(f"{v:.2f}" for v in (h.get("load") or ())) or "n/a"
        return (f"{h.get('date', '?')}, {h.get('cpu_model', '?')}, {h.get('cores', '?')} cores, load {load}"
                f"{' (BUSY: figures unreliable)' if h.get('busy') else ''}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows"] = [row.to_dict() for row in self.rows]
        return out

    def to_markdown(self) -> str:
        """Return the table as GitHub Markdown, preceded by a one-line title."""
        lines = [f"**{self.title}**", "", f"Machine: {self.machine}.", "", "| " + " | ".join(self.HEADER) + " |",
                 "|" + "|".join("---" if i < 3 else "---:" for i in range(len(self.HEADER) - 1)) + "|---|"]  # fmt: skip
        for row in self.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in self.cells(row)) + " |")
        return "\n".join(lines) + "\n"

    def to_rich(self) -> Any:
        """Return a rich ``Table`` of the rows (errors in red)."""
        from rich.markup import escape
        from rich.table import Table

        from rich import box

        table = Table(title=escape(self.title), box=box.SIMPLE_HEAD, caption=escape(f"machine: {self.machine}"))
        # A terminal is narrow: the AUC column is shown where it is the figure that matters (anomaly runs).
        shown = [i for i, name in enumerate(self.HEADER) if name != "AUC" or self.anomaly]
        last = len(self.HEADER) - 1
        for i in shown:
            table.add_column(self.HEADER[i], justify="left" if i < 3 or i == last else "right", no_wrap=i < last,
                             overflow="fold")  # fmt: skip
        for row in self.rows:
            cells = [escape(c) for i, c in enumerate(self.cells(row)) if i in shown]
            if row.error or row.validation_passed is False:
                cells[-1] = f"[red]{cells[-1]}[/red]"
            table.add_row(*cells)
        return table


# --------------------------------------------------------------------------- the benchmark


def _test_images(run: Any, data: str | Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``(uint8 pixels, label index into the contract's labels, description)`` of the test images."""
    from .data import DatasetError, ImageDataset, Sample, load_images, scan_dataset
    from .data.loading import unknown_classes

    spec = run.spec
    if data is not None:
        try:
            dataset = scan_dataset(data)
        except DatasetError as exc:
            raise BenchmarkError(f"--data {data}: {exc}") from None
        unknown = unknown_classes(dataset.classes, spec)
        if unknown:
            raise BenchmarkError(f"{data}: classes {unknown} were not in the training data (model labels: {list(spec.labels)})")
        source = str(data)
    else:
        split = run.split("val")
        if not split:
            raise BenchmarkError(f"{run.run_dir}: no validation split recorded; pass --data with a labelled folder of test images")
        dataset = ImageDataset(tuple(Sample(Path(p), label) for p, label in split), spec.labels, None)
        source = "the run's validation split"
    images = load_images(dataset, spec.input, progress=False)
    pixels, labels = images.x, images.truth(spec)
    if spec.task == "anomaly" and data is None:  # held-out good images only, perhaps: defects to rank them against
        from .exporters.anomaly import with_synthetic_defects

        pixels, labels, painted = with_synthetic_defects(pixels, labels, spec)
        source += f" plus {painted} of its good images with a synthetic defect"
    return pixels, labels, source


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"


def _row(cand: Candidate, run: Any, out_dir: Path, pixels: np.ndarray, labels: np.ndarray, reference: np.ndarray,
         runs: int, warmup: int, max_drop: float) -> BenchmarkRow:  # fmt: skip
    """Export, check and time one candidate; return its row (with the error if a step failed)."""
    import edgetl_runtime
    from edgetl_runtime.bench import run_benchmark

    from .exporters import ExportOptions, default_output, export
    from .exporters.validate import compare

    row = BenchmarkRow(cand.format, cand.quantization, cand.device, note=cand.note, tta=cand.tta)
    try:
        options = ExportOptions(format=cand.format, quantization=cand.quantization, validate=False, tta=cand.tta)
        result = export(run, options, out_dir / default_output(run.run_dir, options).name)
        path = result.path  # the artifact that ships (for the Edge TPU: the compiled file)
        row = replace(row, path=str(path), size_bytes=result.size_bytes)
        if cand.format == "edgetpu" and result.note:
            return replace(row, error=result.note, failed_at="export")
    except Exception as exc:  # one failing format must not abort the table
        return replace(row, error=_first_line(exc), failed_at="export")
    try:
        model = edgetl_runtime.load(path, device=cand.device, threads=cand.threads, engine_options=cand.options)
        scores = np.concatenate([model.scores(pixels[i : i + 32]) for i in range(0, len(pixels), 32)])
        own = model.info.spec.threshold  # a lossy export decides at its own threshold
        report = compare(path, scores, reference, labels, cand.quantization, device=cand.device, spec=run.spec,
                         max_drop=max_drop, exported_threshold=None if own == run.spec.threshold else own)  # fmt: skip
        row = replace(row, metrics=report.exported_metrics, accuracy_delta=report.delta("decision_accuracy"),
                      agreement=report.agreement, validation_passed=report.passed,
                      validation_failures=tuple(f.message for f in report.failures), engine=model.info.engine,
                      provider=model.info.provider)  # fmt: skip
        del model
    except Exception as exc:
        return replace(row, error=_first_line(exc), failed_at="accuracy")
    try:
        bench = run_benchmark(path, runs=runs, warmup=warmup, threads=cand.threads, device=cand.device,
                              engine_options=cand.options)
    except Exception as exc:
        return replace(row, error=_first_line(exc), failed_at="benchmark")
    total = bench.stages["total"]
    return replace(row, p50_ms=total.p50, p99_ms=total.p99, inference_p50_ms=bench.stages["inference"].p50,
                   fps=bench.throughput_ips, engine=bench.engine, provider=bench.provider)


def benchmark(
    run_dir: str | Path,
    profile: str | None = None,
    data: str | Path | None = None,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    formats: Sequence[str] | None = None,
    output_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    tta: bool = False,
) -> BenchmarkTable:
    """Return the :class:`BenchmarkTable` of every export of ``run_dir`` that ``device`` supports.

    ``profile``: a device profile name or TOML path (default: the profile detected for this host).
    ``data``: a labelled folder of test images (default: the run's validation split).
    ``runs``/``warmup``: timed and untimed predictions per row. ``threads``: CPU threads
    (default: the profile's). ``formats``: restrict to these (``tflite``, ``onnx:int8``, ...).
    ``output_dir``: where the exports go (default ``RUN_DIR/benchmark``). ``progress`` is
    called with one line per step. ``max_drop``: as for the export validation (the gate's hard limit:
    points of decision accuracy or defect recall a row may lose against the float model before it
    is flagged; a row that loses images beyond chance is flagged too).
    ``tta``: add a row with four-flip test-time augmentation (``export --tta``) for the profile's
    target (or for each selected row when the target is not selected); its Δ is against the plain
    float model, so it shows what the averaging gains, and its latency what it costs.
    """
    from .run import RunError, load_run

    say = progress or (lambda _msg: None)
    if runs < 1 or warmup < 0:
        raise BenchmarkError(f"runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    try:
        run = load_run(run_dir)
    except RunError as exc:
        raise BenchmarkError(str(exc)) from None
    found = detect()
    host_name = found.profile.name if found.profile else None
    if profile is None:
        if found.profile is None:
            raise BenchmarkError(f"{found.reasons[0]}")
        chosen = found.profile
    else:
        try:
            chosen = load_profile(profile)
        except (ValueError, OSError) as exc:
            raise BenchmarkError(str(exc)) from None
    todo = select(candidates(chosen, threads), formats)
    if run.spec.task == "anomaly":  # nothing to train (no QAT) and no flip rule for a heatmap (no TTA)
        if tta:
            raise BenchmarkError("--tta: an anomaly detector has no test-time augmentation")
        todo = [c for c in todo if c.quantization != "qat"]
    if tta:
        base = [c for c in todo if c.note == "profile target"] or list(todo)
        todo += [replace(c, tta=True, note="TTA: 4 flips averaged in the graph") for c in base]
    out_dir = Path(output_dir) if output_dir is not None else run.run_dir / "benchmark"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchmarkError(f"{out_dir}: cannot create the export folder ({exc}); pass another -o") from None
    try:
        check_writable(out_dir)
    except OSError as exc:
        raise BenchmarkError(f"{out_dir}: not writable ({exc.strerror}); pass another -o folder") from None

    say(f"loading test images ({data or 'validation split'})")
    pixels, labels, source = _test_images(run, data)
    from .exporters.validate import reference_scores

    from edgetl_runtime.decision import decision_metrics
    from edgetl_runtime.host import machine_state

    state = machine_state()
    reference = reference_scores(run.load_model(), pixels)
    spec = run.spec
    float_metrics = decision_metrics(reference, labels, spec.labels, spec.good_labels, spec.threshold) if len(labels) else None
    rows = []
    for cand in todo:
        say(f"{cand.format} {cand.quantization}: export, metrics on {len(pixels)} images, {runs} timed runs on {cand.device}")
        rows.append(_row(cand, run, out_dir, pixels, labels, reference, runs, warmup, max_drop))
    return BenchmarkTable(
        run_dir=str(run.run_dir), profile=chosen.name, host_profile=host_name, data=source, n_images=len(pixels),
        float_metrics=float_metrics, runs=runs, warmup=warmup, rows=tuple(rows), host=state.to_dict(),
        anomaly=spec.task == "anomaly",
    )  # fmt: skip

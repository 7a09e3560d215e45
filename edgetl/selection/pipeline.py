"""``select()``: score every candidate backbone x input size on the user's images and the device's latency.

For each candidate (:mod:`.candidates`): frozen pooled features of a stratified sample of the data
(cached), LogME and leave-one-out k-NN on them (:mod:`.scores`), the same for a random-init network
of the same architecture on a smaller sample (negative-transfer check), the MACs, and the p50
latency on the profile's device (:mod:`.latency`: measured when this host is that device, else
estimated). Then the ranking, the Pareto front, a recommendation within the p50 budget, and
``select.json`` + ``select.png`` in the output folder (:mod:`.report`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .candidates import Candidate, FeatureCache, SelectionError, candidate_grid, images_key, pooled_extractor
from .latency import (
    Latency,
    LatencyError,
    count_macs,
    export_reference,
    measure_ms,
    profile_estimate,
    reference_figure,
    reference_macs,
)
from .report import CandidateResult, Selection, latency_source, pareto_front, plot_selection, recommend
from .scores import knn_balanced_accuracy, logme, negative_transfer_risk

__all__ = ["SelectOptions", "SelectionError", "select", "JSON_FILE", "PLOT_FILE"]

JSON_FILE, PLOT_FILE = "select.json", "select.png"
MIN_RANDOM_IMAGES = 10


@dataclass(frozen=True)
class SelectOptions:
    """What ``select`` compares and how.

    ``profile``: device profile name or TOML path (default: the one detected for this host).
    ``backbones`` / ``sizes``: the grid (default :func:`~edgetl.selection.candidates.candidate_grid`).
    ``max_images``: stratified sample of the data scored (default 1000; fewer: faster, noisier).
    ``random_images``: images of the random-init comparison (default 300; 0: no check).
    ``measure``: time exported references when this host is the profile's device (default True;
    False: always estimate). ``cache_dir``: features and exported references (default
    ``OUTPUT/cache``). ``knn_k``: neighbours of the k-NN score. ``bench_runs``: timed predictions
    per measured candidate.
    """

    profile: str | None = None
    backbones: tuple[str, ...] | None = None
    sizes: tuple[int, ...] | None = None
    max_images: int = 1000
    random_images: int = 300
    measure: bool = True
    cache_dir: Path | None = None
    knn_k: int = 10
    seed: int = 0
    batch_size: int = 32
    bench_runs: int = 30

    def __post_init__(self) -> None:
        if self.max_images < 4:
            raise SelectionError(f"--max-images must be at least 4, got {self.max_images}")
        if self.random_images < 0 or self.knn_k < 1 or self.batch_size < 1 or self.bench_runs < 1:
            raise SelectionError("random_images must be >= 0, knn_k, batch_size and bench_runs >= 1")
        if 0 < self.random_images < MIN_RANDOM_IMAGES:
            raise SelectionError(f"--random-images {self.random_images} is too few to compare two feature sets: give "
                                 f"at least {MIN_RANDOM_IMAGES} (300 by default), or 0 for no negative-transfer check")  # fmt: skip


def _profile(name: str | None) -> tuple[Any, str | None]:
    """Return ``(profile, the profile detected for this host)``."""
    from edgetl_runtime.profiles import detect, load_profile

    found = detect()
    host = found.profile.name if found.profile is not None else None
    if name is None:
        if found.profile is None:
            raise SelectionError(f"{found.reasons[0]}; pass --profile NAME (edgetl devices list shows them)")
        return found.profile, host
    return load_profile(name), host


def _sample(data: str | Path, options: SelectOptions, size: int, progress: bool) -> tuple[Any, Any]:
    """Return ``(scored sample, random-init sub-sample or None)`` of the data set (ImageDatasets, readable files).

    The sample is stratified (``max_images``); the sub-sample is drawn from it (``random_images``).
    Files that cannot be decoded are left out (``load_images`` warns about them).
    """
    from edgetl_runtime.contract import InputSpec

    from ..data import ImageDataset, load_images, scan_dataset, stratified_sample

    dataset = scan_dataset(data)
    sample = stratified_sample(dataset, options.max_images, options.seed)
    readable = load_images(sample, InputSpec(size, size), progress=progress).samples
    if len(readable) != len(sample):
        sample = ImageDataset(tuple(readable), sample.classes, sample.root)
    present = {c: n for c, n in sample.counts().items() if n}
    if len(present) < 2 or len(sample) < 4:
        raise SelectionError(f"{data}: {len(sample)} readable image(s) in {len(present)} class(es) "
                             f"({', '.join(f'{n} {c}' for c, n in present.items()) or 'none'}); ranking backbones "
                             "needs at least 4 images of 2 or more classes, a few dozen per class to be worth reading")  # fmt: skip
    sub = stratified_sample(sample, options.random_images, options.seed) if options.random_images else None
    return sample, sub


def _rows_of(sample: Any, sub: Any) -> np.ndarray:
    """Return the row in ``sample`` of each image of ``sub``, in order (``sub`` keeps ``sample``'s order)."""
    rows, j = [], 0
    for item in sub.samples:
        while sample.samples[j] != item:
            j += 1
        rows.append(j)
        j += 1
    return np.array(rows, np.intp)


class _Images:
    """Decoded pixels of a data set at one input size, loaded when first needed; one size kept at a time."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self._size, self._x = None, None

    def at(self, size: int) -> np.ndarray:
        from edgetl_runtime.contract import InputSpec

        from ..data import load_images

        if self._size != size:
            self._x = None  # free the previous size first
            self._x = load_images(self.dataset, InputSpec(size, size), progress=False).x
            self._size = size
        return self._x  # type: ignore[return-value]


@dataclass
class _Context:
    """What every candidate's scoring shares."""

    data: Path
    options: SelectOptions
    profile: Any
    measuring: bool
    cache_dir: Path
    ref_macs: int
    y: np.ndarray  # class ids of the sample
    n: int
    images: _Images
    sub_index: np.ndarray | None  # the random-init sub-sample's rows in the sample (None: no check)
    sub_images: _Images | None
    features: FeatureCache
    sub_features: FeatureCache | None
    notes: list[str]


def select(data: str | Path, output: str | Path = "runs/select", options: SelectOptions | None = None) -> Selection:
    """Rank the candidate backbones x input sizes for the images in ``data`` on ``options.profile``'s device.

    Writes ``output/select.json`` and ``output/select.png`` (features and exported references go
    to ``options.cache_dir``, default ``output/cache``) and returns the
    :class:`~edgetl.selection.report.Selection`. Raises :class:`SelectionError`,
    :class:`~edgetl.data.DatasetError`, :class:`~edgetl_runtime.profiles.ProfileError` or
    :class:`~edgetl.backbones.UnknownBackbone` for input it cannot use, before any feature is computed.
    """
    from edgetl_runtime.atomic import check_writable, write_json
    from edgetl_runtime.bench import host_matches
    from edgetl_runtime.host import machine_state

    from ..console import err_console, verbosity

    start = time.perf_counter()
    options = options or SelectOptions()
    console = err_console()
    profile, host_profile = _profile(options.profile)
    candidates, skipped = candidate_grid(options.backbones, options.sizes)
    for name, why in skipped:
        console.print(f"[yellow]skipped[/] {name}: {why}")
    if not candidates:
        raise SelectionError(f"none of the backbones {list(options.backbones or []) or 'edgetl knows'} has ImageNet "
                             "weights offline; pass --backbones with one of efficientnet_lite0/1/2 (their weights "
                             "ship with edgetl)")  # fmt: skip
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    check_writable(output)
    measuring = options.measure and bool(host_matches(profile)[0])
    if profile.reference.device_p50_ms is None and not measuring:
        console.print(f"[yellow]warning[/] {profile.name} has no [reference] device_p50_ms: latencies cannot be estimated, "
                      "so no candidate can be checked against the budget")  # fmt: skip
    state = machine_state()
    if measuring and state.busy:
        console.print(f"[yellow]warning[/] this machine is busy (load {state.load[0]:.2f} on {state.cores} cores): the "
                      "measured latencies will be too high; rerun when it is idle for figures to keep")  # fmt: skip
    candidates.sort(key=lambda c: c.size)  # one decoded size in memory at a time
    sample, sub = _sample(data, options, candidates[0].size, verbosity() >= 0)
    notes: list[str] = []
    ref = profile.reference
    if not measuring and ref.device_p50_ms is not None and ref.quantization != profile.export.quantization:
        notes.append(f"{profile.name}'s reference figure is of a {ref.quantization} model and its export is "
                     f"{profile.export.quantization}: the estimates carry that difference too (often a factor of 2 "
                     "to 4 on CPUs); time the leading candidates on the device")  # fmt: skip
    if sub is not None and len({s.label for s in sub.samples}) < 2:
        notes.append(f"no negative-transfer check: its {len(sub)}-image sub-sample holds one class; raise "
                     "--random-images")  # fmt: skip
        sub = None
    sub_index = _rows_of(sample, sub) if sub is not None else None
    counts = ", ".join(f"{n} {c}" for c, n in sample.counts().items())
    console.print(f"[bold]select[/] {len(candidates)} candidates on {len(sample)} images of {data} ({counts}) for "
                  f"{profile.name}: latency {'measured here' if measuring else 'ESTIMATED from the profile'}")  # fmt: skip
    cache_dir = Path(options.cache_dir) if options.cache_dir else output / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    check_writable(cache_dir)
    key = images_key(sample)
    sub_key = None if sub_index is None else f"{key}-rows-{hashlib.sha256(sub_index.tobytes()).hexdigest()[:12]}"
    ctx = _Context(Path(data), options, profile, measuring, cache_dir, reference_macs(profile), sample.labels_array(),
                   len(sample), _Images(sample), sub_index, _Images(sub) if sub is not None else None,
                   FeatureCache(cache_dir, key), FeatureCache(cache_dir, sub_key) if sub_key else None, notes)  # fmt: skip
    rows = sorted((_score(c, ctx) for c in candidates), key=lambda r: -r.logme)
    front = pareto_front([(r.logme, r.latency.p50_ms) for r in rows])
    budget = profile.budget.p50_ms
    rows = [dataclasses.replace(r, rank=i + 1, pareto=front[i],
                                within_budget=None if r.latency.p50_ms is None else r.latency.p50_ms <= budget)
            for i, r in enumerate(rows)]  # fmt: skip
    figure = reference_figure(profile)
    best, reason = recommend(rows, budget, figure)
    selection = Selection(
        data=str(data), profile=profile.name, host_profile=host_profile,
        latency_source=latency_source(rows), budget_p50_ms=budget, n_images=len(sample),
        class_counts=sample.counts(), rows=tuple(rows), recommended=None if best is None else rows[best].name,
        reason=reason, skipped=tuple(skipped), notes=tuple(ctx.notes), seconds=round(time.perf_counter() - start, 1),
        reference={"backbone": ref.backbone, "input_size": list(ref.input_size), "quantization": ref.quantization,
                   "macs": ctx.ref_macs, "device_p50_ms": ref.device_p50_ms, "overhead_ms": ref.overhead_ms,
                   "basis": ref.basis, "source": ref.source, "figure": figure},
        host=state.to_dict(), json_path=str(output / JSON_FILE), plot_path=str(output / PLOT_FILE),
    )  # fmt: skip
    plot_selection(selection, output / PLOT_FILE)
    write_json(output / JSON_FILE, selection.to_dict())
    return selection


def _score(cand: Candidate, ctx: _Context) -> CandidateResult:
    """Return one candidate's scores, MACs and latency (features from the cache where they are)."""
    from .._tf import keras
    from ..backbones import load_backbone
    from ..console import err_console

    t0 = time.perf_counter()
    k, opts = keras(), ctx.options
    backbone = load_backbone(cand.backbone, weights="imagenet", input_size=cand.size)
    macs = count_macs(backbone)
    check = ctx.sub_features is not None  # set with sub_index and sub_images, or none of them
    n_sub = len(ctx.sub_index) if check else 0  # type: ignore[arg-type]
    random_key = f"random{opts.seed}"
    cached = ctx.features.complete(cand, "imagenet", ctx.n) and (
        not check or ctx.sub_features.complete(cand, random_key, n_sub))  # type: ignore[union-attr]
    transfer = None
    with _progress(f"features {cand.name}", ctx.n + n_sub) as advance:
        feats = ctx.features.features(cand, "imagenet", lambda: ctx.images.at(cand.size), ctx.n,
                                      lambda: pooled_extractor(backbone), opts.batch_size, advance)  # fmt: skip
        if check:
            sub_images = ctx.sub_images

            def random_model() -> Any:
                k.utils.set_random_seed(opts.seed)  # the same random network on every run
                return pooled_extractor(load_backbone(cand.backbone, weights=None, input_size=cand.size))

            rand = ctx.sub_features.features(cand, random_key, lambda: sub_images.at(cand.size), n_sub,  # type: ignore[union-attr]
                                         random_model, opts.batch_size, advance)  # fmt: skip
    if check:
        transfer = negative_transfer_risk(feats[ctx.sub_index], rand, ctx.y[ctx.sub_index], opts.knn_k)
    score, knn = logme(feats, ctx.y), knn_balanced_accuracy(feats, ctx.y, opts.knn_k)
    latency = _latency(cand, backbone, macs, ctx)
    k.backend.clear_session()  # every candidate builds new graphs: keep memory flat
    where = "features cached" if cached else f"{time.perf_counter() - t0:.0f} s"
    p50 = "-" if latency.p50_ms is None else f"{latency.p50_ms:.1f} ms {latency.source}"
    risk = " [red]negative-transfer risk[/red]" if transfer is not None and transfer.at_risk else ""
    err_console().print(f"  {cand.name}: LogME {score:.3f}, k-NN {knn:.1%}, {macs / 1e9:.2f} GMACs, p50 {p50}{risk} "
                        f"[dim]({where})[/dim]")  # fmt: skip
    return CandidateResult(cand.backbone, cand.size, score, knn, macs, latency, transfer)


@contextlib.contextmanager
def _progress(title: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k)`` for a transient progress bar on stderr (none when quiet or not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..console import err_console

    console = err_console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=console.quiet or not console.is_terminal) as bar:
        task = bar.add_task(title, total=total)
        yield lambda k: bar.advance(task, k)


def _latency(cand: Candidate, backbone: Any, macs: int, ctx: _Context) -> Latency:
    """Return the candidate's latency: timed on the device (exported reference), or estimated from MACs."""
    try:
        by_macs = profile_estimate(ctx.profile, macs, ctx.ref_macs)
    except LatencyError:
        by_macs = None
    fallback = Latency(by_macs, "estimated", "MACs relative to the profile's reference", by_macs) \
        if by_macs is not None else Latency(None, "unknown", "no [reference] device_p50_ms in the profile")  # fmt: skip
    if not ctx.measuring:
        return fallback
    try:
        path = export_reference(backbone, cand.backbone, cand.size, ctx.profile, ctx.data, ctx.cache_dir)
        t = measure_ms(path, ctx.profile, ctx.options.bench_runs)
        return Latency(t["p50_ms"], "measured", "timed here, on the profile's device", by_macs, t["p99_ms"])
    except Exception as exc:  # an export or engine failure costs this row its measurement, not the run
        note = f"{cand.name}: not measured ({type(exc).__name__}: {str(exc)[:200]}); {fallback.method} instead"
        ctx.notes.append(note)
        return dataclasses.replace(fallback, note=note)

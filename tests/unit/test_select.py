"""edgetl select: transferability scores, Pareto front, recommendation, latency estimate, the CLI end to end."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgetl.selection import (
    CandidateResult,
    Latency,
    NegativeTransfer,
    candidate_grid,
    estimate_ms,
    knn_balanced_accuracy,
    logme,
    pareto_front,
    recommend,
)
from edgetl.selection.candidates import CHUNK, Candidate, FeatureCache, SelectionError, images_key
from edgetl.selection.pipeline import SelectOptions, _rows_of
from edgetl.selection.report import latency_source
from edgetl.selection.latency import LatencyError, profile_estimate, reference_figure
from edgetl.selection.scores import KNN_MARGIN, LOGME_MARGIN, negative_transfer_risk
from edgetl_runtime.profiles import ProfileError, load_profile

REPO_DEVICES = Path(__file__).resolve().parents[2] / "devices"


def _blobs(n: int = 300, d: int = 32, shift: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return rng.normal(size=(n, d)) + shift * y[:, None] * (np.arange(d) < 4), y


# --------------------------------------------------------------------------- scores


def _direct_evidence(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """The evidence of a Bayesian linear model per image, computed with the explicit D x D matrices."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    return float((d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.linalg.slogdet(a)[1]
                  - beta / 2 * np.sum((t - f @ m) ** 2) - alpha / 2 * m @ m - n / 2 * np.log(2 * np.pi)) / n)


def test_logme_is_the_maximum_evidence_averaged_over_classes() -> None:
    f, y = _blobs(n=200, d=6)
    best = []
    for c in (0, 1):
        t = (y == c).astype(float)
        grid = [_direct_evidence(f, t, a, b) for a in np.logspace(-4, 3, 60) for b in np.logspace(-2, 2, 60)]
        best.append(max(grid))
    # the fixed point reaches the grid's maximum (to the grid's resolution), never much beyond it
    assert logme(f, y) == pytest.approx(np.mean(best), abs=5e-3)


def test_logme_ranks_separable_features_above_random_labels_and_noise() -> None:
    f, y = _blobs()
    rng = np.random.default_rng(1)
    separable = logme(f, y)
    assert separable > logme(f, rng.permutation(y)) + 0.1
    assert separable > logme(rng.normal(size=f.shape), y) + 0.1
    assert logme(f, np.where(y == 1, "defect", "good")) == pytest.approx(separable)  # any label type


def test_logme_with_fewer_images_than_dimensions_stays_finite_and_ordered() -> None:
    f, y = _blobs(n=120, d=400)  # N < D: the pooled features of a few images
    rng = np.random.default_rng(2)
    good, shuffled = logme(f, y), logme(f, rng.permutation(y))
    assert np.isfinite(good) and good > shuffled
    assert logme(10.0 * f, y) == pytest.approx(good, abs=0.05)  # about scale-free


def test_logme_refuses_a_single_class() -> None:
    with pytest.raises(ValueError, match="two classes"):
        logme(np.ones((5, 3)), np.zeros(5))


def test_logme_of_dead_features_is_finite_and_below_informative_ones() -> None:
    f, y = _blobs(n=100, d=16)
    dead = logme(np.zeros_like(f), y)  # a random-init network whose ReLUs all died
    assert np.isfinite(dead) and dead < logme(f, y)
    # a model without weights: its evidence is that of y ~ N(0, 1/beta) with beta fitted, per class
    n = len(y)
    expected = np.mean([0.5 * np.log(n / t) - 0.5 - 0.5 * np.log(2 * np.pi)
                        for t in (np.sum(y == c) for c in (0, 1))])  # fmt: skip
    assert dead == pytest.approx(expected, abs=1e-3)


def test_knn_balanced_accuracy_separable_random_and_imbalanced() -> None:
    f, y = _blobs(shift=6.0)
    assert knn_balanced_accuracy(f, y) > 0.95
    assert 0.35 < knn_balanced_accuracy(f, np.random.default_rng(0).permutation(y)) < 0.65
    # 90 % of one class and features that carry nothing: plain accuracy would be ~0.9, balanced ~0.5
    rng = np.random.default_rng(3)
    y_imb = (rng.random(400) < 0.1).astype(int)
    assert knn_balanced_accuracy(rng.normal(size=(400, 8)), y_imb) < 0.62


# --------------------------------------------------------------------------- negative transfer


def test_negative_transfer_is_flagged_when_neither_score_shows_pretrained_clearly_better() -> None:
    clear = NegativeTransfer(0.5, 0.1, 0.9, 0.7, 300)
    assert not clear.at_risk and "clearly better" in clear.reason()
    one = NegativeTransfer(0.5, 0.1, 0.9, 0.9 - KNN_MARGIN / 2, 300)  # LogME clearly better, k-NN a tie (noise)
    assert not one.at_risk and "one score only" in one.reason()
    assert not NegativeTransfer(0.5, 0.5 - LOGME_MARGIN / 2, 0.9, 0.7, 300).at_risk  # k-NN clearly better
    assert NegativeTransfer(0.5, 0.5 - LOGME_MARGIN / 2, 0.9, 0.9 - KNN_MARGIN / 2, 300).at_risk  # neither
    assert NegativeTransfer(0.1, 0.5, 0.6, 0.9, 300).at_risk  # random is better
    f, y = _blobs(shift=4.0)
    noise = np.random.default_rng(0).normal(size=f.shape)
    assert not negative_transfer_risk(f, noise, y).at_risk
    assert negative_transfer_risk(noise, f, y).at_risk
    assert "RISK" in negative_transfer_risk(noise, f, y).reason()


# --------------------------------------------------------------------------- Pareto front, recommendation


def _row(name: str, score: float, ms: float | None, knn: float = 0.8, risk: bool = False) -> CandidateResult:
    backbone, size = name.split("@")
    transfer = NegativeTransfer(score, score + (1.0 if risk else -1.0), knn, knn + (0.1 if risk else -0.3), 100)
    return CandidateResult(backbone, int(size), score, knn, 1,
                           Latency(ms, "estimated" if ms else "unknown", "MACs", estimated_ms=ms), transfer)


def test_pareto_front_keeps_the_candidates_no_other_beats_on_both() -> None:
    points = [(1.0, 30.0), (0.8, 10.0), (0.7, 20.0), (0.8, 12.0), (1.0, 30.0), (2.0, None)]
    assert pareto_front(points) == [True, True, False, False, True, False]
    assert pareto_front([]) == []


def test_latency_source_says_mixed_when_some_rows_fell_back_to_the_estimate() -> None:
    measured = dataclasses.replace(_row("a@224", 1.0, 5.0), latency=Latency(5.0, "measured", "timed here"))
    assert latency_source([measured, measured]) == "measured"
    assert latency_source([measured, _row("b@192", 0.9, 9.0)]) == "mixed"
    assert latency_source([_row("b@192", 0.9, 9.0), _row("c@160", 0.8, None)]) == "estimated"
    assert latency_source([_row("c@160", 0.8, None)]) == "unknown"


def test_recommendation_is_the_best_score_within_the_budget() -> None:
    rows = [_row("big@260", 1.0, 40.0), _row("mid@224", 0.8, 15.0, knn=0.7), _row("small@192", 0.6, 8.0, knn=0.9)]
    best, why = recommend(rows, budget_ms=20.0)
    assert rows[best].name == "mid@224"
    assert "2 candidate(s) within the p50 budget of 20 ms" in why and "k-NN prefers small@192" in why
    best, _ = recommend(rows, budget_ms=50.0)
    assert rows[best].name == "big@260"


def test_recommendation_passes_over_negative_transfer_and_says_when_nothing_fits() -> None:
    rows = [_row("risky@224", 1.0, 10.0, risk=True), _row("safe@192", 0.5, 8.0)]
    best, _ = recommend(rows, budget_ms=20.0)
    assert rows[best].name == "safe@192"
    best, why = recommend(rows[:1], budget_ms=20.0)
    assert rows[best].name == "risky@224" and "WARNING" in why
    best, why = recommend(rows, budget_ms=5.0)
    assert best is None and "fastest is safe@192 at 8.0 ms" in why
    figure = reference_figure(load_profile("raspberry-pi-4"))
    best, why = recommend(rows, budget_ms=5.0, figure=figure)  # the one line names the figure that rules them out
    assert best is None and "\n" not in why and f"scales {figure} by MACs" in why
    assert "mobilenet_v2 int8 224 px, 23 ms end to end on raspberry-pi-4 (PUBLISHED: XNNPACK README" in figure
    best, why = recommend([_row("x@224", 1.0, None)], budget_ms=5.0)
    assert best is None and "no latency is known" in why


# --------------------------------------------------------------------------- latency estimate, profile fields


def test_estimate_scales_the_model_dependent_part_of_the_reference_latency() -> None:
    assert estimate_ms(100.0, 100.0, 7.0, 2.0) == pytest.approx(7.0)  # the reference itself
    assert estimate_ms(300.0, 100.0, 7.0, 2.0) == pytest.approx(2.0 + 3 * 5.0)
    assert estimate_ms(0.0, 100.0, 7.0, 2.0) == pytest.approx(2.0)  # nothing left but decode and resize
    profile = load_profile("raspberry-pi-4")
    ref = profile.reference
    assert profile_estimate(profile, 2e8, 1e8) == pytest.approx(ref.overhead_ms + 2 * (ref.device_p50_ms - ref.overhead_ms))


def _variant(tmp_path: Path, reference_lines: str) -> Path:
    text = (REPO_DEVICES / "cpu-x86_64.toml").read_text().replace('name = "cpu-x86_64"', 'name = "line-3"')
    text, n = re.subn(r"^device_p50_ms = .*\n(overhead_ms = .*\n)?(basis = .*\n)?(source = .*\n)?", reference_lines, text,
                      count=1, flags=re.M)  # fmt: skip
    assert n == 1
    path = tmp_path / "line-3.toml"
    path.write_text(text)
    return path


def test_every_shipped_profile_has_a_reference_figure_to_estimate_from() -> None:
    from edgetl_runtime.profiles import list_profiles

    for profile in list_profiles():
        ref = profile.reference
        assert ref.device_p50_ms is not None and 0 <= ref.overhead_ms < ref.device_p50_ms <= profile.budget.p50_ms, profile.name


def test_reference_latency_fields_are_optional_and_checked(tmp_path: Path) -> None:
    bare = load_profile(_variant(tmp_path, ""))
    assert bare.reference.device_p50_ms is None and bare.reference.overhead_ms == 0.0
    with pytest.raises(LatencyError, match=r"no \[reference\] device_p50_ms"):
        profile_estimate(bare, 1e8, 1e8)
    with pytest.raises(ProfileError, match="reference.overhead_ms"):
        load_profile(_variant(tmp_path, "device_p50_ms = 5.0\noverhead_ms = 5.0\n"))
    with pytest.raises(ProfileError, match="reference.overhead_ms"):
        load_profile(_variant(tmp_path, "overhead_ms = 1.0\n"))
    with pytest.raises(ProfileError, match="reference.device_p50_ms"):
        load_profile(_variant(tmp_path, "device_p50_ms = -1.0\n"))
    with pytest.raises(ProfileError, match="reference.basis.*missing"):
        load_profile(_variant(tmp_path, "device_p50_ms = 5.0\n"))
    with pytest.raises(ProfileError, match="reference.source.*describes device_p50_ms"):
        load_profile(_variant(tmp_path, 'source = "a datasheet"\n'))
    sourced = load_profile(_variant(tmp_path, 'device_p50_ms = 5.0\nbasis = "published"\nsource = "vendor.com/t1; x"\n'))
    figure = reference_figure(sourced)
    assert "5 ms end to end on line-3 (PUBLISHED: vendor.com/t1)" in figure and "efficientnet_lite0 int8" in figure


def test_count_macs_of_known_layers() -> None:
    from edgetl._tf import keras
    from edgetl.selection import count_macs

    k = keras()
    x = k.Input((16, 16, 3))
    h = k.layers.Conv2D(8, 3, strides=2, padding="same")(x)  # 8x8 out: 8*8*3*3*3*8 = 13824
    h = k.layers.DepthwiseConv2D(3, padding="same")(h)  # 8*8*3*3*8 = 4608
    h = k.layers.GlobalAveragePooling2D()(h)
    out = k.layers.Dense(2)(h)  # 8*2 = 16
    assert count_macs(k.Model(x, out)) == 13824 + 4608 + 16


def test_the_grid_skips_backbones_without_offline_weights_and_checks_sizes() -> None:
    from edgetl.backbones import weights_available_offline

    chosen, skipped = candidate_grid()
    assert {c.backbone for c in chosen} == {b for b in {c.backbone for c in chosen} if weights_available_offline(b)}
    assert all(not weights_available_offline(name) and "offline" in why for name, why in skipped)
    assert {(c.backbone, c.size) for c in chosen} >= {("efficientnet_lite0", 192), ("efficientnet_lite0", 224),
                                                      ("efficientnet_lite0", 256), ("efficientnet_lite1", 208),
                                                      ("efficientnet_lite2", 260)}  # fmt: skip
    chosen, _ = candidate_grid(["efficientnet_lite1"], [96, 128])
    assert [c.name for c in chosen] == ["efficientnet_lite1@96", "efficientnet_lite1@128"]
    with pytest.raises(SelectionError, match="--sizes"):
        candidate_grid(["efficientnet_lite0"], [8])


# --------------------------------------------------------------------------- feature cache


class _Extractor:
    """Stands in for the pooled Keras extractor: the features are the mean pixel, counted per call."""

    calls = 0

    def predict(self, x: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        _Extractor.calls += 1
        return x.reshape(len(x), -1).mean(axis=1, keepdims=True).repeat(3, axis=1)


def test_feature_cache_recomputes_chunks_that_do_not_fit(tmp_path: Path) -> None:
    pixels = np.arange(CHUNK + 10, dtype=np.uint8)[:, None, None, None].repeat(2, axis=1)
    cache, cand = FeatureCache(tmp_path, "key"), Candidate("efficientnet_lite0", 64)
    first = cache.features(cand, "imagenet", lambda: pixels, len(pixels), _Extractor)
    assert first.shape == (CHUNK + 10, 3) and cache.complete(cand, "imagenet", len(pixels))
    _Extractor.calls = 0
    assert np.array_equal(cache.features(cand, "imagenet", lambda: 1 / 0, len(pixels), lambda: 1 / 0), first)
    # a chunk of another length (another sample under the same key) or damaged on disk is computed again
    np.save(cache.folder(cand, "imagenet") / "00001.npy", np.zeros((4, 3), np.float32))
    assert np.array_equal(cache.features(cand, "imagenet", lambda: pixels, len(pixels), _Extractor), first)
    (cache.folder(cand, "imagenet") / "00000.npy").write_bytes(b"\x93NUMPY garbage")
    assert np.array_equal(cache.features(cand, "imagenet", lambda: pixels, len(pixels), _Extractor), first)
    assert _Extractor.calls == 2


def test_feature_cache_key_follows_the_images_order_and_the_sub_sample(tiny_dataset: Path) -> None:
    from edgetl.data import ImageDataset, scan_dataset, stratified_sample

    data = scan_dataset(tiny_dataset)
    reordered = ImageDataset(tuple(reversed(data.samples)), data.classes, data.root)
    assert data.content_hash() == reordered.content_hash() and images_key(data) != images_key(reordered)
    sub = stratified_sample(data, 12, 0)
    rows = _rows_of(data, sub)
    assert [data.samples[i] for i in rows] == list(sub.samples)
    doubled = ImageDataset((*data.samples[:3], data.samples[2], *data.samples[3:]), data.classes, data.root)
    sub = ImageDataset(doubled.samples[1:5], data.classes, data.root)
    assert list(_rows_of(doubled, sub)) == [1, 2, 3, 4]


def test_too_few_random_images_are_refused() -> None:
    with pytest.raises(SelectionError, match="at least 10"):
        SelectOptions(random_images=2)
    assert SelectOptions(random_images=0).random_images == 0


# --------------------------------------------------------------------------- end to end


def test_select_cli_ranks_writes_json_and_plot_then_reuses_the_cache(tmp_path: Path, tiny_dataset: Path) -> None:
    from edgetl.cli import main

    cache = tmp_path / "cache"
    args = ["select", str(tiny_dataset), "--backbones", "efficientnet_lite0", "--sizes", "64", "--random-images", "12",
            "--cache", str(cache), "--runs", "5"]  # fmt: skip

    # This host's profile: measured when this host is an x86-64 CPU (export cached under --cache).
    result = CliRunner().invoke(main, [*args, "--profile", "cpu-x86_64", "-o", str(tmp_path / "here")])
    assert result.exit_code == 0, result.output
    assert "efficientnet_lite0@64" in result.stdout and "recommended" in result.stdout
    report = json.loads((tmp_path / "here" / "select.json").read_text())
    row = report["rows"][0]
    assert (row["rank"], row["pareto"], row["size"]) == (1, True, 64)
    assert np.isfinite(row["logme"]) and 0.0 <= row["knn"] <= 1.0 and row["macs"] > 0
    assert row["transfer"]["n_images"] == 12 and isinstance(row["transfer"]["at_risk"], bool)
    from edgetl_runtime.bench import host_matches

    expected = "measured" if host_matches(load_profile("cpu-x86_64"))[0] else "estimated"
    assert report["latency_source"] == row["latency"]["source"] == expected and row["latency"]["p50_ms"] > 0
    assert (tmp_path / "here" / "select.png").stat().st_size > 1000

    # Another device: the features come from the cache, the latency is an estimate by MACs, and it says so.
    result = CliRunner().invoke(main, [*args, "--profile", "raspberry-pi-4", "-o", str(tmp_path / "pi"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    latency = report["rows"][0]["latency"]
    assert report["latency_source"] == latency["source"] == "estimated" and "features cached" in result.stderr
    assert latency["method"] == "MACs relative to the profile's reference"
    assert latency["p50_ms"] == pytest.approx(latency["estimated_ms"]) and report["rows"][0]["logme"] == row["logme"]
    assert report["reference"]["basis"] == "published" and "XNNPACK" in report["reference"]["source"]
    result = CliRunner().invoke(main, [*args, "--profile", "raspberry-pi-4", "-o", str(tmp_path / "pi")])
    assert "ESTIMATED" in result.stdout and "recommended" in result.stdout
    assert "estimated from: mobilenet_v2 int8 224 px, 23 ms end to end on raspberry-pi-4 (PUBLISHED:" in " ".join(
        result.stdout.split())  # the line may wrap at 80 columns


def test_select_cli_explains_bad_input(tmp_path: Path, tiny_dataset: Path) -> None:
    import shutil

    from edgetl.cli import main

    data = tiny_dataset
    result = CliRunner().invoke(main, ["select", str(data), "--backbones", "resnet50", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown backbone 'resnet50'" in result.output
    result = CliRunner().invoke(main, ["select", str(data), "--sizes", "big", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--sizes" in result.output
    result = CliRunner().invoke(main, ["select", str(data), "--profile", "toaster", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown device profile" in result.output
    shutil.copytree(tiny_dataset / "good", tmp_path / "one-class" / "good")
    result = CliRunner().invoke(main, ["select", str(tmp_path / "one-class"), "--profile", "raspberry-pi-4",
                                       "-o", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2 and "needs at least two classes" in result.output, result.output
    result = CliRunner().invoke(main, ["select", str(data), "--profile", "raspberry-pi-4", "--random-images", "3",
                                       "-o", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2 and "--random-images 3 is too few" in result.output


def test_module_doctests() -> None:
    import doctest

    import edgetl.selection.candidates as candidates
    import edgetl.selection.latency as latency
    import edgetl.selection.report as report
    import edgetl.selection.scores as scores

    for module in (scores, candidates, latency, report):
        assert doctest.testmod(module).failed == 0, module.__name__

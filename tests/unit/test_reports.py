"""Evaluation report folder: plots are real PNGs, the gallery shows exactly the wrong verdicts, worst first."""

from __future__ import annotations

import base64
import doctest
import html
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgetl.reports as reports_module
from edgetl.reports import EvalReport, write_eval_report

THRESHOLD = 0.5
# (file name, true class, defect score): two false alarms, two missed defects, one of them unreadable
CASES = [
    ("good_0.png", 0, 0.05), ("good_1.png", 0, 0.10), ("good_2.png", 0, 0.20), ("good_3.png", 0, 0.30),
    ("alarm_high.png", 0, 0.90), ("we<b>&ird.png", 0, 0.70),
    ("defect_0.png", 1, 0.95), ("defect_1.png", 1, 0.80), ("defect_2.png", 1, 0.60), ("defect_3.png", 1, 0.55),
    ("missed_mid.png", 1, 0.30), ("broken.png", 1, 0.10),
]
WRONG = {"alarm_high.png", "we<b>&ird.png", "missed_mid.png", "broken.png"}
PLOTS = ("confusion_matrix.png", "verdict_matrix.png", "roc.png", "pr.png")


def _images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in names:
        path = folder / name
        if name == "broken.png":
            path.write_bytes(b"not an image at all")
        else:
            Image.fromarray(rng.integers(0, 255, (200, 320), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _report(out: Path, paths: list[Path], y_true: np.ndarray, probs: np.ndarray, labels: list[str],
            **kwargs) -> EvalReport:
    good = [name for name in labels if name == "good"]
    score = 1.0 - probs[:, [labels.index(g) for g in good]].sum(axis=1)
    return write_eval_report(out, probs=probs, y_true=y_true, paths=paths, labels=labels, good_labels=good,
                             threshold=THRESHOLD, defect_score=score, title="cells <test>", **kwargs)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalReport, list[Path], str]:
    root = tmp_path_factory.mktemp("binary")
    paths = _images(root / "images", [name for name, _, _ in CASES])
    score = np.array([s for _, _, s in CASES])
    probs = np.stack([1 - score, score], axis=1)
    report = _report(root / "report", paths, np.array([c for _, c, _ in CASES]), probs, ["good", "defect"])
    return report, paths, (root / "report" / "misclassified.html").read_text("utf-8")


def _assert_png(path: Path, min_px: int = 300) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_px
        return image.size


def test_writes_every_file_as_a_real_png_and_nothing_half_written(binary) -> None:
    report, _, _ = binary
    assert [f.name for f in report.files] == [*PLOTS, "misclassified.html"]
    assert all(f.parent == report.out_dir and f.is_file() for f in report.files)
    for name in PLOTS:
        _assert_png(report.out_dir / name)
    assert sorted(p.name for p in report.out_dir.iterdir()) == sorted(f.name for f in report.files)
    assert report.n_misclassified == len(WRONG)


def test_gallery_lists_exactly_the_wrong_verdicts_with_their_scores(binary) -> None:
    _, paths, page = binary
    for path, (name, _, score) in zip(paths, CASES):
        shown = html.escape(str(path)) in page
        assert shown == (name in WRONG), name
        if shown:
            assert f"{score:.3f}" in page
    assert "Missed defects (2)" in page and "False alarms (2)" in page


def test_gallery_puts_the_worst_first(binary) -> None:
    _, _, page = binary
    assert page.index("broken.png") < page.index("missed_mid.png")  # missed: lowest score first
    assert page.index("alarm_high.png") < page.index("we&lt;b&gt;&amp;ird.png")  # alarms: highest first


def test_gallery_embeds_small_jpeg_thumbnails_and_survives_an_unreadable_image(binary) -> None:
    _, _, page = binary
    prefix = "data:image/jpeg;base64,"
    assert page.count(prefix) == len(WRONG) - 1
    assert "image could not be read" in page
    encoded = page.split(prefix, 1)[1].split('"', 1)[0]
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 160


def test_gallery_escapes_file_names_and_title(binary) -> None:
    _, _, page = binary
    assert "<b>&" not in page and "we&lt;b&gt;&amp;ird.png" in page
    assert "<test>" not in page and "cells &lt;test&gt;" in page


def test_gallery_caps_each_section_and_says_how_many_were_left_out(binary, tmp_path: Path) -> None:
    _, paths, _ = binary
    score = np.array([s for _, _, s in CASES])
    report = _report(tmp_path / "capped", paths, np.array([c for _, c, _ in CASES]),
                     np.stack([1 - score, score], axis=1), ["good", "defect"], max_gallery=1)
    page = (report.out_dir / "misclassified.html").read_text("utf-8")
    assert page.count("1 more not shown") == 2
    assert "missed_mid.png" not in page and "broken.png" in page
    assert report.n_misclassified == len(WRONG)


def test_three_classes_predict_the_best_defect_class(tmp_path: Path) -> None:
    paths = _images(tmp_path / "images", ["a.png", "b.png", "c.png", "d.png"])
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.2, 0.5], [0.4, 0.45, 0.15], [0.2, 0.5, 0.3]])
    report = _report(tmp_path / "report", paths, np.array([0, 0, 2, 2]), probs, ["good", "crack", "scratch"])
    page = (report.out_dir / "misclassified.html").read_text("utf-8")
    assert report.n_misclassified == 1  # b.png: a false alarm, called "scratch"; d.png: right verdict, wrong class
    assert html.escape(str(paths[1])) in page and "<dd>scratch</dd>" in page
    assert html.escape(str(paths[3])) not in page
    for name in PLOTS:
        _assert_png(report.out_dir / name)


def test_confusion_matrix_grows_with_the_number_of_classes(binary, tmp_path: Path) -> None:
    labels = ["good", *(f"defect_type_{i}" for i in range(24))]
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(len(labels)), size=30)
    paths = [tmp_path / f"missing_{i}.png" for i in range(30)]  # never read unless misclassified
    report = _report(tmp_path / "many", paths, rng.integers(0, len(labels), 30), probs, labels)
    many = _assert_png(report.out_dir / "confusion_matrix.png")
    two = _assert_png(binary[0].out_dir / "confusion_matrix.png")
    assert many[0] > two[0] and many[1] > two[1]
    assert max(many) <= 1800


def test_single_class_truth_writes_plots_without_curves(tmp_path: Path) -> None:
    paths = _images(tmp_path / "images", ["a.png", "b.png", "c.png"])
    score = np.array([0.1, 0.2, 0.3])
    report = _report(tmp_path / "report", paths, np.zeros(3, int), np.stack([1 - score, score], axis=1),
                     ["good", "defect"])
    for name in PLOTS:
        _assert_png(report.out_dir / name)
    assert report.n_misclassified == 0
    assert "No misclassified images" in (report.out_dir / "misclassified.html").read_text("utf-8")


def test_mismatched_inputs_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"probs has shape \(2, 3\), expected \(2, 2\)"):
        write_eval_report(tmp_path, probs=np.ones((2, 3)) / 3, y_true=np.array([0, 1]), paths=["a", "b"],
                          labels=["good", "defect"], good_labels=["good"], threshold=0.5,
                          defect_score=np.array([0.1, 0.9]), title="t")
    with pytest.raises(ValueError, match="good labels"):
        write_eval_report(tmp_path, probs=np.ones((2, 2)) / 2, y_true=np.array([0, 1]), paths=["a", "b"],
                          labels=["good", "defect"], good_labels=["ok"], threshold=0.5,
                          defect_score=np.array([0.1, 0.9]), title="t")


def test_module_example_runs() -> None:
    assert doctest.testmod(reports_module).failed == 0

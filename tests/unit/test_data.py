"""Data sets: scanning folders and CSVs, errors before training, splits, loading, ELPV."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.data import (
    DatasetError,
    ImageDataset,
    Sample,
    inspect_dataset,
    load_images,
    scan_dataset,
    scan_images,
    stratified_sample,
)
from edgetl.data.elpv import materialize_elpv
from edgetl_runtime.contract import InputSpec


def _write(path: Path, value: int, size: int = 8, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value, value, value)).save(path)
    return path


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for c, (label, n) in enumerate(counts.items()):
        for i in range(n):
            _write(root / label / f"{label}_{i:02d}.png", 10 * c + i)
    return root


# ------------------------------------------------------------------------------------------ scan


def test_scan_folder_sorted_classes_and_counts(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"good": 5, "defect": 3})
    _write(root / "defect" / "lot7" / "nested.png", 200)  # subfolders belong to their class
    (root / "good" / "readme.txt").write_text("notes")  # not an image: ignored
    _write(root / "good" / ".hidden.png", 1)
    _write(root / ".ipynb_checkpoints" / "x.png", 1)
    ds = scan_dataset(root)
    assert ds.classes == ("defect", "good")
    assert ds.counts() == {"defect": 4, "good": 5} and len(ds) == 9
    assert ds.labels_array().tolist() == [0] * 4 + [1] * 5
    assert all(s.path.is_absolute() and s.path.is_file() for s in ds.samples)


def test_symlinks_are_followed_once_and_loops_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path / "ds", {"good": 2, "defect": 2})
    elsewhere = _folder(tmp_path / "shared", {"lot9": 3})
    (root / "good" / "lot9").symlink_to(elsewhere / "lot9")  # a linked folder of images: followed
    (root / "good" / "again").symlink_to(root / "good")  # a folder loop: read once, reported
    (root / "defect" / "a.png").symlink_to(root / "defect" / "b.png")  # a loop of file links
    (root / "defect" / "b.png").symlink_to(root / "defect" / "a.png")
    (root / "defect" / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")  # broken
    (root / "scratch").symlink_to(root / "scratch")  # a class-folder-shaped loop at the top
    ds = scan_dataset(root)
    assert ds.counts() == {"defect": 2, "good": 5}
    err = " ".join(capsys.readouterr().err.split())
    assert "5 path(s) of the data set were left out" in err
    for name in ("again: links back to a folder already read", "a.png: a symlink that leads nowhere",
                 "b.png: a symlink", "gone.jpg: a symlink", "scratch: a symlink"):
        assert name in err
    assert len(scan_images(root / "good")) == 5


def test_empty_folder_shows_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="expected one subfolder per class") as info:
        scan_dataset(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "good").mkdir()
    (tmp_path / "defect").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        scan_dataset(tmp_path)


def test_images_without_class_folders(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", 3)
    with pytest.raises(DatasetError, match="1 images directly in it but no class folders"):
        scan_dataset(tmp_path)


def test_single_class_error_says_what_to_add(tmp_path: Path) -> None:
    _folder(tmp_path, {"good": 3})
    with pytest.raises(DatasetError) as info:
        scan_dataset(tmp_path)
    assert str(info.value) == (
        f"found only class 'good' in {tmp_path}; a classifier needs at least two classes: "
        "add a folder of defect images"
    )


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    _folder(tmp_path, {"good": 3, "scratch": 2})
    (tmp_path / "dent").mkdir()
    with pytest.raises(DatasetError, match="'dent' contain no images"):
        scan_dataset(tmp_path)


def test_folder_of_splits_points_at_train(tmp_path: Path) -> None:
    _folder(tmp_path / "train", {"good": 2, "defect": 2})
    _folder(tmp_path / "test", {"good": 2, "defect": 2})
    with pytest.raises(DatasetError, match="point at one split") as info:
        scan_dataset(tmp_path)
    assert str(tmp_path / "train") in str(info.value)


def test_missing_path_and_non_csv_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder"):
        scan_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="not a single file"):
        scan_dataset(_write(tmp_path / "a.png", 1))


# ------------------------------------------------------------------------------------------- CSV


def test_csv_manifest_relative_absolute_and_extra_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _write(tmp_path / "imgs" / "a.png", 1)
    b = _write(tmp_path / "elsewhere" / "b.png", 2)
    c = _write(tmp_path / "imgs" / "c.png", 3)
    manifest = tmp_path / "sets" / "list.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "\ufeffpath,label,operator\n"  # Excel's byte-order mark and an extra column
        "../imgs/a.png,good,ann\n"
        f"{b},defect,bob\n"
        "\n"
        "../imgs/c.png,good,ann\n"
    )
    monkeypatch.chdir(tmp_path / "imgs")  # relative paths are relative to the CSV, not the cwd
    ds = scan_dataset(manifest)
    assert ds.classes == ("defect", "good") and ds.root == manifest.parent
    assert [(s.path.resolve(), s.label) for s in ds.samples] == [(a, "good"), (b, "defect"), (c, "good")]


def test_csv_bad_header_and_missing_files_give_line_numbers(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,good\n")
    with pytest.raises(DatasetError, match=r"line 1: header must name the columns 'path' and 'label'"):
        scan_dataset(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("path,label\na.png,good\nb.png,defect\na.png,defect\nc.png,good\n")
    with pytest.raises(DatasetError) as info:
        scan_dataset(missing)
    message = str(info.value)
    assert "2 listed file(s) do not exist" in message and "line 3:" in message and "line 5:" in message
    assert "line 2:" not in message
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("path,label\na.png,good\na.png,\n")
    with pytest.raises(DatasetError, match="line 3: expected a path and a label"):
        scan_dataset(no_label)
    header_only = tmp_path / "empty.csv"
    header_only.write_text("path,label\n")
    with pytest.raises(DatasetError, match="lists no images"):
        scan_dataset(header_only)


# ------------------------------------------------------------------------------ splits and hashes


def _synthetic(counts: dict[str, int]) -> ImageDataset:
    samples = tuple(Sample(Path(f"/data/{label}/{i:03d}.png"), label) for label, n in counts.items() for i in range(n))
    return ImageDataset(samples, tuple(sorted(counts)), Path("/data"))


def test_split_is_stratified_deterministic_and_order_independent() -> None:
    ds = _synthetic({"good": 70, "defect": 30, "scratch": 3})
    train, val = ds.split(0.2, seed=5)
    assert val.counts() == {"defect": 6, "good": 14, "scratch": 1}
    assert train.counts() == {"defect": 24, "good": 56, "scratch": 2}
    assert train.classes == val.classes == ds.classes
    assert set(train.samples).isdisjoint(val.samples) and len(train) + len(val) == len(ds)
    again = ds.split(0.2, seed=5)
    assert again == (train, val)
    shuffled = ImageDataset(ds.samples[::-1], ds.classes, ds.root)
    assert set(shuffled.split(0.2, seed=5)[1].samples) == set(val.samples)
    assert set(ds.split(0.2, seed=6)[1].samples) != set(val.samples)


def test_split_keeps_every_class_or_explains() -> None:
    train, val = _synthetic({"good": 50, "defect": 2}).split(0.05)
    assert train.counts()["defect"] == 1 and val.counts()["defect"] == 1
    with pytest.raises(DatasetError, match="fewer than 2 images"):
        _synthetic({"good": 10, "defect": 1}).split(0.2)
    with pytest.raises(DatasetError, match="between 0 and 1"):
        _synthetic({"good": 10, "defect": 10}).split(1.0)


def test_subset_and_stratified_sample() -> None:
    ds = _synthetic({"good": 90, "defect": 10})
    assert ds.subset([3, 1]).samples == (ds.samples[3], ds.samples[1])
    with pytest.raises(IndexError):
        ds.subset([100])
    calib = stratified_sample(ds, 20, seed=1)
    assert len(calib) == 20 and calib.counts() == {"defect": 2, "good": 18}
    assert stratified_sample(ds, 20, seed=1) == calib != stratified_sample(ds, 20, seed=2)
    assert stratified_sample(_synthetic({"good": 99, "defect": 1}), 5).counts()["defect"] == 1
    assert stratified_sample(ds, 500) == ds


def test_content_hash_follows_contents_and_labels_not_order(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"good": 3, "defect": 3})
    ds = scan_dataset(root)
    digest = ds.content_hash()
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert ImageDataset(ds.samples[::-1], ds.classes, None).content_hash() == digest
    relabelled = tuple(Sample(s.path, "good") if i == 0 else s for i, s in enumerate(ds.samples))
    assert ImageDataset(relabelled, ds.classes, None).content_hash() != digest
    _write(ds.samples[0].path, 99)
    assert ds.content_hash() != digest


# ---------------------------------------------------------------------------------------- loading


def _corrupt_files(folder: Path) -> None:
    png = _write(folder / "whole.png", 5, size=32)
    data = png.read_bytes()
    png.unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")


def test_load_images_pixels_labels_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path, {"good": 6, "defect": 4})
    _corrupt_files(root / "good")
    ds = scan_dataset(root)
    assert len(ds) == 13
    loaded = load_images(ds, InputSpec(5, 7), progress=False)
    assert loaded.x.shape == (10, 5, 7, 3) and loaded.x.dtype == np.uint8
    assert len(loaded.samples) == 10 and loaded.classes == ("defect", "good")
    index = {"defect": 0, "good": 1}
    assert loaded.y.tolist() == [index[s.label] for s in loaded.samples]
    for pixels, sample in zip(loaded.x, loaded.samples):  # parallel decoding keeps sample order
        expected = int(sample.path.stem.split("_")[1]) + (0 if sample.label == "good" else 10)
        assert (pixels == expected).all()
    reasons = {p.name: r for p, r in loaded.skipped}
    assert set(reasons) == {"truncated.png", "zero.png", "text.jpg"}
    assert "truncated" in reasons["truncated.png"] and reasons["zero.png"] == "empty file (0 bytes)"
    err = capsys.readouterr().err
    assert "skipped 3 of 13 files" in err and "text.jpg" in err
    gray = load_images(ds, InputSpec(4, 4, color_mode="grayscale"), progress=True)
    assert gray.x.shape == (10, 4, 4, 1)


def test_class_left_empty_by_unreadable_files_is_an_error(tmp_path: Path) -> None:
    _folder(tmp_path, {"good": 3})
    _corrupt_files(tmp_path / "defect")
    with pytest.raises(DatasetError, match="every image of class\\(es\\) 'defect' is unreadable"):
        load_images(scan_dataset(tmp_path), InputSpec(4, 4), progress=False)


def test_inspect_reports_modes_sizes_duplicates_unreadable(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"good": 3, "defect": 2})
    shutil.copy(root / "good" / "good_00.png", root / "defect" / "copy.png")
    _write(root / "good" / "rgb.png", 40, size=10, mode="RGB")
    Image.fromarray(np.full((6, 4), 1000, np.uint16)).save(root / "good" / "deep.png")
    (root / "good" / "zero.png").write_bytes(b"")
    report = inspect_dataset(root)
    assert report["total"] == 9 and report["classes"] == {"defect": 3, "good": 6}
    assert report["modes"] == {"L": 6, "RGB": 1, "I;16": 1}
    assert report["sizes"] == {"8x8": 6, "10x10": 1, "4x6": 1}
    assert report["duplicates"] == [sorted([str(root / "defect" / "copy.png"), str(root / "good" / "good_00.png")])]
    assert report["unreadable"] == [{"path": str(root / "good" / "zero.png"), "reason": "empty file (0 bytes)"}]


def test_data_modules_do_not_import_tensorflow() -> None:
    code = "import sys, edgetl.data, edgetl.data.elpv, edgetl.commands.data; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------- ELPV


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_materialize_elpv_reduced_is_stratified_and_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "elpv"
    summary = materialize_elpv(out, split=0.75, seed=0, limit=48, progress=False)
    assert summary["total"] == 48 and not summary["reused"]
    rows = _manifest(out)
    assert list(rows[0]) == ["path", "label", "probability", "type", "split"] and len(rows) == 48
    for row in rows:
        assert (out / row["path"]).is_file()
        assert row["path"].startswith(f"{row['split']}/{row['label']}/")
        assert row["label"] == ("defect" if float(row["probability"]) > 0.5 else "good")
    train = scan_dataset(out / "train")
    assert len(train) == 36 == sum(summary["counts"]["train"].values())
    for label in ("good", "defect"):  # each (label, cell type) stratum is split 3:1 (up to rounding)
        for kind in ("mono", "poly"):
            stratum = [r for r in rows if r["label"] == label and r["type"] == kind]
            n_train = sum(r["split"] == "train" for r in stratum)
            assert stratum and abs(n_train - 0.75 * len(stratum)) <= 1
    with Image.open(out / rows[0]["path"]) as img:
        assert img.size == (300, 300) and img.mode == "L"
    stamp = (out / "manifest.csv").stat().st_mtime_ns
    assert materialize_elpv(out, limit=48, progress=False)["reused"]
    assert (out / "manifest.csv").stat().st_mtime_ns == stamp
    other = materialize_elpv(out, seed=1, limit=48, progress=False)
    assert not other["reused"] and _manifest(out) != rows
    assert sorted(p.name for p in out.iterdir()) == [".edgetl-elpv.json", "manifest.csv", "test", "train"]


def test_materialize_elpv_refuses_foreign_folder_and_repairs_interrupted_run(tmp_path: Path) -> None:
    foreign = _folder(tmp_path / "mine" / "train", {"good": 1}).parent
    with pytest.raises(DatasetError, match="not written by 'edgetl data elpv'"):
        materialize_elpv(foreign, limit=16, progress=False)
    assert (foreign / "train" / "good" / "good_00.png").is_file()
    out = tmp_path / "elpv"
    materialize_elpv(out, limit=16, progress=False)
    marker = out / ".edgetl-elpv.json"
    marker.write_text(marker.read_text().replace('"complete": true', '"complete": false'))  # as if killed
    shutil.rmtree(out / "test")
    (out / ".building-999").mkdir()
    summary = materialize_elpv(out, limit=16, progress=False)
    assert not summary["reused"] and (out / "test").is_dir() and not (out / ".building-999").exists()


def test_materialize_elpv_without_the_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)
    with pytest.raises(DatasetError, match=r"pip install 'edgetl\[datasets\]'"):
        materialize_elpv(tmp_path / "elpv", progress=False)


@pytest.mark.slow
def test_materialize_elpv_full(tmp_path: Path) -> None:
    summary = materialize_elpv(tmp_path / "elpv", progress=False)
    assert summary["total"] == 2624
    train = scan_dataset(tmp_path / "elpv" / "train")
    test = scan_dataset(tmp_path / "elpv" / "test")
    assert len(train) == 1968 and len(test) == 656 and train.classes == ("defect", "good")
    share = train.counts()["defect"] / len(train)
    assert 0.30 < share < 0.32
    assert not {s.path.name for s in train.samples} & {s.path.name for s in test.samples}


def test_scan_images_takes_unlabelled_folders_and_class_folders(tmp_path: Path) -> None:
    # Calibration folders may be plain folders of images: loose files are unlabelled.
    Image.new("RGB", (6, 6)).save(tmp_path / "loose.png")
    (tmp_path / "good").mkdir()
    Image.new("RGB", (6, 6)).save(tmp_path / "good" / "a.png")
    ds = scan_images(tmp_path)
    assert sorted((s.path.name, s.label) for s in ds.samples) == [("a.png", "good"), ("loose.png", None)]
    assert ds.classes == ("good",) and ds.labels_array().tolist().count(-1) == 1
    picked = stratified_sample(ds, 1)
    assert len(picked) == 1
    with pytest.raises(DatasetError, match="no image files"):
        scan_images(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_csv_with_a_giant_field_is_a_dataset_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "a" * 200_000 + ",good\n")  # before: _csv.Error traceback
    with pytest.raises(DatasetError, match=r"m.csv, line 2: not a readable CSV row \(field larger"):
        scan_dataset(manifest)

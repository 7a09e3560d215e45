"""Imprinting on the device: a bare embedding extractor learns classes from two images each, an edgetl export
gains a class, the file updates incrementally, and bad bases or damaged files get clear errors."""

from __future__ import annotations

import io
import json
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import edgetl_runtime as rt
from edgetl_runtime.cli import main
from edgetl_runtime.errors import EdgetlRuntimeError

from .conftest import NO_TENSORFLOW, tf_modules, to_edgetpu_lookalike, to_tflite


def _tinted(rng: np.random.Generator, channel: int, size: int = 40) -> np.ndarray:
    img = rng.normal(70, 25, (size, size, 3))
    img[..., channel] += 110
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, list[Path]]:
    """Six photos each of red-tinted and green-tinted parts."""
    root, rng, out = tmp_path_factory.mktemp("parts"), np.random.default_rng(0), {}
    for name, channel in (("red", 0), ("green", 1)):
        out[name] = []
        for i in range(6):
            path = root / f"{name}{i}.png"
            Image.fromarray(_tinted(rng, channel)).save(path)
            out[name].append(path)
    return out


@pytest.fixture(scope="module")
def extractor(tmp_path_factory, parts) -> Path:
    """A bare third-party-style embedding extractor: uint8 in, full-integer, output (N, 1, 1, 16); no edgetl metadata."""
    tf, k = tf_modules()
    k.utils.set_random_seed(3)
    image = k.Input((32, 32, 3), name="image")
    h = k.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    h = k.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = k.layers.GlobalAveragePooling2D(keepdims=True)(h)  # (N, 1, 1, 16), like Coral's extractors
    model = k.Model(image, h)
    calib = np.stack([np.asarray(Image.open(p).resize((32, 32))) for p in parts["red"] + parts["green"]])
    path = tmp_path_factory.mktemp("extractor") / "extractor.tflite"
    path.write_bytes(to_tflite(model, calib.astype(np.float32), io_dtype=tf.uint8))
    return path


@pytest.fixture(scope="module")
def exported_with_embedding(tiny_run, tiny_dataset, tmp_path_factory):
    """``(edgetl int8 export with --embedding, its data set's images, their labels, 6 images of a new kind of defect)``."""
    from edgetl.exporters import ExportOptions, export

    out = tmp_path_factory.mktemp("embedding") / "model.tflite"
    export(tiny_run, ExportOptions.for_int8(calib_samples=24, embedding=True), out)
    images = sorted(tiny_dataset.glob("*/*.png"))
    rng, new = np.random.default_rng(5), []
    for i in range(6):  # a new defect type: a bright blotch the classifier was never shown
        img = np.asarray(Image.open(images[i]).convert("L"), np.float64)
        r, c = (int(v) for v in rng.integers(8, 24, 2))
        img[r : r + 20, c : c + 20] = 255.0
        new.append(out.parent / f"blotch{i}.png")
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(new[-1])
    return out, images, [p.parent.name for p in images], new


def test_bare_extractor_learns_two_classes_from_two_images_each(extractor, parts, tmp_path):
    out = tmp_path / "parts.imprint"
    result = rt.imprint(extractor, {"red": parts["red"][:2], "green": parts["green"][:2]}, out, good=["green"])
    assert result.labels == ("red", "green") and result.imprinted == {"red": 2, "green": 2}
    model = rt.load(out)
    assert model.info.spec.task == "imprinted" and model.info.input.dtype == np.uint8
    for name in ("red", "green"):
        for path in parts[name][2:]:  # held back
            pred = model.predict(path)
            assert pred.top_class == name and pred.verdict == ("good" if name == "green" else "defect")
    assert extractor.read_bytes() == zipfile.ZipFile(out).read("base.tflite")  # the base travels, byte for byte


def test_adding_images_updates_the_means_incrementally(extractor, parts, tmp_path):
    once = rt.imprint(extractor, {"red": parts["red"][:4], "green": parts["green"][:2]}, tmp_path / "once.imprint")
    first = rt.imprint(extractor, {"red": parts["red"][:2], "green": parts["green"][:2]}, tmp_path / "inc.imprint")
    later = rt.imprint(first.path, {"red": parts["red"][2:4]}, tmp_path / "inc.imprint")  # in place: a running mean
    assert later.imprinted == {"red": 4, "green": 2} and later.added == {"red": 2}
    a, b = rt.load(once.path), rt.load(later.path)
    pixels = np.stack([a.pixels(p) for p in parts["red"][4:] + parts["green"][4:]])
    np.testing.assert_allclose(a.scores(pixels), b.scores(pixels), atol=1e-5)


def test_an_edgetl_export_gains_a_class(exported_with_embedding, tmp_path):
    model_path, images, truth, new_images = exported_with_embedding
    base = rt.load(model_path)
    before = [p.top_class for p in base.predict_batch(images)]
    out = tmp_path / "extended.imprint"
    rt.imprint(model_path, {"bright-spot": new_images[:3]}, out)
    extended = rt.load(out)
    assert extended.labels == ("defect", "good", "bright-spot") and extended.info.spec.good_labels == ("good",)
    assert [p.top_class for p in extended.predict_batch(new_images[3:])] == ["bright-spot"] * len(new_images[3:])
    after = [p.top_class for p in extended.predict_batch(images)]
    kept = np.mean([a == b for a, b in zip(before, after)])
    assert kept >= 0.9, f"the trained classes kept {kept:.0%} of their answers"
    assert all(p.verdict == "defect" for p in extended.predict_batch(new_images[3:]))  # a new class is not good


def test_cli_imprints_and_predicts(extractor, parts, tmp_path):
    out = tmp_path / "cli.imprint"
    result = CliRunner().invoke(main, ["imprint", str(extractor), "--class", f"red={parts['red'][0]},{parts['red'][1]}",
                                       "--class", f"green={parts['green'][0]},{parts['green'][1]}", "--good", "green",
                                       "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "imprinted red (2 images), green (2 images)" in result.output
    predicted = CliRunner().invoke(main, ["predict", str(out), str(parts["red"][5])])
    assert predicted.exit_code == 0 and "\tdefect\t" in predicted.output and "\tred\t" in predicted.output


@pytest.mark.parametrize("case, message", [
    ("truncated base", "truncated"),
    ("no embedding", "--embedding"),
    ("base swapped", "SHA-256"),
    ("bit flipped", "altered"),
    ("truncated file", "damaged imprinted model"),
    ("means header claims 26 GB", "unreadable class means"),
    ("edge tpu base, no edge tpu", "Edge TPU"),
    ("edge tpu base, default device", "Edge TPU"),
    ("many entries", "holds exactly 3"),
    ("duplicate entry", "holds exactly 3"),
    ("encrypted entry", "encrypted"),
    ("contract input edited", "not its base's"),
    ("not a class", "NAME=IMG"),
    ("missing image", "no such image"),
])  # fmt: skip
def test_bad_bases_and_files_give_clear_errors(case, message, extractor, parts, exported, tmp_path):
    base, args = extractor, ["--class", f"red={parts['red'][0]}"]
    if case == "truncated base":
        base = tmp_path / "cut.tflite"
        base.write_bytes(extractor.read_bytes()[: len(extractor.read_bytes()) // 2])
    elif case == "no embedding":
        base = exported.tflite_int8  # an edgetl classifier exported without --embedding
    elif case in ("base swapped", "bit flipped", "truncated file", "means header claims 26 GB", "many entries",
                  "duplicate entry", "encrypted entry", "contract input edited"):  # fmt: skip
        good = rt.imprint(extractor, {"red": parts["red"][:2]}, tmp_path / "good.imprint").path
        data = bytearray(good.read_bytes())
        base = tmp_path / "bad.imprint"
        if case in ("many entries", "duplicate entry"):  # a directory zipfile would parse entry by entry
            with zipfile.ZipFile(good) as src, zipfile.ZipFile(base, "w") as dst:
                for name in src.namelist():
                    dst.writestr(name, src.read(name))
                for i in range(2000 if case == "many entries" else 1):
                    with pytest.warns(UserWarning) if case == "duplicate entry" else nullcontext():
                        dst.writestr("means.npy" if case == "duplicate entry" else f"x{i}", b"")
            data = bytearray(base.read_bytes())
        elif case == "encrypted entry":  # the flag bit set in the central directory record of every entry
            at = 0
            while (at := data.find(b"PK\x01\x02", at)) >= 0:
                data[at + 8] |= 0x01
                at += 4
        elif case == "contract input edited":  # the manifest is not under the base's hash
            with zipfile.ZipFile(good) as src, zipfile.ZipFile(base, "w") as dst:
                for name in src.namelist():
                    entry = src.read(name)
                    if name == "edgetl-imprint.json":
                        manifest = json.loads(entry)
                        manifest["contract"]["input"]["height"] *= 2
                        entry = json.dumps(manifest).encode()
                    dst.writestr(name, entry)
            data = bytearray(base.read_bytes())
        if case == "bit flipped":
            data[data.index(extractor.read_bytes()[-64:])] ^= 0xFF  # inside the stored base model
        if case in ("base swapped", "means header claims 26 GB"):  # well-formed archives, crafted entries
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 65536)})
            swapped = {"base.tflite": exported.tflite_int8.read_bytes()} if case == "base swapped" else {
                "means.npy": header.getvalue() + bytes(16)}  # fmt: skip
            with zipfile.ZipFile(good) as src, zipfile.ZipFile(base, "w") as dst:
                for name in src.namelist():
                    dst.writestr(name, swapped.get(name, src.read(name)))
        else:
            base.write_bytes(bytes(data[: len(data) // 2] if case == "truncated file" else data))
    elif case.startswith("edge tpu base"):  # with or without --device, never a silent CPU run
        base = tmp_path / "compiled_edgetpu.tflite"
        base.write_bytes(to_edgetpu_lookalike(extractor.read_bytes()))
        args += ["--device", "edgetpu"] if case.endswith("no edge tpu") else []
    elif case == "not a class":
        args = ["--class", "red"]
    elif case == "missing image":
        args = ["--class", f"red={tmp_path / 'nope.png'}"]
    result = CliRunner().invoke(main, ["imprint", str(base), *args, "-o", str(tmp_path / "out.imprint")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.imprint").exists()
    if base.suffix == ".imprint":
        with pytest.raises(EdgetlRuntimeError, match=message):
            rt.load(base)


def test_imprinting_refuses_a_trained_label_and_a_wrong_suffix(exported_with_embedding, tmp_path):
    model_path, images, _, _ = exported_with_embedding
    with pytest.raises(ValueError, match="label of the base's trained head"):
        rt.imprint(model_path, {"good": images[:2]}, tmp_path / "x.imprint")
    with pytest.raises(ValueError, match=r"\*\.imprint"):
        rt.imprint(model_path, {"new": images[:2]}, tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="a list of images, not one image"):
        rt.imprint(model_path, {"new": "crack.png"}, tmp_path / "x.imprint")  # not split into letters
    # a good label that is no label is refused before any image is read (this one does not exist)
    with pytest.raises(ValueError, match=r"good label\(s\) \['ok'\]"):
        rt.imprint(model_path, {"new": [tmp_path / "missing.png"]}, tmp_path / "x.imprint", good=["ok"])
    assert not (tmp_path / "x.imprint").exists()


def test_read_spec_reads_an_imprinted_model(extractor, parts, tmp_path):
    out = rt.imprint(extractor, {"red": parts["red"][:2], "green": parts["green"][:2]}, tmp_path / "s.imprint",
                     good=["green"]).path  # fmt: skip
    spec = rt.read_spec(out)
    assert (spec.task, spec.labels, spec.good_labels) == ("imprinted", ("red", "green"), ("green",))


_IMPRINT_WITHOUT_TF = NO_TENSORFLOW + """
import edgetl_runtime
base, out, red, green, probe = sys.argv[1:]
edgetl_runtime.imprint(base, {"red": [red], "green": [green]}, out)
print(edgetl_runtime.load(out).predict(probe).top_class)
"""


def test_imprints_on_a_device_without_tensorflow(extractor, parts, tmp_path):
    import subprocess
    import sys

    args = [str(extractor), str(tmp_path / "x.imprint"), str(parts["red"][0]), str(parts["green"][0]), str(parts["red"][3])]
    out = subprocess.run([sys.executable, "-c", _IMPRINT_WITHOUT_TF, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "red"

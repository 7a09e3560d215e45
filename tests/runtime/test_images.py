"""Awkward images through model.predict: every one is classified or refused in plain words."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import edgetl_runtime
from edgetl_runtime.errors import ImageError


@pytest.fixture(scope="module")
def model(exported):
    return edgetl_runtime.load(exported.tflite_int8, threads=1)


def _save(path, img, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "name, make",
    [
        ("gray16.png", lambda: Image.fromarray(np.linspace(0, 65535, 64 * 64, dtype=np.uint16).reshape(64, 64))),
        ("cmyk.jpg", lambda: Image.new("CMYK", (40, 30), (0, 50, 100, 20))),
        ("palette.png", lambda: Image.new("RGB", (40, 30), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)),
        ("rgba.png", lambda: Image.new("RGBA", (40, 30), (10, 200, 30, 128))),
        ("gray.bmp", lambda: Image.new("L", (17, 91), 128)),
    ],
)
def test_unusual_modes_are_classified(model, tmp_path, name, make):
    pred = model.predict(_save(tmp_path / name, make()))
    assert pred.top_class in ("defect", "good") and 0.0 <= pred.top_probability <= 1.0


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (b"\xff\xd8\xff\xe0 definitely not a jpeg", "not a readable image"), (b"hello", "not a readable image")],
)
def test_corrupt_images_are_refused(model, tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        model.predict(path)


def test_truncated_png_is_refused(model, tmp_path):
    path = _save(tmp_path / "ok.png", Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageError):
        model.predict(path)


def test_huge_jpeg_is_decoded_at_reduced_size(exported, tmp_path):
    # 20000x20000 RGB would be 1.2 GB decoded; JPEG draft mode decodes it at 1/8 scale.
    path = tmp_path / "huge.jpg"
    Image.new("L", (20000, 20000), 90).save(path, quality=50)
    code = (
        "import edgetl_runtime\nfrom edgetl_runtime.bench import memory_mb\n"
        f"p = edgetl_runtime.load({str(exported.tflite_int8)!r}).predict({str(path)!r})\n"
        "print(p.top_class, int(memory_mb()[0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    label, peak_mb = out.stdout.split()
    assert label in ("defect", "good")
    assert int(peak_mb) < 400, f"decoding a huge JPEG took {peak_mb} MB"


def test_huge_png_is_refused_clearly(model, tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)  # 1-bit: small on disk, 400 MP when decoded
    with pytest.raises(ImageError, match="too large|cannot be decoded at reduced size"):
        model.predict(path)

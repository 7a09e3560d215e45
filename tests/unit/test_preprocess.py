"""The shared image pipeline reads every file kind and colour mode the way a user expects."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl_runtime.errors import ImageError
from edgetl_runtime.preprocess import load_image, open_image, probe_image


def _gradient(h: int = 12, w: int = 16) -> np.ndarray:
    """An RGB image whose every pixel is distinct, so a wrong conversion shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 15, yy * 20, (xx + yy) * 7], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("WEBP", ".webp")])
def test_lossless_formats_round_trip_rgb_exactly(tmp_path: Path, fmt: str, suffix: str) -> None:
    pixels = _gradient()
    path = tmp_path / f"img{suffix}"
    Image.fromarray(pixels).save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    out = load_image(path, size=pixels.shape[:2])
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    np.testing.assert_array_equal(out, pixels)


def test_jpeg_reads_close_to_source(tmp_path: Path) -> None:
    pixels = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    out = load_image(tmp_path / "a.jpg", size=(16, 16))
    assert np.abs(out.astype(int) - pixels).max() <= 4


def test_grayscale_becomes_three_equal_channels_or_one(tmp_path: Path) -> None:
    gray = _gradient()[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgb = load_image(tmp_path / "g.png", size=gray.shape)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)
    one = load_image(tmp_path / "g.png", size=gray.shape, color_mode="grayscale")
    assert one.shape == (*gray.shape, 1)
    np.testing.assert_array_equal(one[:, :, 0], gray)


def test_rgb_to_grayscale_uses_luminance(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    out = load_image(tmp_path / "red.png", size=(4, 4), color_mode="grayscale")
    assert out.shape == (4, 4, 1) and abs(int(out[0, 0, 0]) - 76) <= 1  # ITU-R 601: 0.299 * 255


def test_rgba_drops_alpha_and_keeps_colour(tmp_path: Path) -> None:
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., :3] = (10, 120, 250)
    rgba[..., 3] = np.arange(6)[None, :] * 50  # partly transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", size=(6, 6))
    assert (out == np.array([10, 120, 250], np.uint8)).all()


@pytest.mark.parametrize("transparency", [None, 1])
def test_palette_images_read_as_their_palette_colours(tmp_path: Path, transparency: int | None) -> None:
    img = Image.new("P", (8, 8))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    index = np.zeros((8, 8), np.uint8)
    index[:, 4:] = 1
    index[6:, :] = 2
    img.putdata(index.flatten().tolist())
    extra = {} if transparency is None else {"transparency": transparency}
    img.save(tmp_path / "p.png", **extra)
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = load_image(tmp_path / "p.png", size=(8, 8))
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 7]) == (255, 0, 0)  # the transparent index keeps its stored colour
    assert tuple(out[7, 0]) == (0, 255, 0)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 64, 32768, 65535]], np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert probe_image(tmp_path / "deep.png").mode.startswith("I;16")
    out = load_image(tmp_path / "deep.png", size=(4, 4), resize="nearest")
    # clipping would make every non-zero value 255; scaling keeps the ramp
    assert out[0, :, 0].tolist() == [0, 64, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_cmyk_jpeg_reads_as_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert probe_image(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = load_image(tmp_path / "cmyk.jpg", size=(16, 16))
    assert out.shape == (16, 16, 3)
    r, g, b = (int(v) for v in out[8, 8])
    assert r > 240 and g < 15 and b < 15  # cyan-free, yellow+magenta ink: red


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((10, 20, 3), np.uint8)  # 20 wide, 10 high as stored
    stored[:, :5] = 255  # white band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "cam.jpg", exif=exif.tobytes(), quality=95)
    img = open_image(tmp_path / "cam.jpg")
    assert img.size == (10, 20)  # displayed portrait: 10 wide, 20 high
    shown = np.asarray(img)
    assert shown[:4].mean() > 200 and shown[-4:].mean() < 50  # left edge rotated to the top


def test_resize_to_requested_height_and_width(tmp_path: Path) -> None:
    Image.fromarray(_gradient(30, 50)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", size=(7, 11)).shape == (7, 11, 3)


def test_corrupt_files_raise_image_error_with_path_and_reason(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    expected = {"cut.png": "corrupt or truncated", "zero.png": "empty file (0 bytes)", "notes.jpg": "not a readable image"}
    for name, reason in expected.items():
        with pytest.raises(ImageError) as info:
            load_image(tmp_path / name, size=(8, 8))
        assert info.value.source.endswith(name) and info.value.reason.startswith(reason)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png", size=(8, 8))
    with pytest.raises(ImageError, match="truncated"):
        probe_image(tmp_path / "cut.png")


def test_parallel_decoding_leaves_pillow_limits_intact(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    before = Image.MAX_IMAGE_PIXELS
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: load_image(tmp_path / "a.png", (4, 4)), range(300)))
    assert Image.MAX_IMAGE_PIXELS == before
    assert all(np.array_equal(r, results[0]) for r in results)


def test_a_unit_scale_stored_as_float32_passes_pixels_through():
    # The converter writes scale 1 as 0.99999988; quantizing by it must give the pixels back
    # unchanged, and without float work (the fast path returns the array itself).
    from edgetl_runtime.preprocess import to_model_input

    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    out = to_model_input(pixels, np.uint8, (0.0,) * 3, (1.0,) * 3, (0.9999998807907104, 0))
    assert out is pixels
    slow = np.clip(np.rint(pixels.astype(np.float32) / np.float32(0.9999998807907104)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, slow)

"""The one image pipeline: decode, fix orientation and colour mode, resize, to model input.

Training, calibration, export validation and the device runtime all call these functions, so a
model never sees pixels prepared differently from the ones it was trained on.

>>> import numpy as np
>>> pixels = load_image(np.zeros((40, 30), np.uint8), size=(8, 8))
>>> pixels.shape, pixels.dtype
((8, 8, 3), dtype('uint8'))
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageSource = Union[str, Path, bytes, Image.Image, np.ndarray]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Images above this many pixels are only decoded when the codec can decode at reduced size
# (JPEG's DCT scaling); a 20000x20000 PNG would need over 1 GB before it could be shrunk.
MAX_FULL_DECODE_PIXELS = 64_000_000
# Hard ceiling, even for draft decoding, against decompression bombs.
MAX_DRAFT_PIXELS = 1_000_000_000

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
}

# Image.MAX_IMAGE_PIXELS is process-global: opening is serialized so that threads decoding in
# parallel cannot interleave the save/restore below and leave Pillow's bomb check switched off.
# Only the header parse happens under the lock; decoding (the slow part) runs in parallel.
_OPEN_LOCK = threading.Lock()


class ImageInfo(NamedTuple):
    """What an image file holds, as stored: size in pixels, PIL mode and file format."""

    width: int
    height: int
    mode: str
    format: str


# The image formats edgetl reads (IMAGE_SUFFIXES), by Pillow's names: Pillow is never asked to try any other,
# whatever the file's name. An EPS file named part.png would otherwise start Ghostscript; DDS, BLP, ICNS, PSD...
# have decoders edgetl has no use for (and their bugs).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
MAX_IMAGE_FILE_BYTES = 256 * 2**20  # an image file is read whole (then decoded): a camera frame is a few MB
# What a file is when it is none of those, by its first bytes: said in the error, never opened.
_FOREIGN = ((b"%!PS", "PostScript (EPS)"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"), (b"DDS ", "DDS"),
            (b"BLP", "BLP"), (b"icns", "ICNS"), (b"8BPS", "Photoshop (PSD)"), (b"GIF8", "GIF"),
            (b"\x00\x00\x01\x00", "ICO"), (b"qoif", "QOI"), (b"\x00\x00\x00\x0cjP", "JPEG 2000"),
            (b"\xffO\xffQ", "JPEG 2000"), (b"P1", "PNM"), (b"P2", "PNM"), (b"P3", "PNM"), (b"P4", "PNM"),
            (b"P5", "PNM"), (b"P6", "PNM"), (b"<svg", "SVG"), (b"<?xml", "XML"))  # fmt: skip


def foreign_format(head: bytes) -> str | None:
    """Return what a file that is not a readable image seems to be, by its first bytes (None: unknown)."""
    return next((name for magic, name in _FOREIGN if head.startswith(magic)), None)


def read_image_file(src: str | Path | bytes) -> bytes:
    """Return the bytes of the image file ``src`` (bytes are returned as they are), read as safely as :func:`load_image` reads it.

    Raises :class:`ImageError` naming the file: missing, not a regular file, over 256 MB, unreadable, empty.
    """
    from .safefile import SpecialFile, TooLarge, read_regular

    name = "<bytes>" if isinstance(src, bytes) else str(src)
    try:
        data = src if isinstance(src, bytes) else read_regular(src, MAX_IMAGE_FILE_BYTES)
    except FileNotFoundError:
        raise ImageError(name, "no such file") from None
    except SpecialFile:
        raise ImageError(name, "not a regular file (a pipe, socket, device or folder); give an image file") from None
    except TooLarge:
        raise ImageError(name, f"more than {MAX_IMAGE_FILE_BYTES >> 20} MB: not an image edgetl reads") from None
    except OSError as exc:
        raise ImageError(name, f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return data


def _open(src: str | Path | bytes) -> Image.Image:
    name = "<bytes>" if isinstance(src, bytes) else str(src)
    data = read_image_file(src)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # checked below, with a reduced-size decode for JPEG
            try:
                img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        kind = foreign_format(data[:16])
        what = f"a {kind} file by its content" if kind else "not a readable image: not PNG, JPEG, BMP, TIFF or WebP by its content"
        raise ImageError(name, f"{what}; edgetl reads PNG, JPEG, BMP, TIFF and WebP only (whatever the file's name): "
                               "convert it to PNG") from None  # fmt: skip
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(name, f"not a readable image ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    return img


def _guarded_decode(img: Image.Image, name: str, size: tuple[int, int] | None) -> Image.Image:
    """Decode ``img``, at reduced size when it is huge and the codec allows it."""
    try:
        return _decode(img, name, size)
    except BaseException:
        img.close()  # do not leak a file handle per bad file when scanning thousands of them
        raise


def _decode(img: Image.Image, name: str, size: tuple[int, int] | None) -> Image.Image:
    pixels = img.width * img.height
    if pixels > MAX_DRAFT_PIXELS:
        raise ImageError(name, f"image is {img.width}x{img.height}, too large to decode safely")
    progressive = img.format == "JPEG" and ("progressive" in img.info or "progression" in img.info)
    if progressive and pixels > MAX_FULL_DECODE_PIXELS:
        # libjpeg keeps every DCT coefficient of a progressive JPEG, whatever the scale it is decoded at
        raise ImageError(name, f"a progressive JPEG of {img.width}x{img.height} ({pixels / 1e6:.0f} MP): decoding it "
                               f"takes gigabytes whatever the output size; save it as baseline JPEG or downscale it")
    if size is not None and img.format == "JPEG":
        # JPEG decodes at 1/2, 1/4 or 1/8 scale directly: huge photos cost little memory.
        img.draft(img.mode if img.mode in ("RGB", "L") else "RGB", (size[1], size[0]))
        if img.width * img.height > MAX_FULL_DECODE_PIXELS:  # even at 1/8 scale
            raise ImageError(name, f"image is {img.width * 8}x{img.height * 8} or more, too large to decode safely")
    elif pixels > MAX_FULL_DECODE_PIXELS:
        raise ImageError(
            name,
            f"image is {img.width}x{img.height} ({pixels / 1e6:.0f} MP) and its format "
            f"({img.format}) cannot be decoded at reduced size; downscale it or save it as JPEG",
        )
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(name, f"corrupt or truncated image ({exc})") from None
    return img


def _to_mode(img: Image.Image, color_mode: str) -> Image.Image:
    """Convert any PIL mode (16-bit, float, palette, CMYK, alpha) to 8-bit RGB or L."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = Image.fromarray(_to_uint8(img), mode="L")
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "RGBa", "PA"):  # alpha is dropped: colour values are kept as stored
        img = img.convert("RGB")
    elif img.mode in ("LA", "La"):
        img = img.convert("L")
    target = "RGB" if color_mode == "rgb" else "L"
    return img if img.mode == target else img.convert(target)


def _to_uint8(img: Image.Image, rows: int = 256) -> np.ndarray:
    """Return a 16-bit, 32-bit or float image as uint8 (16-bit and wider integers scaled by 1/257, floats <= 1 by 255).

    Converted in bands of ``rows`` rows: a whole 8000x8000 16-bit PNG as float64 took 1.6 GB.
    """
    out = np.empty((img.height, img.width), np.uint8)
    scale = 255.0 if img.mode == "F" and img.getextrema()[1] <= 1.0 else 1.0 / 257.0 if img.mode != "F" else 1.0
    for top in range(0, img.height, rows):
        band = np.asarray(img.crop((0, top, img.width, min(top + rows, img.height))), dtype=np.float64)
        out[top : top + band.shape[0]] = np.clip(np.rint(band * scale), 0, 255).astype(np.uint8)
    return out


def open_image(src: ImageSource, color_mode: str = "rgb", size: tuple[int, int] | None = None) -> Image.Image:
    """Return ``src`` decoded as an 8-bit RGB (``color_mode="rgb"``) or L PIL image.

    ``size`` (height, width) is a hint only: huge JPEGs are decoded directly at reduced size.
    EXIF orientation is applied, so a rotated camera image looks as it did on the camera.
    """
    if color_mode not in ("rgb", "grayscale"):
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    if isinstance(src, np.ndarray):
        return _to_mode(_from_array(src), color_mode)
    if isinstance(src, Image.Image):
        img, name = src, "<PIL image>"
    else:
        img, name = _open(src), "<bytes>" if isinstance(src, bytes) else str(src)
        img = _guarded_decode(img, name, size)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        pass
    try:
        return _to_mode(img, color_mode)
    except (OSError, ValueError) as exc:
        raise ImageError(name, f"cannot convert image mode {img.mode} ({exc})") from None


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError("<array>", f"expected HxW, HxWx1, HxWx3 or HxWx4 pixels, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError("<array>", f"the image is empty (shape {arr.shape}): nothing to classify")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool):
        raise ImageError("<array>", f"pixels of dtype {arr.dtype} are not numbers")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ImageError("<array>", "the pixels contain NaN or infinity")
    if arr.dtype == np.uint8:
        return Image.fromarray(arr)
    if arr.dtype == np.uint16:
        arr = arr.astype(np.float64) / 257.0
    elif np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
        arr = arr * 255.0  # floats in [0, 1]
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def load_image(
    src: ImageSource,
    size: tuple[int, int],
    color_mode: str = "rgb",
    resize: str = "bilinear",
    roi: Any = None,
) -> np.ndarray:
    """Return ``src`` as uint8 pixels of shape ``(height, width, channels)`` at ``size`` (h, w).

    ``roi``: an :class:`edgetl_runtime.roi.Roi` cropped from the image before the resize (the
    part's box in a camera frame); None takes the whole image.
    """
    img = open_image(src, color_mode=color_mode, size=None if roi is not None else size)
    if roi is not None:
        name = src if isinstance(src, (str, Path)) else "<image>"
        img = img.crop(roi.box(img.width, img.height, str(name)))
    height, width = int(size[0]), int(size[1])
    if img.size != (width, height):
        try:
            img = img.resize((width, height), _RESAMPLE[resize], reducing_gap=3.0)
        except KeyError:
            raise ValueError(f"resize must be one of {sorted(_RESAMPLE)}, got {resize!r}") from None
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def to_model_input(
    pixels: np.ndarray,
    dtype: np.dtype | type,
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
    quantization: tuple[float, int] | None = None,
    layout: str = "nhwc",
    channel_order: str = "rgb",
) -> np.ndarray:
    """Return uint8 ``pixels`` (N, H, W, C) as the model's input tensor.

    Float inputs get ``(pixel - mean) / std``. Integer inputs are quantized with the tensor's
    ``(scale, zero_point)``; for edgetl int8 models (mean 0, std 1, scale 1) the uint8 pixels
    pass through untouched, so the device does no float work at all. ``layout="nchw"`` returns
    (N, C, H, W) (PyTorch exports) and ``channel_order="bgr"`` reverses the colour channels; both
    are folded into the one copy the cast to float makes (``mean``/``std`` are in the tensor's
    channel order).

    >>> to_model_input(np.zeros((1, 2, 2, 3), np.uint8), np.float32, (0, 0, 0), (255, 255, 255), layout="nchw").shape
    (1, 3, 2, 2)
    """
    dtype = np.dtype(dtype)
    mean_arr = np.asarray(mean, np.float32)
    std_arr = np.asarray(std, np.float32)
    identity = not mean_arr.any() and np.all(std_arr == 1.0)
    if layout != "nhwc" or channel_order != "rgb":
        return _reordered_input(pixels, dtype, mean_arr, std_arr, identity, quantization, layout, channel_order)
    if dtype.kind == "f":
        x = pixels.astype(np.float32)
        return (x if identity else (x - mean_arr) / std_arr).astype(dtype, copy=False)
    scale, zero_point = quantization if quantization and quantization[0] else (1.0, 0)
    # The converter stores the unit scale as float32 (often 0.99999988): within 1e-5 of 1,
    # x / scale rounds back to x for every pixel 0..255 (255 * 1e-5 << 0.5), so pass them through.
    if identity and abs(scale - 1.0) < 1e-5 and zero_point == 0 and dtype == np.uint8:
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    x = pixels.astype(np.float32)
    if not identity:
        x = (x - mean_arr) / std_arr
    info = np.iinfo(dtype)
    q = np.rint(x / np.float32(scale) + np.float32(zero_point))
    return np.clip(q, info.min, info.max).astype(dtype)


def _reordered_input(pixels: np.ndarray, dtype: np.dtype, mean: np.ndarray, std: np.ndarray, identity: bool,
                     quantization: tuple[float, int] | None, layout: str, channel_order: str) -> np.ndarray:
    """Return the input of an NCHW and/or BGR tensor: the reordering is a view, the cast its one copy."""
    view = pixels[..., ::-1] if channel_order == "bgr" else pixels
    axis = (slice(None), None, None) if layout == "nchw" else (slice(None),)
    if layout == "nchw":
        view = view.transpose(0, 3, 1, 2)
    scale, zero_point = quantization if quantization and quantization[0] else (1.0, 0)
    if dtype == np.uint8 and identity and abs(scale - 1.0) < 1e-5 and zero_point == 0:
        return np.ascontiguousarray(view)  # raw pixels: the one copy is the reordering itself
    x = np.array(view, dtype=np.float32, order="C")  # reorder + cast in one pass
    if not identity:
        x -= mean[axis]
        x /= std[axis]
    if dtype.kind == "f":
        return x if dtype == np.float32 else x.astype(dtype)
    info = np.iinfo(dtype)
    x /= np.float32(scale)
    x += np.float32(zero_point)
    np.rint(x, out=x)
    np.clip(x, info.min, info.max, out=x)
    return x.astype(dtype)


def probe_image(src: str | Path | bytes) -> ImageInfo:
    """Return the stored size, mode and format of ``src`` after checking that it decodes.

    The pixels are decoded (a truncated file raises :class:`ImageError`), at reduced size for
    JPEG, but nothing is converted: ``mode`` is what the file holds (``I;16``, ``P``, ``CMYK``...).
    """
    name = "<bytes>" if isinstance(src, bytes) else str(src)
    img = _open(src)
    info = ImageInfo(img.width, img.height, img.mode, img.format or "unknown")
    try:
        _guarded_decode(img, name, (256, 256))
    finally:
        img.close()
    return info


def is_image_file(path: str | Path) -> bool:
    """Return True when ``path`` has an image suffix edgetl reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def from_model_output(raw: np.ndarray, quantization: tuple[float, int] | None) -> np.ndarray:
    """Return an output tensor as float32, mapped through its ``(scale, zero_point)`` when it is quantized.

    The counterpart of :func:`to_model_input`.

    >>> from_model_output(np.array([[0, 128, 255]], np.uint8), (1 / 256, 0)).tolist()
    [[0.0, 0.5, 0.99609375]]
    """
    if not quantization:
        return raw.astype(np.float32, copy=False)
    scale, zero_point = quantization  # int32 first to avoid uint8 wrap-around
    return (raw.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale)

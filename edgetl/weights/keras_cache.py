"""Find the Keras MobileNet ImageNet weights in the Keras cache, downloading them only when allowed.

The files and URLs are the ones ``keras.applications`` uses, so a cache filled by plain Keras (or
copied from a connected machine) is reused as is. The cache folder is ``$KERAS_HOME/models`` when
``KERAS_HOME`` is set, else ``~/.keras/models``.

Offline behaviour is fast and explicit: a cached file is used without touching the network;
``EDGETL_OFFLINE=1`` forbids any download; otherwise one attempt is made with a short connect
timeout, and every failure becomes :class:`~edgetl.weights.WeightsUnavailable` naming the file,
the folder to put it in, and the URL to fetch it from.

>>> keras_weights_file("mobilenet_v2", include_top=False, alpha=1.0, rows=224).file_name
'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5'
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from . import WeightsUnavailable

OFFLINE_ENV = "EDGETL_OFFLINE"
CONNECT_TIMEOUT_S = 10.0

_V2_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
_V3_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_V2_ROWS = (96, 128, 160, 192, 224)
# keras.applications.mobilenet_v3.WEIGHTS_HASHES: (with top, without top) md5
_V3_HASHES = {
    "large_224_0.75_float": ("765b44a33ad4005b3ac83185abf1d0eb", "40af19a13ebea4e2ee0c676887f69a2e"),
    "large_224_1.0_float": ("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389"),
    "small_224_0.75_float": ("cb65d4e5be93758266aa0a7f2c6708b7", "ebdb5cc8e0b497cd13a7c275d475c819"),
    "small_224_1.0_float": ("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836"),
}


@dataclass(frozen=True)
class KerasWeightsFile:
    """One ImageNet weights file of ``keras.applications``: its cache name, URL and md5 (if Keras checks one)."""

    file_name: str
    url: str
    md5: str | None


def keras_cache_dir() -> Path:
    """Return the folder Keras caches application weights in (``$KERAS_HOME/models`` or ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def offline() -> bool:
    """Return True when ``EDGETL_OFFLINE`` asks edgetl never to download anything."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def keras_weights_file(backbone: str, include_top: bool, alpha: float, rows: int) -> KerasWeightsFile:
    """Return the Keras ImageNet weights file for a MobileNet backbone (``rows``: input height in px)."""
    if backbone == "mobilenet_v2":
        if float(alpha) not in _V2_ALPHAS:
            raise WeightsUnavailable(
                f"mobilenet_v2 has ImageNet weights only for alpha in {_V2_ALPHAS}, not {alpha}; "
                "pick one of those or use weights=None"
            )
        rows = rows if rows in _V2_ROWS else 224  # Keras does the same: other sizes get the 224 weights
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{'' if include_top else '_no_top'}.h5"
        return KerasWeightsFile(name, _V2_URL + name, None)
    if backbone in ("mobilenet_v3_small", "mobilenet_v3_large"):
        key = f"{backbone.rsplit('_', 1)[1]}_224_{alpha}_float"
        if key not in _V3_HASHES:
            raise WeightsUnavailable(
                f"{backbone} has ImageNet weights only for alpha 0.75 and 1.0, not {alpha}; "
                "pick one of those or use weights=None"
            )
        name = f"weights_mobilenet_v3_{key}{'' if include_top else '_no_top_v2'}.h5"
        return KerasWeightsFile(name, _V3_URL + name, _V3_HASHES[key][0 if include_top else 1])
    raise ValueError(f"{backbone!r} has no Keras ImageNet weights file")


def _unavailable(spec: KerasWeightsFile, cache: Path, why: str) -> WeightsUnavailable:
    return WeightsUnavailable(
        f"ImageNet weights file {spec.file_name} is not in {cache} and {why}.\n"
        f"  On a machine with internet access: download {spec.url}\n"
        f"  and copy it to {cache / spec.file_name} on this one (or set KERAS_HOME to the folder above 'models/').\n"
        "  On an air-gapped machine you can also pass the file directly: weights='/path/to/file.h5'.\n"
        "  To train from scratch instead, use weights=None."
    )


def resolve_keras_weights(spec: KerasWeightsFile, cache_dir: str | Path | None = None) -> Path:
    """Return the local path of ``spec``, downloading it into the cache if allowed and reachable.

    ``cache_dir`` is the folder holding ``models/`` (default: ``$KERAS_HOME`` or ``~/.keras``).
    Raises :class:`WeightsUnavailable` when the file is absent and cannot be downloaded.
    """
    home = Path(cache_dir) if cache_dir is not None else keras_cache_dir().parent
    cache = home / "models"
    cached = cache / spec.file_name
    if cached.is_file() and cached.stat().st_size > 0:
        return cached
    if offline():
        raise _unavailable(spec, cache, f"downloads are disabled ({OFFLINE_ENV}=1)")
    from edgetl._tf import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(CONNECT_TIMEOUT_S)  # urllib's urlretrieve has no timeout of its own
    try:
        cache.mkdir(parents=True, exist_ok=True)
        path = keras().utils.get_file(
            spec.file_name, spec.url, cache_subdir="models", cache_dir=str(home), file_hash=spec.md5
        )
    except Exception as exc:  # DNS failure, refused connection, timeout, proxy error, bad hash...
        raise _unavailable(spec, cache, f"could not be downloaded ({type(exc).__name__}: {exc})") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return Path(path)


def keras_weights_cached(spec: KerasWeightsFile, cache_dir: str | Path | None = None) -> bool:
    """Return True when ``spec`` is already in the Keras cache (no network access)."""
    home = Path(cache_dir) if cache_dir is not None else keras_cache_dir().parent
    path = home / "models" / spec.file_name
    return path.is_file() and path.stat().st_size > 0

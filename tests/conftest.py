"""Shared fixtures and the ``--profile`` option for per-profile latency tests."""

from __future__ import annotations

import os

# Keras 2 must be selected before anything imports TensorFlow (see edgetl/_tf.py).
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--profile",
        action="store",
        default=None,
        help="force the per-device latency tests to treat this host as the named profile (real hardware)",
    )


# The longest files first: with ``-n 2 --dist loadfile`` a file runs on one worker, in collection
# order, so the two README flows (minutes each) start at once and the short files fill in around them.
LONGEST_FIRST = ("test_quickstart.py", "test_readme_anomaly.py", "test_train.py", "test_cli_benchmark.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def _probe_cache(tmp_path_factory: pytest.TempPathFactory):
    """Models the tests load are remembered as probed in the session's tmp folder, not in ~/.cache."""
    os.environ["EDGETL_PROBE_CACHE"] = str(tmp_path_factory.mktemp("probe-cache") / "probed-models")
    yield
    os.environ.pop("EDGETL_PROBE_CACHE", None)


@pytest.fixture
def device_option(request: pytest.FixtureRequest) -> str | None:
    return request.config.getoption("--profile")


# --------------------------------------------------------------------------- tiny data and models

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def make_inspection_image(rng: np.random.Generator, defect: bool, size: int = 48) -> np.ndarray:
    """Return a grayscale 'solar cell' texture; defective ones carry a dark crack."""
    base = rng.normal(150, 12, (size, size)).clip(0, 255)
    base[:, :: max(size // 6, 2)] -= 40  # busbars, present in every cell
    if defect:
        row = int(rng.integers(size // 4, 3 * size // 4))
        base[row : row + max(size // 16, 2), :] = rng.normal(40, 5)
    return base.clip(0, 255).astype(np.uint8)


def aligned_part(rng: np.random.Generator, kind: int, defect: bool, size: int = 96) -> np.ndarray:
    """An aligned grey 'cell' (busbars at fixed places) of one of two kinds of texture; defects: a dark
    scratch or a bright spot. The anomaly tests' parts: good ones come in two kinds, like mono and poly cells."""
    img = rng.normal(150, 6, (size, size))
    img[:, size // 4 :: size // 4][:, :3] -= 50
    if kind == 1:  # the second kind of good part: a coarse grain texture
        img += np.kron(rng.normal(0, 15, (size // 8, size // 8)), np.ones((8, 8)))
    if defect:
        if rng.random() < 0.5:
            r = int(rng.integers(size // 5, 4 * size // 5))
            img[r : r + 4, size // 6 : 5 * size // 6] = 40.0
        else:
            r, c = (int(v) for v in rng.integers(size // 5, 4 * size // 5, 2))
            img[r : r + 10, c : c + 10] = 245.0
    return np.repeat(img.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)


@pytest.fixture(scope="session")
def make_part():
    """:func:`aligned_part`, for the anomaly tests."""
    return aligned_part


def write_dataset(root: Path, n_per_class: int = 12, seed: int = 0, size: int = 48) -> Path:
    """Write ``root/{good,defect}/*.png`` and return ``root``."""
    rng = np.random.default_rng(seed)
    for label in ("good", "defect"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(make_inspection_image(rng, label == "defect", size)).save(root / label / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small two-class folder data set of real PNG files (good/, defect/)."""
    return write_dataset(tmp_path_factory.mktemp("tiny_dataset"), n_per_class=16)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """A run folder as `edgetl train` writes it, holding a small trained flat Keras classifier.

    Built directly (not through `edgetl train`) so that export and runtime tests do not depend on
    the training code; it follows the run-folder contract of ``edgetl/run.py``.
    """
    import json

    from edgetl._tf import keras
    from edgetl_runtime.preprocess import load_image

    k = keras()
    k.utils.set_random_seed(0)
    size = 32
    labels = ["defect", "good"]
    files = sorted((str(p), p.parent.name) for p in tiny_dataset.glob("*/*.png"))
    x = np.stack([load_image(p, (size, size)) for p, _ in files]).astype("float32")
    y = np.array([labels.index(label) for _, label in files])
    inputs = k.Input((size, size, 3), name="image")
    h = k.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inputs)
    h = k.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(h)
    h = k.layers.BatchNormalization(momentum=0.8, name="bn1")(h)
    h = k.layers.ReLU(6.0, name="relu1")(h)
    h = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw2")(h)
    h = k.layers.BatchNormalization(momentum=0.8, name="bn2")(h)
    h = k.layers.ReLU(6.0, name="relu2")(h)
    h = k.layers.Conv2D(16, 1, use_bias=False, name="pw2")(h)
    h = k.layers.BatchNormalization(momentum=0.8, name="bn3")(h)
    h = k.layers.ReLU(6.0, name="relu3")(h)
    h = k.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = k.layers.Dense(2, activation="softmax", name="scores")(h)
    model = k.Model(inputs, outputs, name="tiny")
    model.compile(optimizer=k.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=8, verbose=0, shuffle=True)
    run_dir = tmp_path_factory.mktemp("tiny_run")
    model.save(run_dir / "model.keras")
    config = {
        "labels": labels,
        "input_size": [size, size],
        "color_mode": "rgb",
        "threshold": 0.5,
        "good_labels": ["good"],
        "backbone": "tiny_test_net",
        "weights": "none",
        "data": str(tiny_dataset),
        "data_hash": "test",
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    split = {"train": [list(f) for f in files[::2]], "val": [list(f) for f in files[1::2]]}
    (run_dir / "split.json").write_text(json.dumps(split))
    return run_dir

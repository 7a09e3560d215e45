"""Fixtures of the per-profile latency tests: host matching and the profiles' reference models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from edgetl_runtime.profiles import DeviceProfile, detect, load_profile

LABELS = ("defect", "good")


def profile_marks(profile: DeviceProfile) -> list[pytest.MarkDecorator]:
    """Return the pytest marks of ``profile``: ``slow`` plus its hardware family (edgetpu, jetson, rpi)."""
    marks = [pytest.mark.slow]
    if profile.export.format == "edgetpu":
        marks.append(pytest.mark.edgetpu)
    if profile.detect.tegra or profile.name.startswith("jetson"):
        marks.append(pytest.mark.jetson)
    if profile.name.startswith("raspberry-pi") or any("raspberry pi" in m.lower() for m in profile.detect.model_contains):
        marks.append(pytest.mark.rpi)
    return marks


def why_not_this_host(profile: DeviceProfile, forced: str | None) -> str | None:
    """Return why this host cannot stand for ``profile`` (a skip reason), or None when it can.

    ``forced`` is the ``--profile`` option: the named profile runs whatever detection says.
    """
    if forced:
        name = load_profile(forced).name
        return None if name == profile.name else f"--profile {forced} given, not {profile.name}"
    found = detect()
    if found.profile is not None and found.profile.name == profile.name:
        return None
    host = found.profile.name if found.profile is not None else "unmatched by any profile"
    matched, reasons = profile.detect.check(found.host)
    why = "; ".join(reasons)
    if matched:  # its rule holds, but a more specific profile won
        why = f"{why}; {host} has priority (pass --profile {profile.name} to force it)"
    return f"host is {host}, not {profile.name}: {why}"


def why_no_model(profile: DeviceProfile) -> str | None:
    """Return why the reference model cannot be built here (a skip reason), or None."""
    if profile.export.format == "edgetpu" and shutil.which("edgetpu_compiler") is None:
        return (f"{profile.name} runs Edge TPU-compiled models, but edgetpu_compiler is not on PATH: compile on an "
                "x86-64 Debian/Ubuntu host (sudo apt-get install edgetpu-compiler) and run the test there")
    return None


@pytest.fixture(scope="session")
def reference_model(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Callable[[DeviceProfile], Path]:
    """Return a function: profile -> path of its exported reference model, built once per session.

    The reference model is ``profile.reference``'s backbone at its input size with random weights
    (weights do not change latency) and a 2-class head like the trainer's, exported in the
    profile's format and the reference quantization, calibrated on 8 images, not validated.
    """
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("reference_models")

    def build(profile: DeviceProfile) -> Path:
        ref, fmt = profile.reference, profile.export.format
        key = (ref.backbone, ref.input_size, ref.quantization, fmt)
        if key in cache:
            return cache[key]
        from edgetl._tf import keras
        from edgetl.backbones import load_backbone
        from edgetl.exporters import ExportOptions, export
        from edgetl_runtime.contract import InputSpec, ModelSpec, Provenance

        k = keras()
        k.utils.set_random_seed(0)
        backbone = load_backbone(ref.backbone, weights="none", input_size=ref.input_size)
        pooled = k.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
        scores = k.layers.Dense(len(LABELS), activation="softmax", name="scores")(k.layers.Dropout(0.2)(pooled))
        model = k.Model(backbone.input, scores, name=f"reference_{ref.backbone}")
        options = ExportOptions(format=fmt, quantization=ref.quantization, calib_data=tiny_dataset, calib_samples=8,
                                validate=False)
        spec = ModelSpec(labels=LABELS, good_labels=("good",), input=InputSpec(*ref.input_size),
                         provenance=Provenance(backbone=ref.backbone))
        out = root / f"{ref.backbone}-{ref.input_size[0]}x{ref.input_size[1]}-{fmt}-{ref.quantization}{options.suffix}"
        result = export(model, options, out, spec=spec)
        path = result.path  # the artifact that ships: for the Edge TPU, the compiled file
        if fmt == "edgetpu" and result.note:
            pytest.skip(f"edgetpu_compiler did not compile the reference model: {result.note}")
        cache[key] = path
        return path

    return build

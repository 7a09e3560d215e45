"""The station's tests: a real model, a real ``edgetl-runtime serve`` process, real peers (see peers.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tests import their helpers from peers.py
from peers import Mosquitto, Station  # noqa: E402


@pytest.fixture(scope="session")
def station_model(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported as edgetl exports it for a device: TFLite int8, float head, its own threshold."""
    import edgetl

    out = tmp_path_factory.mktemp("station-model") / "model.tflite"
    return edgetl.export(tiny_run, edgetl.ExportOptions(quantization="int8"), out).path


@pytest.fixture(scope="session")
def part_images(tiny_dataset: Path) -> list[Path]:
    """The tiny data set's PNGs (good and defect parts), the images the station is fed."""
    return sorted(tiny_dataset.glob("*/*.png"))


@pytest.fixture
def stations(request: pytest.FixtureRequest):
    """Start stations with ``stations(model, workdir, *args)``; any still running at the end is killed."""
    started: list[Station] = []

    def start(*args: Any, **kwargs: Any) -> Station:
        station = Station(*args, **kwargs)
        started.append(station)
        return station

    yield start
    for station in started:
        if station.proc.poll() is None:
            station.kill()
        station.log.close()


# --------------------------------------------------------------------------- peers


@pytest.fixture
def mosquitto(tmp_path: Path):
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()

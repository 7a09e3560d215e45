"""The operator's page in a real browser (Debian's Chromium, driven by Playwright), the drift alarm, the threshold.

Screenshots go to ``<pytest tmp>/page-screenshots`` (printed at the end of each test) as artifacts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from peers import RUNTIME, wait_for
from PIL import Image
from edgetl_runtime.line.drift import ks_limits

CHROMIUM = "/usr/bin/chromium"
SIZE = 64


@pytest.fixture(scope="module")
def anomaly_model(tmp_path_factory, make_part) -> tuple[Path, Path]:
    """An anomaly detector fitted to good parts, exported fp32 (its heatmap overlays the rejects); and its parts."""
    from click.testing import CliRunner

    import edgetl
    from edgetl.cli import main

    root = tmp_path_factory.mktemp("page-parts")
    rng = np.random.default_rng(0)
    for folder, n, defect in (("train/good", 60, False), ("train/crack", 8, True), ("line", 30, False),
                              ("line-crack", 10, True)):  # fmt: skip
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(make_part(rng, i % 2, defect, SIZE)).save(root / folder / f"{folder.replace('/', '-')}-{i:03d}.png")
    run = tmp_path_factory.mktemp("page-run") / "anomaly"
    done = CliRunner().invoke(main, ["train", str(root / "train"), "-o", str(run), "--task", "anomaly", "--input-size",
                                     str(SIZE), "--dims", "32", "--max-false-alarm", "0.1", "--top-area", "0"])  # fmt: skip
    assert done.exit_code == 0, done.output
    model = edgetl.export(run, edgetl.ExportOptions(), run / "model.tflite").path
    return model, root


def _browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: apt-get install chromium (.ci/setup installs it)")
    from playwright.sync_api import sync_playwright

    manager = sync_playwright().start()
    browser = manager.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"])  # fmt: skip
    return manager, browser


def _feed(images: list[Path], folder: Path, start: int, n: int, transform=None) -> None:
    for i in range(start, start + n):
        src = images[i % len(images)]
        image = Image.open(src)
        if transform is not None:
            image = transform(image)
        name = f"p{i:05d}.png"
        image.save(folder / f".{name}")
        (folder / f".{name}").rename(folder / name)


def test_the_page_shows_the_line_live_and_raises_the_drift_alarm(anomaly_model, tmp_path, stations):
    model, root = anomaly_model
    shots = tmp_path / "page-screenshots"
    shots.mkdir()
    incoming = tmp_path / "in"
    incoming.mkdir()
    normal = sorted((root / "line").glob("*.png"))[:15] + sorted((root / "line-crack").glob("*.png"))[:3]
    station = stations(model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0", "--sink", f"rejects:{tmp_path / 'r'}",
                       "--drift-baseline", "216", "--token", "s3cret")  # fmt: skip
    manager, browser = _browser()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(station.url + "/")
        _feed(normal, incoming, 0, 432)  # parts like the training set: a baseline of 216, then a window of 200 more
        page.wait_for_function("document.getElementById('parts').textContent === '432'", timeout=90_000)
        page.wait_for_function("document.querySelectorAll('#strip figure img').length > 0", timeout=30_000)
        overlay = page.locator("#strip figure img").first.get_attribute("src")
        assert overlay.endswith("?overlay=1")  # an anomaly detector's rejects show their heatmap
        assert page.evaluate(f"fetch('{overlay}').then(r => r.status)") == 200
        page.wait_for_timeout(5500)  # the histogram and the charts refresh every 5 s
        drawn = page.evaluate("""() => { const c = document.getElementById('hist');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")  # fmt: skip
        assert drawn > 500, "the histogram of recent scores is drawn"
        assert page.text_content("#drift").startswith("drift: ok")
        page.screenshot(path=str(shots / "1-normal-parts.png"), full_page=True)

        darkened = lambda image: Image.eval(image.convert("L"), lambda v: v // 3)  # noqa: E731 - the lamp failed
        _feed(normal, incoming, 432, 120, darkened)
        page.wait_for_function("document.getElementById('drift').textContent.startsWith('drift: drift')", timeout=60_000)
        page.screenshot(path=str(shots / "2-drift.png"), full_page=True)
        page.wait_for_function("document.getElementById('parts').textContent === '552'", timeout=60_000)
        status = station.get("/api/status")  # every part recorded: the status and the metrics count the same parts
        drift = status["drift"]
        assert drift["state"] == "drift" and drift["statistic"] == "ks" and drift["distance"] > drift["on"] == ks_limits(216, 200)[0]
        metrics = urllib.request.urlopen(station.url + "/metrics", timeout=10).read().decode()
        decided = status["parts"]
        assert "edgetl_drift 1" in metrics and f'edgetl_parts_total{{status="decided"}} {decided}' in metrics
        assert f'edgetl_latency_ms_bucket{{le="+Inf"}} {decided}' in metrics and decided <= 552

        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        phone.goto(station.url + "/")
        phone.wait_for_function("document.getElementById('parts').textContent === '552'", timeout=60_000)
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scroll
        phone.screenshot(path=str(shots / "3-phone.png"), full_page=True)
        assert not errors, errors
    finally:
        browser.close()
        manager.stop()
    print(f"screenshots: {shots}")
    events = subprocess.run(["sqlite3", str(station.history), "SELECT kind FROM events"], capture_output=True, text=True)
    if events.returncode == 0:  # the sqlite3 shell is optional; the API test below reads the events itself
        assert "drift" in events.stdout.split()
    assert station.terminate() == 0


def test_the_page_survives_a_station_restart_without_a_reload(anomaly_model, tmp_path, stations):
    model, root = anomaly_model
    incoming = tmp_path / "in"
    incoming.mkdir()
    images = sorted((root / "line").glob("*.png"))
    first = stations(model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0")
    manager, browser = _browser()
    try:
        page = browser.new_page()
        page.goto(first.url + "/")
        _feed(images, incoming, 0, 5)
        page.wait_for_function("document.getElementById('parts').textContent === '5'", timeout=30_000)
        assert first.terminate() == 0
        page.wait_for_function("document.getElementById('state').textContent === 'unreachable'", timeout=10_000)
        second = stations(model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0", port=first.port)
        _feed(images, incoming, 5, 3)  # the same page, no reload: it reconnects and counts the new run's parts
        page.wait_for_function("document.getElementById('state').textContent === 'running'", timeout=30_000)
        page.wait_for_function("document.getElementById('parts').textContent === '3'", timeout=30_000)
        assert second.terminate() == 0
    finally:
        browser.close()
        manager.stop()


def test_a_threshold_change_needs_the_token_is_recorded_and_leaves_the_file(anomaly_model, tmp_path, stations):
    model, root = anomaly_model
    before = model.read_bytes()
    station = stations(model, tmp_path, "--source", "http", "--token", "s3cret")

    def post(body: dict, token: str | None) -> int:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(station.url + "/api/threshold", json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({"threshold": 0.3, "who": "anna"}, None) == 401
    assert post({"threshold": 0.3, "who": "anna"}, "wrong") == 401
    assert post({"threshold": 3.0, "who": "anna"}, "s3cret") == 400
    assert post({"threshold": 0.3, "who": "anna"}, "s3cret") == 200
    assert station.get("/api/status")["model"]["threshold"] == 0.3
    image = sorted((root / "line").glob("*.png"))[0].read_bytes()
    request = urllib.request.Request(station.url + "/api/inspect", image, {"Authorization": "Bearer s3cret"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert json.loads(reply.read())["threshold"] == 0.3  # the next part is decided at the new threshold
    assert station.terminate() == 0
    assert model.read_bytes() == before  # the model file is never edited
    from edgetl_runtime.line.history import History

    history = History(station.history, readonly=True)
    (event,) = history.events("threshold")
    history.close()
    assert (event["who"], event["old"] != 0.3, event["new"]) == ("anna", True, 0.3)
    plain = tmp_path / "plain"
    plain.mkdir()
    no_token = stations(model, plain, "--source", "http")
    assert no_token.get("/api/status")["state"] == "running"
    request = urllib.request.Request(no_token.url + "/api/threshold", b'{"threshold": 0.3, "who": "x"}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403  # a station without a token takes no threshold change


def test_history_plots_yield_per_hour_and_scores_per_day(anomaly_model, tmp_path, stations):
    model, root = anomaly_model
    incoming = tmp_path / "in"
    incoming.mkdir()
    _feed(sorted((root / "line").glob("*.png")), incoming, 0, 12)
    station = stations(model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0&once=1", http=False)
    assert station.wait(60) == 0
    out = subprocess.run([RUNTIME, "history", str(station.history), "--plot", str(tmp_path / "yield.png")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "yield.png").size == (1000, 700)

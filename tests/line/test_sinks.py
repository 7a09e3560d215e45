"""Every sink against a real peer: the same conformance test, then what each one promises when its peer fails."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from peers import ModbusPlc, Receiver, Subscriber, feed, free_port, wait_for

N = 16


def _defects(station) -> int:
    return sum(r[4] == "defect" for r in station.rows())


@pytest.fixture(params=["jsonl", "webhook", "mqtt", "rejects", "modbus"])
def sink(request, tmp_path):
    """``(sink string, delivered() -> count of what the peer got, expected(station) -> count it should get)``."""
    kind = request.param
    if kind == "jsonl":
        path = tmp_path / "out.jsonl"
        yield (f"jsonl:{path}", lambda: len(path.read_text().splitlines()) if path.exists() else 0,
               lambda station: len(station.rows()))  # fmt: skip
    elif kind == "webhook":
        receiver = Receiver()
        yield f"webhook:{receiver.url}", lambda: len(receiver.received), lambda station: len(station.rows())
        receiver.close()
    elif kind == "mqtt":
        broker = request.getfixturevalue("mosquitto")
        subscriber = Subscriber(broker.port, "plant/line1/st3")
        yield (f"mqtt://127.0.0.1:{broker.port}/plant/line1/st3", lambda: len(subscriber.ids()),
               lambda station: len(station.rows()))  # fmt: skip
        subscriber.close()
    elif kind == "rejects":
        folder = tmp_path / "rejects"
        yield f"rejects:{folder}", lambda: len(list(folder.glob("*"))) if folder.exists() else 0, _defects
    else:
        plc = ModbusPlc()
        yield f"modbus://127.0.0.1:{plc.port}/8?pulse_ms=20&max_delay_ms=60000", lambda: plc.rising_edges(8), _defects


def test_every_sink_gets_what_it_promises(sink, station_model, part_images, tmp_path, stations):
    spec, delivered, expected = sink
    incoming = tmp_path / "in"
    incoming.mkdir()
    feed(part_images, incoming, N)
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0", "--sink", spec)
    station.wait_rows(N, 60)
    want = expected(station)
    assert want > 0, "the parts include rejects and good ones"
    wait_for(lambda: delivered() >= want, 60, f"{want} deliveries to {spec}")
    status = station.get("/api/status")["sinks"][0]
    assert status["failures"] == 0 and status["pending"] == 0, status
    assert station.terminate() == 0, station.output()
    assert delivered() == want  # and nothing more


def test_mqtt_delivers_every_result_after_the_broker_comes_back(mosquitto, station_model, part_images, tmp_path,
                                                                stations):  # fmt: skip
    subscriber = Subscriber(mosquitto.port, "plant/line1/st3")
    try:
        incoming = tmp_path / "in"
        incoming.mkdir()
        station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0",
                           "--sink", f"mqtt://127.0.0.1:{mosquitto.port}/plant/line1/st3")  # fmt: skip
        feed(part_images, incoming, 10)
        wait_for(lambda: len(subscriber.ids()) >= 10, 60, "the first 10 messages")
        mosquitto.stop()  # the broker goes away mid-run; the line goes on
        assert mosquitto.database.is_file()  # it saved the subscriber's session: messages wait for it on restart
        feed(part_images, incoming, 20, start=10)
        station.wait_rows(30, 60)
        sink = wait_for(lambda: (s := station.get("/api/status")["sinks"][0])["failures"] and s, 30, "a failure")
        assert station.get("/api/status")["parts"] == 30 and sink["delivered"] == 10
        mosquitto.start()
        wait_for(lambda: len(subscriber.ids()) >= 30, 90, "every message once the broker is back")
        assert subscriber.ids() == {r[0] for r in station.rows()}
        assert station.terminate() == 0
    finally:
        subscriber.close()


def test_webhook_retries_until_the_receiver_takes_it_in_order(station_model, part_images, tmp_path, stations):
    receiver = Receiver(fail_first=3)
    try:
        incoming = tmp_path / "in"
        incoming.mkdir()
        feed(part_images, incoming, 8)
        station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0",
                           "--sink", f"webhook:{receiver.url}")  # fmt: skip
        station.wait_rows(8, 60)
        wait_for(lambda: len(receiver.received) >= 8, 60, "8 deliveries")
        assert [r["id"] for r in receiver.received] == [r[0] for r in station.rows()]  # each once, in order
        assert receiver.attempts[0] == 11 and station.get("/api/status")["sinks"][0]["failures"] == 3
        assert station.terminate() == 0
    finally:
        receiver.close()


def test_a_replaying_sink_resends_after_a_restart_what_it_had_not_delivered(station_model, part_images, tmp_path,
                                                                             stations):  # fmt: skip
    incoming = tmp_path / "in"
    incoming.mkdir()
    feed(part_images, incoming, 6)
    port = free_port()
    url = f"http://127.0.0.1:{port}/parts"  # nobody listens yet: nothing is delivered, the cursor stays
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0", "--sink", f"webhook:{url}")
    station.wait_rows(6, 60)
    station.kill()
    receiver = Receiver(port=port)
    try:  # the same sink string: its cursor in the history says what is still owed
        second = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0", "--sink", f"webhook:{url}")
        wait_for(lambda: len(receiver.received) >= 6, 60, "the 6 owed deliveries")
        assert sorted(r["id"] for r in receiver.received) == [r[0] for r in second.rows()]
        assert second.terminate() == 0
    finally:
        receiver.close()


def test_rejects_keep_images_under_the_quota_oldest_out(station_model, part_images, tmp_path, stations):
    incoming = tmp_path / "in"
    incoming.mkdir()
    feed(part_images, incoming, 40)
    size = part_images[0].stat().st_size
    quota_mb = 4 * size / 2**20  # room for about four images
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0",
                       "--sink", f"rejects:{tmp_path / 'rejects'}?quota_mb={quota_mb:.6f}")  # fmt: skip
    station.wait_rows(40, 60)
    defects = [r[0] for r in station.rows() if r[4] == "defect"]
    wait_for(lambda: station.get("/api/status")["sinks"][0]["delivered"] >= len(defects), 60, "every reject's image")
    assert station.get("/api/status")["sinks"][0]["removed"] > 0  # the quota took the oldest out
    kept = sorted(int(p.name.split("-")[0]) for p in (tmp_path / "rejects").iterdir())
    assert len(defects) > 4 and 1 <= len(kept) <= 5 and kept == sorted(defects)[-len(kept):]  # the newest stay
    assert station.terminate() == 0


def test_rejects_keep_the_image_of_a_file_the_folder_source_moved(station_model, part_images, tmp_path, stations):
    # Before: the rejects sink read the part's file after the folder source had moved it (move=DIR): every
    # reject's image was lost, and the sink counted a failure for each.
    incoming, done = tmp_path / "in", tmp_path / "done"
    incoming.mkdir()
    feed(part_images, incoming, 12)
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0&move={done}",
                       "--sink", f"rejects:{tmp_path / 'rejects'}")  # fmt: skip
    station.wait_rows(12, 60)
    defects = {r[0]: r[2] for r in station.rows() if r[4] == "defect"}  # row id -> part id (the file's name)
    assert defects, "the parts include rejects"
    wait_for(lambda: station.get("/api/status")["sinks"][0]["delivered"] >= len(defects), 60, "every reject's image")
    assert station.get("/api/status")["sinks"][0]["failures"] == 0
    kept = {int(p.name.split("-")[0]): p for p in (tmp_path / "rejects").iterdir()}
    assert sorted(kept) == sorted(defects)
    for row, part in defects.items():
        assert kept[row].read_bytes() == (done / part).read_bytes()  # the part's own bytes, moved meanwhile
    assert station.terminate() == 0


def test_modbus_pulses_within_the_gate_window_only(station_model, part_images, tmp_path, stations):
    plc = ModbusPlc()
    incoming = tmp_path / "in"
    incoming.mkdir()
    feed(part_images, incoming, 12)
    station = stations(station_model, tmp_path, "--source", f"dir:{incoming}?settle_ms=0",
                       "--sink", f"modbus://127.0.0.1:{plc.port}/register/5?value=7&max_delay_ms=60000")  # fmt: skip
    station.wait_rows(12, 60)
    defects = sum(r[4] == "defect" for r in station.rows())
    wait_for(lambda: sum(1 for w in plc.writes if w[0] == "register") >= defects, 30, "a register write per reject")
    assert {w[2] for w in plc.writes if w[0] == "register"} == {7}
    assert station.terminate() == 0
    time.sleep(0.1)
    assert sum(1 for w in plc.writes if w[0] == "register") == defects

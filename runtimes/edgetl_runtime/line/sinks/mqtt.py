"""``mqtt://HOST:PORT/TOPIC``: one JSON message per part, QoS 1, to an MQTT broker (at least once; paho-mqtt).

Each part's record is published to ``TOPIC`` (e.g. ``plant/line2/station3/results``); the
station's state, ``online`` or ``offline`` (the broker says ``offline`` for it when the connection
dies: the MQTT last will), is kept retained on ``TOPIC/state``, and station events (drift, a
threshold change) go to ``TOPIC/events``. A message counts as delivered when the broker
acknowledged it (PUBACK); while the broker is away nothing is published, the records wait in the
sink's queue and then in the history (the bounded offline buffer), and the client reconnects with
back-off (1 to 5 s); the reconnect wakes the sink's runner, so delivery resumes at once. Many
stations on one broker each use their own topic; a plant dashboard or the MES subscribes to
``plant/+/+/results``.

Options: ``mqtts://`` for TLS; ``mqtt://user@host/...`` with the password in ``EDGETL_MQTT_PASSWORD``;
``?client_id=NAME`` (default ``edgetl-<host>-<pid>``); ``?keepalive=30``. Needs
``pip install 'edgetl-runtime[serve]'``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from .base import SinkError
from ..sources.base import options as parse_options

PUBACK_TIMEOUT_S = 10.0


class MqttSink:
    """See the module docstring."""

    delivery, replay = "at-least-once", True

    def __init__(self, spec: str):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise SinkError(f"{spec}: the MQTT sink needs paho-mqtt: pip install 'edgetl-runtime[serve]'") from None
        url = urlsplit(spec)
        topic = unquote(url.path.lstrip("/"))
        if not url.hostname or not topic or any(c in topic for c in "#+"):
            raise SinkError(f"{spec}: give mqtt://HOST[:PORT]/TOPIC, a topic without wildcards (e.g. "
                            "mqtt://broker.local/plant/line2/station3)")  # fmt: skip
        opts = parse_options(url.query)
        unknown = set(opts) - {"client_id", "keepalive"}
        if unknown:
            raise SinkError(f"{spec}: unknown option(s) {sorted(unknown)}; this sink takes client_id, keepalive")
        self.name, self.topic = spec.split("?")[0], topic
        self._connected = threading.Event()
        self.wake: Callable[[], None] | None = None  # set by the runner: called on (re)connect
        client_id = opts.get("client_id") or f"edgetl-{socket.gethostname()}-{os.getpid()}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if url.username:
            client.username_pw_set(unquote(url.username), os.environ.get("EDGETL_MQTT_PASSWORD", url.password))
        if url.scheme == "mqtts":
            client.tls_set()
        client.will_set(f"{topic}/state", "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *args: self._connected.clear()
        client.reconnect_delay_set(min_delay=1, max_delay=5)  # a broker that is back is found within 5 s
        client.connect_async(url.hostname, url.port or (8883 if url.scheme == "mqtts" else 1883),
                             keepalive=int(opts.get("keepalive", 30)))  # fmt: skip
        client.loop_start()
        self._client = client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if not getattr(reason, "is_failure", False):
            client.publish(f"{self.topic}/state", "online", qos=1, retain=True)
            self._connected.set()
            if self.wake is not None:
                self.wake()

    def details(self) -> dict[str, Any]:
        return {"connected": self._connected.is_set()}

    def send(self, record: dict[str, Any], result: Any) -> None:
        self._publish(self.topic, record)

    def event(self, record: dict[str, Any]) -> None:
        """Publish a station event (drift, a threshold change) to ``TOPIC/events``."""
        self._publish(f"{self.topic}/events", record)

    def _publish(self, topic: str, record: dict[str, Any]) -> None:
        if not self._connected.wait(0.5):
            raise ConnectionError(f"{self.name}: not connected to the broker (reconnecting)")
        info = self._client.publish(topic, json.dumps(record), qos=1)
        info.wait_for_publish(PUBACK_TIMEOUT_S)
        if not info.is_published():
            raise TimeoutError(f"{self.name}: the broker did not acknowledge within {PUBACK_TIMEOUT_S:g} s")

    def close(self) -> None:
        try:
            if self._connected.is_set():
                self._client.publish(f"{self.topic}/state", "offline", qos=1, retain=True).wait_for_publish(2.0)
            self._client.disconnect()
        finally:
            self._client.loop_stop()

"""Where decisions go. A sink is one small protocol; a new PLC protocol or message bus is a new file here.

Sink strings (``edgetl-runtime serve --sink SINK``, repeatable):

===================================  =========================================================  ===============
``sqlite:PATH``                      the history (always on; ``--history PATH`` names it)         exactly once
``jsonl:PATH``                       one JSON line per part (``jsonl.py``)                        at least once
``mqtt://HOST:PORT/TOPIC``           one JSON message per part, QoS 1 (``mqtt.py``, paho-mqtt)   at least once
``webhook:URL``                      one JSON POST per part (``webhook.py``)                      at least once
``rejects:DIR[?quota_mb=500]``       each reject's image (and heatmap overlay), oldest out first  at most once
``modbus://HOST:PORT/COIL``          pulse a PLC coil (or write a register) per reject           at most once
===================================  =========================================================  ===============

A part's row is committed to the history first; then each sink gets it, in its own thread, from
its own bounded queue: a slow or failing sink (broker down, disk full) never holds up inspection.
A failed delivery is retried with back-off and reported in the status. "At least once" sinks keep
a cursor in the history: when their queue overflows they catch up from the history's rows, and
after a restart they resend what had not been delivered (a receiver may see a part twice, never
miss one). "At most once" sinks are those for which a late delivery is wrong: a reject pulse for
a part that has left the gate long ago, an image that is no longer in memory.

Every implementation passes the same conformance test (tests/line/test_sinks.py).
"""

from __future__ import annotations

from .base import Sink, SinkError
from .runner import SinkRunner

def open_sink(spec: str) -> Sink:
    """Return the :class:`Sink` for a sink string (see the module docstring)."""
    spec = str(spec).strip()
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind == "jsonl":
        from .jsonl import JsonlSink

        return JsonlSink(rest)
    if kind == "mqtt":
        from .mqtt import MqttSink

        return MqttSink(spec)
    if kind == "webhook":
        from .webhook import WebhookSink

        return WebhookSink(rest)
    if kind == "rejects":
        from .rejects import RejectsSink

        return RejectsSink(rest)
    if kind == "modbus":
        from .modbus import ModbusSink

        return ModbusSink(spec)
    if kind == "sqlite":
        raise SinkError(f"--sink {spec}: the history is always written; name its file with --history {rest}")
    raise SinkError(f"--sink {spec}: not a sink edgetl knows: jsonl:PATH, mqtt://HOST:PORT/TOPIC, webhook:URL, "
                    "rejects:DIR, modbus://HOST:PORT/COIL")  # fmt: skip


__all__ = ["Sink", "SinkError", "SinkRunner", "open_sink"]

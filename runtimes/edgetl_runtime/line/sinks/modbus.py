"""``modbus://HOST:PORT/COIL``: the reject gate of a PLC, over Modbus TCP (pymodbus; at most once).

For each defect verdict the coil ``COIL`` is set, held for ``pulse_ms`` (default 200) and reset:
the PLC's reject gate fires on the pulse. ``modbus://HOST:PORT/register/ADDR?value=1`` writes
``value`` to holding register ``ADDR`` instead (a PLC that latches and resets it itself). ``?unit=``
sets the Modbus unit (device) id (default 1). Good parts send nothing.

At most once, on purpose: a pulse sent late (after a reconnect or a restart) would reject whichever
part is at the gate by then. A failed write is retried only within ``max_delay_ms`` (default
1000) of the part's decision, then dropped and counted; wire the gate so that a missing pulse
stops the line or diverts the part (fail safe), and watch the sink's failures in the status.
Needs ``pip install 'edgetl-runtime[serve]'``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from .base import SinkError
from ..sources.base import options as parse_options

OPTIONS = {"pulse_ms", "unit", "value", "max_delay_ms"}


class ModbusSink:
    """See the module docstring."""

    delivery, replay = "at-most-once", False

    def __init__(self, spec: str):
        try:
            from pymodbus.client import ModbusTcpClient
        except ImportError:
            raise SinkError(f"{spec}: the Modbus sink needs pymodbus: pip install 'edgetl-runtime[serve]'") from None
        url = urlsplit(spec)
        path = [p for p in url.path.split("/") if p]
        opts = parse_options(url.query)
        try:
            if len(path) == 1:
                self.kind, self.address = "coil", int(path[0])
            elif len(path) == 2 and path[0] == "register":
                self.kind, self.address = "register", int(path[1])
            else:
                raise ValueError
            self.pulse_s = float(opts.get("pulse_ms", 200)) / 1000
            self.unit = int(opts.get("unit", 1))
            self.value = int(opts.get("value", 1))
            self.max_delay_s = float(opts.get("max_delay_ms", 1000)) / 1000
        except ValueError:
            raise SinkError(f"{spec}: give modbus://HOST:PORT/COIL or modbus://HOST:PORT/register/ADDR with numbers, "
                            "options pulse_ms, unit, value, max_delay_ms") from None  # fmt: skip
        if not url.hostname or set(opts) - OPTIONS:
            raise SinkError(f"{spec}: give modbus://HOST:PORT/COIL[?pulse_ms=200&unit=1]; options: {sorted(OPTIONS)}")
        self.name = spec
        self.dropped_late = 0
        self._client = ModbusTcpClient(url.hostname, port=url.port or 502, timeout=1, retries=0)

    def wants(self, record: dict[str, Any]) -> bool:
        return record.get("verdict") == "defect"

    def details(self) -> dict[str, Any]:
        return {"dropped_late": self.dropped_late}

    def send(self, record: dict[str, Any], result: Any) -> None:
        if record.get("verdict") != "defect":
            return
        age = time.time() - datetime.fromisoformat(record["time"]).timestamp()
        if age > self.max_delay_s:  # the part has passed the gate: a pulse now would reject another one
            self.dropped_late += 1
            return
        if not self._client.connected and not self._client.connect():
            raise ConnectionError(f"{self.name}: cannot connect to the PLC")
        if self.kind == "register":
            self._check(self._write("write_register", self.address, self.value))
            return
        self._check(self._write("write_coil", self.address, True))
        time.sleep(self.pulse_s)
        self._check(self._write("write_coil", self.address, False))

    def _write(self, method: str, address: int, value: Any) -> Any:
        call = getattr(self._client, method)
        try:
            return call(address, value, device_id=self.unit)  # pymodbus >= 3.10
        except TypeError:
            return call(address, value, slave=self.unit)  # older pymodbus 3.x

    def _check(self, reply: Any) -> None:
        if reply is None or reply.isError():
            raise ConnectionError(f"{self.name}: the PLC refused the write ({reply})")

    def close(self) -> None:
        self._client.close()

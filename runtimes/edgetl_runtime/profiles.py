"""Device profiles: ``devices/*.toml`` read into frozen dataclasses, and detection of this host.

A profile says what a target wants (export format and quantization), how to run there (device
string, CPU threads, engine options), and what "fast enough" means (latency and memory budgets
for a reference model). Every ``[runtime]`` field reaches the engine: :func:`edgetl_runtime.load`
with ``profile=`` applies the device, the threads and the options (LiteRT delegate options or ONNX
Runtime provider options, see :mod:`edgetl_runtime.backends`). Adding a device is adding a TOML file; the shipped ones
live in the repository's top-level ``devices/`` folder and are installed with ``edgetl-runtime``
as package data. ``EDGETL_DEVICES_DIR`` (one or more folders, ``os.pathsep``-separated) adds
user profiles; a user profile with a shipped name replaces the shipped one.

Device strings follow :func:`edgetl_runtime.backends.parse_device` (the one definition).

>>> profile = load_profile("cpu-x86_64")
>>> (profile.export.format, profile.export.quantization, profile.runtime.device)
('tflite', 'int8', 'cpu')
>>> detect(HostInfo(arch="aarch64", model="Raspberry Pi 4 Model B Rev 1.4")).profile.name
'raspberry-pi-4'
"""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from .backends import DEVICE_GRAMMAR, DeviceError, EngineOptionError, check_engine_options, parse_device
from .contract import FORMATS, MAX_INPUT_SIDE, QUANTIZATIONS
from .errors import EdgetlRuntimeError

ENV_DEVICES_DIR = "EDGETL_DEVICES_DIR"
EDGETPU_LINKS = ("usb", "pci")
# Fields of earlier profile files that did nothing, and what replaced them.
REMOVED_FIELDS = {
    "runtime.backend": "the engine follows from the model file and the device string; delete the line",
    "runtime.providers": "the ONNX Runtime providers follow from the device string (tensorrt, cuda, cpu); "
                         "delete the line",
    "runtime.delegate_options": "renamed [runtime.options]",
}
# USB ids of the Coral USB Accelerator: before its firmware is loaded it enumerates as Global
# Unichip (1a6e:089a), afterwards as Google (18d1:9302). Either means "an Edge TPU is plugged in".
EDGETPU_USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))
# Which device kinds can run which export format (the exporter and runtime agree on these pairs).
_DEVICES_OF_FORMAT = {"tflite": ("cpu",), "edgetpu": ("edgetpu",), "onnx": ("cpu", "cuda", "tensorrt")}


MAX_THREADS = 256
# How a reference latency was had: timed on the device, published for it, or derived from other figures.
FIGURE_BASES = ("measured", "published", "estimated")
SOURCE_HINT = ("say where the figure comes from: measured (the command, the machine, the date), published (the "
               "URL and the table row), or estimated (from which figures, how)")


class ProfileError(EdgetlRuntimeError, ValueError):
    """A device profile is missing, unparsable, or has a missing/unknown/invalid field."""

    def __init__(self, path: object, field_name: str | None, reason: str):
        self.path = str(path)
        self.field = field_name
        self.reason = reason
        where = f"{self.path}: field '{field_name}'" if field_name else self.path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Detection:
    """How to recognise the device. Every criterion given must hold; an empty rule never matches.

    ``arch``: any of these ``platform.machine()`` values; ``model_contains``: any of these
    substrings of ``/proc/device-tree/model``; ``edgetpu``: an Edge TPU on this link ("usb" or
    "pci"); ``tegra``: an NVIDIA Tegra SoC. Among matches the highest ``priority`` wins.
    """

    arch: tuple[str, ...] = ()
    model_contains: tuple[str, ...] = ()
    edgetpu: str | None = None
    tegra: bool | None = None
    priority: int = 0

    def check(self, host: HostInfo) -> tuple[bool, tuple[str, ...]]:
        """Return (all criteria hold, one reason per criterion saying whether and why)."""
        results: list[tuple[bool, str]] = []
        if self.arch:
            ok = host.arch.lower() in {a.lower() for a in self.arch}
            results.append((ok, f"architecture {host.arch!r} {'is' if ok else 'is not'} one of {', '.join(self.arch)}"))
        if self.model_contains:
            hit = next((s for s in self.model_contains if s.lower() in host.model.lower()), None)
            shown = host.model or "(no /proc/device-tree/model)"
            results.append((hit is not None, f"device-tree model {shown!r} contains {hit!r}" if hit
                            else f"device-tree model {shown!r} contains none of {', '.join(self.model_contains)}"))
        if self.edgetpu is not None:
            ok = self.edgetpu in host.edgetpu
            results.append((ok, f"Edge TPU on {self.edgetpu} {'found' if ok else 'not found'}"
                            + (f" ({'; '.join(host.evidence)})" if ok and host.evidence else "")))
        if self.tegra is not None:
            ok = host.tegra == self.tegra
            results.append((ok, f"NVIDIA Tegra {'present' if host.tegra else 'absent'} (wanted {'present' if self.tegra else 'absent'})"))
        if not results:
            return False, ("no detection criteria: select this profile by name",)
        return all(ok for ok, _ in results), tuple(reason for _, reason in results)


@dataclass(frozen=True)
class ExportTarget:
    """What the exporter should produce for the device: format, quantization, (height, width)."""

    format: str
    quantization: str
    input_size: tuple[int, int]


@dataclass(frozen=True)
class RuntimeSettings:
    """How the runtime runs there: device string, CPU threads, engine options (all reach the engine)."""

    device: str
    threads: int
    options: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Budget:
    """Latency (ms, per image, end to end) and resident-memory (MB) limits for the reference model.

    ``source``: where the limits come from (a profile file must say: measured how, or derived from
    which figure); empty only for a budget built in code.
    """

    p50_ms: float
    p99_ms: float
    memory_mb: float
    source: str = ""


@dataclass(frozen=True)
class ReferenceModel:
    """The model the budget is stated for: backbone name, (height, width), quantization.

    ``device_p50_ms``: its end-to-end p50 latency on the device, and ``overhead_ms`` the share of it
    that does not grow with the model (JPEG decode, resize, postprocess). ``edgetl select`` scales
    ``device_p50_ms - overhead_ms`` to estimate other models' latency on a device it cannot
    measure; without it, it cannot. ``basis`` says how the model's share of that figure was had
    (one of :data:`FIGURE_BASES`) and ``source`` where it, and the overhead, come from; a profile
    file that gives ``device_p50_ms`` must give both.
    """

    backbone: str
    input_size: tuple[int, int]
    quantization: str
    device_p50_ms: float | None = None
    overhead_ms: float = 0.0
    basis: str | None = None
    source: str = ""


@dataclass(frozen=True)
class PublishedFigure:
    """A public latency figure for context (approximate; ``source`` is its URL)."""

    model: str
    device: str
    latency_ms: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class DeviceProfile:
    """One target device, as read from its TOML file (``path``)."""

    name: str
    description: str
    detect: Detection
    export: ExportTarget
    runtime: RuntimeSettings
    budget: Budget
    reference: ReferenceModel
    published: tuple[PublishedFigure, ...]
    path: Path


# --------------------------------------------------------------------------- schema checking


class _Reader:
    """Typed access to one TOML table that reports the file and dotted field name on error."""

    def __init__(self, path: Path, table: Any, prefix: str, allowed: Iterable[str]):
        self.path, self.prefix = path, prefix
        if not isinstance(table, dict):
            raise ProfileError(path, prefix.rstrip("."), f"must be a table, got {type(table).__name__}")
        self.table = table
        unknown = sorted(set(table) - set(allowed))
        removed = [key for key in unknown if prefix + key in REMOVED_FIELDS]
        if removed:
            raise ProfileError(path, prefix + removed[0], f"no longer a profile field: {REMOVED_FIELDS[prefix + removed[0]]}")
        if unknown:
            raise ProfileError(path, prefix + unknown[0], f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def fail(self, key: str, reason: str) -> ProfileError:
        return ProfileError(self.path, self.prefix + key, reason)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "missing (required)")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a budget of `true` is a mistake, not 1 ms.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(key, f"must be {names}, got {type(value).__name__} {value!r}")
        return value

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.get(key, str)
        if value not in options:
            raise self.fail(key, f"{value!r} is not one of {', '.join(options)}")
        return value

    def positive(self, key: str, kind: type | tuple[type, ...] = (int, float)) -> Any:
        value = self.get(key, kind)
        if not math.isfinite(value):  # TOML has nan and inf: NaN never passes a budget, inf always does
            raise self.fail(key, f"must be a finite number, got {value}")
        if value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        return value

    def text(self, key: str, hint: str) -> str:
        """Return a required non-empty string; ``hint`` says what it should hold."""
        if key not in self.table:
            raise self.fail(key, f"missing (required): {hint}")
        value = self.get(key, str)
        if not value.strip():
            raise self.fail(key, f"is empty: {hint}")
        return value.strip()

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, list, default)
        if not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        return tuple(value)

    def size(self, key: str) -> tuple[int, int]:
        value = self.get(key, list)
        if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_INPUT_SIDE for v in value):
            raise self.fail(key, f"must be [height, width] in pixels, two integers from 1 to {MAX_INPUT_SIDE}, got {value!r:.80}")
        return (value[0], value[1])

    def sub(self, key: str, allowed: Iterable[str], default: Any = ...) -> _Reader:
        return _Reader(self.path, self.get(key, dict, default), f"{self.prefix}{key}.", allowed)


def _parse(path: Path, data: dict[str, Any]) -> DeviceProfile:
    top = _Reader(path, data, "", ("name", "description", "detect", "export", "runtime", "budget", "reference", "published"))
    name = top.get("name", str)
    if name != path.stem:
        raise top.fail("name", f"{name!r} must equal the file name without .toml ({path.stem!r})")
    d = top.sub("detect", ("arch", "model_contains", "edgetpu", "tegra", "priority"))
    detection = Detection(
        arch=d.strings("arch", []), model_contains=d.strings("model_contains", []),
        edgetpu=d.choice("edgetpu", EDGETPU_LINKS) if "edgetpu" in d.table else None,
        tegra=d.get("tegra", bool, None), priority=d.get("priority", int, 0))
    e = top.sub("export", ("format", "quantization", "input_size"))
    export = ExportTarget(e.choice("format", FORMATS), e.choice("quantization", QUANTIZATIONS), e.size("input_size"))
    r = top.sub("runtime", ("device", "threads", "options"))
    device = r.get("device", str)
    try:
        kind = parse_device(device).kind
    except DeviceError:
        raise r.fail("device", f"{device!r} is not a device string ({DEVICE_GRAMMAR})") from None
    if kind not in _DEVICES_OF_FORMAT[export.format]:
        raise r.fail("device", f"{device!r} cannot run export format {export.format!r}; use "
                     f"{' or '.join(_DEVICES_OF_FORMAT[export.format])}")
    options = r.get("options", dict, {})
    for key, value in options.items():
        if not isinstance(value, (str, int, float, bool)):
            raise r.fail(f"options.{key}", f"must be a string, number or boolean, got {type(value).__name__}")
    try:
        check_engine_options(export.format, device, options)
    except EngineOptionError as exc:
        raise r.fail("options", str(exc)) from None
    threads = r.positive("threads", int)
    if threads > MAX_THREADS:
        raise r.fail("threads", f"{threads} CPU threads; at most {MAX_THREADS} (edge devices have 4 to 12 cores)")
    runtime = RuntimeSettings(device, threads, dict(options))
    b = top.sub("budget", ("p50_ms", "p99_ms", "memory_mb", "source"))
    budget = Budget(float(b.positive("p50_ms")), float(b.positive("p99_ms")), float(b.positive("memory_mb")),
                    b.text("source", SOURCE_HINT))
    if budget.p99_ms < budget.p50_ms:
        raise b.fail("p99_ms", f"{budget.p99_ms} is below p50_ms {budget.p50_ms}; p99 can never be faster than p50")
    m = top.sub("reference", ("backbone", "input_size", "quantization", "device_p50_ms", "overhead_ms", "basis",
                              "source"))  # fmt: skip
    ref_p50 = float(m.positive("device_p50_ms")) if "device_p50_ms" in m.table else None
    overhead = float(m.get("overhead_ms", (int, float), 0.0))
    for key in ("overhead_ms", "basis", "source"):
        if key in m.table and ref_p50 is None:
            raise m.fail(key, "describes device_p50_ms: give device_p50_ms too, or delete the line")
    if not (math.isfinite(overhead) and 0.0 <= overhead < (ref_p50 or math.inf)):
        raise m.fail("overhead_ms", f"must be >= 0 and below device_p50_ms {ref_p50}, got {overhead}")
    basis, source = None, ""
    if ref_p50 is not None:
        if "basis" not in m.table:
            raise m.fail("basis", f"missing (required with device_p50_ms): one of {', '.join(FIGURE_BASES)}")
        basis, source = m.choice("basis", FIGURE_BASES), m.text("source", SOURCE_HINT)
    reference = ReferenceModel(m.get("backbone", str), m.size("input_size"), m.choice("quantization", QUANTIZATIONS),
                               ref_p50, overhead, basis, source)
    figures = []
    for i, item in enumerate(top.get("published", list, [])):
        p = _Reader(path, item, f"published[{i}].", ("model", "device", "latency_ms", "source", "note"))
        figures.append(PublishedFigure(p.get("model", str), p.get("device", str), float(p.positive("latency_ms")),
                                       p.get("source", str), p.get("note", str, "")))
    return DeviceProfile(name, top.get("description", str), detection, export, runtime, budget, reference,
                         tuple(figures), path)


# --------------------------------------------------------------------------- finding and loading


def profile_dirs() -> list[Path]:
    """Return the folders searched for ``*.toml``, highest precedence first (user dirs, then shipped)."""
    dirs = [Path(p).expanduser() for p in os.environ.get(ENV_DEVICES_DIR, "").split(os.pathsep) if p]
    return [*dirs, Path(str(resources.files("edgetl_runtime") / "devices"))]


MAX_PROFILE_BYTES = 1 << 20  # a profile is a few kilobytes of TOML


def _read(path: Path) -> DeviceProfile:
    from .safefile import DataError, loads_toml, read_regular

    try:
        data = loads_toml(read_regular(path, MAX_PROFILE_BYTES).decode("utf-8"), "the profile")
    except DataError as exc:
        raise ProfileError(path, None, str(exc).removeprefix("the profile: ")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(path, None, f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return _parse(path.resolve(), data)


def _profile_files() -> dict[str, Path]:
    """Return ``{name: file}`` of the profiles found; a ``*.toml`` that is not a regular file (a pipe) is passed over."""
    found: dict[str, Path] = {}
    for folder in profile_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
            if path.is_file():  # follows links; a FIFO or device named *.toml is never opened
                found.setdefault(path.stem, path)
    return found


def load_profile(name_or_path: str | os.PathLike[str]) -> DeviceProfile:
    """Return the profile named ``name_or_path`` (e.g. "coral-usb") or read from that TOML file."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text or (os.altsep and os.altsep in text):
        path = Path(text).expanduser()
        if not path.exists():
            raise ProfileError(path, None, "no such profile file")
        return _read(path)  # a pipe or device named *.toml is refused there, unopened
    files = _profile_files()
    if text not in files:
        known = ", ".join(sorted(files)) or "none"
        raise ProfileError(text, None, f"unknown device profile; known: {known}. To define it, put {text}.toml in a "
                           f"folder named by ${ENV_DEVICES_DIR} (see docs/devices.md).")
    return _read(files[text])


def list_profiles() -> list[DeviceProfile]:
    """Return every available profile (shipped and from ``EDGETL_DEVICES_DIR``), sorted by name."""
    return [_read(path) for _, path in sorted(_profile_files().items())]


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class HostInfo:
    """What detection looks at: CPU architecture, device-tree model, Edge TPU links, Tegra.

    Build one by hand to ask "what would a Pi 5 with a Coral USB get?", or call ``probe()``.
    """

    arch: str
    model: str = ""
    edgetpu: tuple[str, ...] = ()  # links with an Edge TPU: "usb" and/or "pci"
    tegra: bool = False
    evidence: tuple[str, ...] = ()  # where the Edge TPU/Tegra findings came from, for reasons

    @classmethod
    def probe(cls, root: str | os.PathLike[str] = "/", arch: str | None = None) -> HostInfo:
        """Return this host's facts, read from files under ``root`` (a fake tree works for tests)."""
        base = Path(root)
        model = _read_text(base / "proc/device-tree/model")
        links: list[str] = []
        evidence: list[str] = []
        apex = sorted((base / "dev").glob("apex_*")) if (base / "dev").is_dir() else []
        if apex:
            links.append("pci")
            evidence.append(f"{apex[0].name} in /dev")
        usb_root = base / "sys/bus/usb/devices"
        for dev in sorted(usb_root.iterdir()) if usb_root.is_dir() else ():
            ids = (_read_text(dev / "idVendor").lower(), _read_text(dev / "idProduct").lower())
            if ids in EDGETPU_USB_IDS:
                links.append("usb")
                evidence.append(f"USB {ids[0]}:{ids[1]} at {dev.name}")
                break
        tegra_release = base / "etc/nv_tegra_release"
        tegra = tegra_release.is_file() or "nvidia jetson" in model.lower()
        if tegra:
            evidence.append("/etc/nv_tegra_release" if tegra_release.is_file() else "device-tree model names NVIDIA Jetson")
        return cls(arch or platform.machine(), model, tuple(links), tegra, tuple(evidence))


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b"").decode("utf-8", "replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class DetectionResult:
    """The best profile for a host (None if none matches), why, and every match, best first."""

    profile: DeviceProfile | None
    reasons: tuple[str, ...]
    candidates: tuple[DeviceProfile, ...]
    host: HostInfo


def detect(host: HostInfo | None = None, profiles: Iterable[DeviceProfile] | None = None) -> DetectionResult:
    """Return which profile matches ``host`` (default: ``HostInfo.probe()``) and the reasons."""
    host = host if host is not None else HostInfo.probe()
    pool = list(profiles) if profiles is not None else list_profiles()
    matches = [(p, p.detect.check(host)[1]) for p in pool if p.detect.check(host)[0]]
    # Most specific first: explicit priority, then how many criteria the rule names.
    matches.sort(key=lambda m: (-m[0].detect.priority, -len(m[1]), m[0].name))
    if not matches:
        summary = f"arch={host.arch!r}, model={host.model or '-'!r}, edgetpu={','.join(host.edgetpu) or 'none'}, tegra={host.tegra}"
        return DetectionResult(None, (f"no profile matches this host ({summary}); pass --profile NAME or add a "
                                      f"profile to ${ENV_DEVICES_DIR}",), (), host)
    best, reasons = matches[0]
    others = tuple(f"also matches {p.name} (lower priority)" for p, _ in matches[1:])
    return DetectionResult(best, reasons + others, tuple(p for p, _ in matches), host)

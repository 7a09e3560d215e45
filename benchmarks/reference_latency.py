"""Print the end-to-end and inference p50 of the profiles' reference models on this host, side by side.

The device profiles' latency figures (``[reference] device_p50_ms``) come from a reference model:
MobileNetV3-Small (int8) was the CPU profiles' one, MobileNetV2 (int8) is the one the Raspberry Pi
4's published XNNPACK figure is for, and EfficientNet-Lite0 (int8, 224 px) is edgetl's own default.
This script builds each exactly as ``edgetl select`` builds a latency reference (backbone + global
pooling + a 2-class softmax head, random weights: weights do not change the speed; exported in the
profile's format and quantization, calibrated on 16 images of ``--calib``), loads each once with the
profile's runtime settings, and times ``predict`` of a 640x480 JPEG in interleaved blocks (the order
rotates each block) so that machine noise hits all alike. It prints, per model, its MACs, the p50
end to end (what a budget states) and of the inference alone, and how well the MAC rule of
``edgetl select`` (inference time proportional to MACs) carries each model's inference time over
from every other: ``predicted / measured`` (> 1: the rule errs on the slow side).

    .venv/bin/python benchmarks/reference_latency.py --calib data/elpv/train [--profile cpu-x86_64]
        [--backbones mobilenet_v3_small,mobilenet_v2,efficientnet_lite0] [--runs 100] [--blocks 6]
        [--cache-dir runs/bench-cache] [--markdown F]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import add_state_options, start

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "runs" / "bench-cache"
BACKBONES = ("mobilenet_v3_small", "mobilenet_v2", "efficientnet_lite0")


def build(backbone: str, size: int, profile, calib: Path, cache: Path) -> tuple[Path, int]:
    """Return ``(exported reference file, its backbone's MACs)``, exported once into ``cache``."""
    from edgetl._tf import keras
    from edgetl.backbones import load_backbone
    from edgetl.selection.latency import count_macs, export_reference

    model = load_backbone(backbone, weights=None, input_size=size)
    macs = count_macs(model)
    path = export_reference(model, backbone, size, profile, calib, cache)
    keras().backend.clear_session()
    return path, macs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calib", type=Path, required=True, help="folder of images to calibrate the int8 files on")
    parser.add_argument("--profile", default="cpu-x86_64", help="device profile whose export and runtime settings apply")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=100, help="timed predictions per model and block")
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    add_state_options(parser)
    args = parser.parse_args(argv)

    from edgetl_runtime import load
    from edgetl_runtime.bench import synthetic_image
    from edgetl_runtime.profiles import load_profile

    profile = load_profile(args.profile)
    names = [b.strip() for b in args.backbones.split(",") if b.strip()]
    built = {name: build(name, args.size, profile, args.calib, args.cache_dir) for name in names}
    bench = start(args)  # after the builds: TensorFlow's work is not the timing's
    image = synthetic_image()
    models = {name: load(path, profile=profile) for name, (path, _) in built.items()}
    for model in models.values():
        for _ in range(10):
            model.predict(image)
    totals: dict[str, list[float]] = {n: [] for n in names}  # per block: the block's median
    infers: dict[str, list[float]] = {n: [] for n in names}
    for block in range(args.blocks):
        order = names[block % len(names):] + names[: block % len(names)]
        for name in order:
            t, i = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                timings = models[name].predict(image).timings
                t.append((time.perf_counter() - t0) * 1e3)  # end to end, as run_benchmark's "total"
                i.append(timings["inference"])
            totals[name].append(statistics.median(t))
            infers[name].append(statistics.median(i))
    p50 = {n: statistics.median(totals[n]) for n in names}
    inf = {n: statistics.median(infers[n]) for n in names}
    macs = {n: built[n][1] for n in names}
    lines = [f"{profile.name}, {args.size} px, {profile.export.format} {profile.export.quantization}, "
             f"{profile.runtime.threads} threads; {args.blocks} blocks x {args.runs} predictions of a 640x480 JPEG",
             "", "| model | MMACs | p50 end to end ms | p50 inference ms | inference ms per GMAC |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for n in names:
        lines.append(f"| {n} | {macs[n] / 1e6:.0f} | {p50[n]:.2f} | {inf[n]:.2f} | {inf[n] / (macs[n] / 1e9):.1f} |")
    lines += ["", "MAC rule, predicted / measured inference (row: the model estimated; column: the reference):", "",
              "| estimated \\ from | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]  # fmt: skip
    for n in names:
        cells = [f"{inf[r] * macs[n] / macs[r] / inf[n]:.2f}" if r != n else "-" for r in names]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    figures = "\n".join(lines)
    print(figures)
    bench.end()
    return bench.finish(figures)


if __name__ == "__main__":
    sys.exit(main())

"""The device route on aarch64, emulated here: docs/devices.md's offline install, then the same predictions as x86_64 (issue 28).

    sudo python benchmarks/arm64.py MODEL [MODEL ...] --images DIR [--n 200] [--json arm64.json]

What it does, each step as a user on a Raspberry Pi OS 64-bit device would:

1. A Debian bookworm arm64 root (the base of Raspberry Pi OS 64-bit: Python 3.11, glibc 2.36), built
   once with ``debootstrap`` and run through ``qemu-user-static`` (cached in ``--root``, default
   ``~/.cache/edgetl/arm64/bookworm``). Needs root, and the distribution's ``debootstrap`` and
   ``qemu-user-static`` packages (``apt-get install debootstrap qemu-user-static``).
2. The wheel folder made on this x86_64 machine exactly as docs/devices.md tells a user to
   (``pip wheel --no-deps ./runtimes``, ``pip download ... --platform ..._aarch64 --python-version
   3.11``), with ``onnxruntime`` added for the ONNX files.
3. Inside the root, with no network (``unshare --net``): ``python3 -m venv``, ``pip install
   --no-index --find-links wheels/ "edgetl-runtime[litert,onnx]"``, then for every MODEL
   ``edgetl-runtime info``, ``predict --json`` on ``--n`` images of ``--images`` (spread over its
   sorted files) and ``bench --runs 3``.
4. The same ``predict --json`` on this machine, and the comparison per file: verdict and top-class
   differences (each listed), and the distribution of the defect-score differences, with the images
   that differ most.

Emulated timings mean nothing (qemu translates every instruction): ``bench`` runs to show that it
runs, and its figures are not printed. The host's ``/sys`` is not bound into the root (with it,
LiteRT's CPU probe misreads the CPU and crashes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import edgetl_runtime
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MIRROR = "http://deb.debian.org/debian"
VENV = "/opt/edgetl"  # edgetl.exporters.emulated runs the validation with the runtime installed here
# docs/devices.md, "Without internet on the device": the device's Python and every manylinux tag up to its glibc
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
REQUIREMENTS = ("ai-edge-litert>=1.2", "numpy>=1.21", "pillow>=9", "click>=8.0", "onnxruntime>=1.16")


def say(message: str) -> None:
    print(f"[arm64 {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done


def check_host() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("run it as root (debootstrap and chroot need it)")
    for tool, package in (("debootstrap", "debootstrap"), ("qemu-aarch64-static", "qemu-user-static"),
                          ("unshare", "util-linux"), ("chroot", "coreutils")):  # fmt: skip
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing: apt-get install {package}")
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not binfmt.exists():
        problems.append("aarch64 programs do not run here (no binfmt_misc entry qemu-aarch64): "
                        "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64")  # fmt: skip
    elif not binfmt.read_text().startswith("enabled"):
        problems.append("the qemu-aarch64 binfmt entry is disabled: update-binfmts --enable qemu-aarch64")
    if problems:
        raise SystemExit("cannot run the aarch64 check here:\n  " + "\n  ".join(problems))


def build_root(root: Path, mirror: str) -> None:
    if (root / "usr/bin/python3").exists():
        say(f"root {root}: cached")
        return
    say(f"root {root}: debootstrap bookworm arm64 from {mirror} (once; a few minutes)")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    run(["debootstrap", "--arch=arm64", "--variant=minbase", "--include=python3,python3-venv,python3-pip",
         "bookworm", str(root), mirror])  # fmt: skip


def make_wheels(folder: Path) -> list[str]:
    """Make the wheel folder as docs/devices.md says, on this x86_64 machine; return the wheels' names."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip"]
    shutil.rmtree(REPO / "runtimes/build", ignore_errors=True)  # setuptools' build/lib may hold files since deleted
    run([*pip, "wheel", "--no-deps", str(REPO / "runtimes"), "-w", str(folder)])
    shutil.rmtree(REPO / "runtimes/build", ignore_errors=True)
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    run([*pip, "download", *REQUIREMENTS, "--only-binary=:all:", "--python-version", "3.11", *platforms,
         "-d", str(folder)])  # fmt: skip
    return sorted(p.name for p in folder.glob("*.whl"))


def in_root(root: Path, script: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) inside the root, with no network, /proc mounted, the host's /sys not."""
    from edgetl.exporters.emulated import run_in_root

    return run_in_root(root, script, timeout)


def pick_images(folder: Path, n: int) -> list[Path]:
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not images:
        raise SystemExit(f"{folder}: no images")
    return [images[i] for i in np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)]


def predictions(stdout: str, prefix: str) -> dict[str, dict]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            out[row["image"].removeprefix(prefix)] = row
    return out


def compare(host: dict[str, dict], device: dict[str, dict]) -> dict:
    names = sorted(set(host) & set(device))
    diff = np.array([abs((device[n].get("defect_score") or 0.0) - (host[n].get("defect_score") or 0.0)) for n in names])
    verdicts = [n for n in names if host[n].get("verdict") != device[n].get("verdict")]
    top = [n for n in names if host[n].get("top_class") != device[n].get("top_class")]
    worst = sorted(zip(diff, names), reverse=True)[:5]
    return {
        "images": len(names), "missing_on_device": sorted(set(host) - set(device)),
        "verdict_differences": [{"image": n, "x86_64": host[n].get("verdict"), "aarch64": device[n].get("verdict"),
                                 "x86_64_score": host[n].get("defect_score"), "aarch64_score": device[n].get("defect_score"),
                                 "threshold": host[n].get("threshold")} for n in verdicts],
        "top_class_differences": top,
        "score_diff": {"identical": int((diff == 0).sum()), "max": float(diff.max()) if diff.size else None,
                       "p50": float(np.median(diff)) if diff.size else None,
                       "p99": float(np.percentile(diff, 99)) if diff.size else None},
        "most_different": [{"image": n, "diff": float(d), "x86_64": host[n].get("defect_score"),
                            "aarch64": device[n].get("defect_score")} for d, n in worst],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--images", type=Path, required=True, help="a folder of images (e.g. an ELPV test split)")
    parser.add_argument("--n", type=int, default=200, help="images to predict, spread over the folder [200]")
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache/edgetl/arm64/bookworm")
    parser.add_argument("--mirror", default=MIRROR)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-serve", action="store_true", help="skip the station run (serve on a folder) in the root")
    args = parser.parse_args(argv)
    check_host()
    began = time.monotonic()
    build_root(args.root, args.mirror)
    wheels = make_wheels(args.root / "opt/wheels")
    say(f"wheels: {len(wheels)} ({sum(p.stat().st_size for p in (args.root / 'opt/wheels').glob('*.whl')) / 2**20:.0f} MB)")
    shutil.rmtree(args.root / VENV.lstrip("/"), ignore_errors=True)
    t = time.monotonic()
    install = in_root(args.root, f"python3 -m venv {VENV} && pip install -q --no-index --find-links /opt/wheels "
                                 "'edgetl-runtime[litert,onnx]' && python3 -c 'import platform, sys; "
                                 "print(platform.machine(), sys.version.split()[0])' && ldd --version | head -1")  # fmt: skip
    if install.returncode != 0:
        raise SystemExit(f"the offline install failed inside the root:\n{install.stdout}\n{install.stderr[-4000:]}")
    say(f"installed with --no-index, no network: {' / '.join(install.stdout.split(chr(10))[-3:-1])} "
        f"({time.monotonic() - t:.0f} s)")  # fmt: skip
    work = args.root / "opt/work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "images").mkdir(parents=True)
    for i, path in enumerate(pick_images(args.images, args.n)):
        shutil.copy(path, work / "images" / f"{i:04d}-{path.parent.name}-{path.name}")
    report: dict = {"root": str(args.root), "wheels": wheels, "install": install.stdout.strip().splitlines()[-2:],
                    "models": {}}  # fmt: skip
    host_runtime = str(Path(sys.executable).parent / "edgetl-runtime")
    for model in args.models:
        shutil.copy(model, work / model.name)
        t = time.monotonic()
        heatmap = " --heatmap heat" if edgetl_runtime.load(model).has_heatmap else ""  # an anomaly file draws them
        serve = ""
        if model == args.models[0] and not args.no_serve:  # the station on a folder source, once over the images
            (work / "rows.py").write_text("import sqlite3\nrows = sqlite3.connect('line.sqlite').execute("
                                          "\"SELECT count(*) FROM results WHERE status='decided'\").fetchone()[0]\n"
                                          "print(f'rows={rows}')\n")  # fmt: skip
            serve = (f"; rm -f line.sqlite; edgetl-runtime serve {model.name} --source 'dir:images?once=1&settle_ms=0' "
                     "--history line.sqlite --no-http > serve.txt 2>&1; echo serve=$?; python3 rows.py")  # fmt: skip
        device = in_root(args.root, f"cd /opt/work && rm -rf heat && edgetl-runtime info {model.name} && "
                                    f"edgetl-runtime predict {model.name} images --json{heatmap} > predict.jsonl; "
                                    f"edgetl-runtime bench {model.name} --runs 3 > bench.txt 2>&1; echo bench=$?"
                                    f"{serve}")  # fmt: skip
        if device.returncode != 0:
            raise SystemExit(f"{model.name} inside the root failed:\n{device.stdout[-3000:]}\n{device.stderr[-3000:]}")
        heatmaps = len(list((work / "heat").glob("*.png"))) if heatmap else None
        on_device = predictions((work / "predict.jsonl").read_text(), "images/")
        host = subprocess.run([host_runtime, "predict", str(model), str(work / "images"), "--json"], text=True,
                              capture_output=True)  # fmt: skip
        on_host = predictions(host.stdout, str(work / "images") + "/")
        result = compare(on_host, on_device)
        said = dict(line.split("=", 1) for line in device.stdout.splitlines() if line.startswith(("bench=", "serve=", "rows=")))
        result["bench_exit"] = f"bench={said.get('bench')}"
        result["emulation_warning"] = next((line for line in (work / "bench.txt").read_text().splitlines()
                                            if "emulated" in line), None)  # fmt: skip
        if heatmaps is not None:
            result["heatmaps_drawn"] = heatmaps
        if "serve" in said:
            result["serve"] = {"exit": int(said["serve"]), "decided_rows": int(said.get("rows", -1))}
        result["info"] = [line for line in device.stdout.splitlines() if line and "=" not in line[:8]][:12]
        result["seconds_emulated"] = round(time.monotonic() - t, 1)
        report["models"][model.name] = result
        d = result["score_diff"]
        say(f"{model.name}: {result['images']} images, {len(result['verdict_differences'])} verdict and "
            f"{len(result['top_class_differences'])} top-class differences; score |diff| max {d['max']:.3g}, "
            f"p99 {d['p99']:.3g}, identical {d['identical']} ({result['seconds_emulated']:.0f} s emulated; "
            f"{result['bench_exit']}; {result.get('serve', '')} {result.get('heatmaps_drawn', '')})")  # fmt: skip
    report["seconds"] = round(time.monotonic() - began, 1)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print("| file | images | verdict differences | top-class differences | identical scores | max abs diff | p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in report["models"].items():
        d = r["score_diff"]
        print(f"| {name} | {r['images']} | {len(r['verdict_differences'])} | {len(r['top_class_differences'])} | "
              f"{d['identical']} | {d['max']:.3g} | {d['p99']:.3g} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

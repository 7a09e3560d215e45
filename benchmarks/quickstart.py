"""The README's quickstart and anomaly flow, run as written on ELPV split seeds, and what the exports keep.

    python benchmarks/quickstart.py --seeds 0 1 2 --work runs/quickstart

For each seed, in ``WORK/seedN``: every command of the README's quickstart and of its anomaly
flow, read from README.md itself, with one change: the data step takes ``--seed N`` (and
``--limit`` when given). It records each step's exit status. Then, on the seed's test split:

- the float run, the int8 TFLite file and the int8 ONNX file, each at its own threshold (the
  quickstart stores one with ``--max-false-alarm``; a lossy file decides at the threshold its
  export re-set): decision accuracy, defect recall, false-reject rate, and what the export gate
  said on the validation images;
- the same with the threshold of ``--target-recall 0.95`` (the steepest operating point: about
  half the good cells rejected), on a copy of the run;
- a deliberately broken calibration: ``--calib`` a folder of 5 good cells. The gate must refuse it.

Nothing here is a timing; the load does not change these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
QUICKSTART = "Quickstart (offline, with defaults)"
ANOMALY = "Defect detection from good images only"


def readme_commands(heading: str, readme: Path = README) -> list[str]:
    """Return the commands of the first ```bash block under ``## heading`` (comments and ``source`` lines left out)."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    if block is None:
        raise ValueError(f"no bash block under '## {heading}' in {readme}")
    commands = []
    for line in block.group(1).splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith(("#", "source ")):
            commands.append(line)
    return commands


def as_run(command: str, data_options: list[str]) -> list[str]:
    """Return ``command`` as an argument list; the data step gets ``data_options`` (e.g. ``--seed 1``)."""
    argv = shlex.split(command)
    return argv + data_options if argv[:3] == ["edgetl", "data", "elpv"] else argv


def user_env() -> dict[str, str]:
    """Return the environment of a user's shell: this Python's scripts first, no log level or width set."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for name in ("COLUMNS", "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(name, None)
    return env


def run(argv: list[str], cwd: Path, timeout: int = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout)


def _metrics(model: str, cwd: Path) -> dict:
    done = run(["edgetl", "eval", model, "data/elpv/test", "--json", "--no-report"], cwd)
    if done.returncode:
        raise RuntimeError(f"edgetl eval {model}: {done.stderr[-500:]}")
    m = json.loads(done.stdout)
    return {k: m[k] for k in ("decision_accuracy", "defect_recall", "false_reject_rate", "threshold")}


def _gate(report: Path) -> str:
    v = json.loads(report.read_text())["validation"]
    tests = v.get("paired_tests", {})
    parts = [f"{name.split('_')[1]} {t['lost']}/{t['gained']} p={t['p_value']:.2g}" for name, t in tests.items()]
    return ("pass" if v["passed"] else "FAIL") + " (" + ", ".join(parts) + ")"


def exports(cwd: Path, run_dir: str, tag: str) -> list[dict]:
    """Return, for the float run and its int8 TFLite and ONNX exports (made here unless present), the test figures."""
    rows = [{"model": f"{run_dir} (float)", **_metrics(run_dir, cwd), "gate": "", "rc": 0}]
    for fmt, suffix in (("tflite", ".tflite"), ("onnx", ".onnx")):
        out = f"{tag}-int8{suffix}"
        rc = 0
        if not (cwd / out).is_file():
            rc = run(["edgetl", "export", run_dir, "--format", fmt, "--quant", "int8", "-o", out], cwd).returncode
        row = {"model": out, "rc": rc, "gate": _gate(cwd / f"{out}.report.json")}
        row.update(_metrics(out, cwd) if (cwd / out).is_file() else {})
        rows.append(row)
    return rows


def one_seed(seed: int, work: Path, limit: int | None) -> dict:
    cwd = work / f"seed{seed}"
    cwd.mkdir(parents=True, exist_ok=True)
    data_options = ["--seed", str(seed)] + (["--limit", str(limit)] if limit else [])
    steps = []
    for heading in (QUICKSTART, ANOMALY):
        for command in readme_commands(heading):
            done = run(as_run(command, data_options), cwd)
            steps.append({"command": command, "rc": done.returncode, "stderr_tail": done.stderr[-400:]})
            print(f"seed {seed}: {done.returncode}  {command}", flush=True)
    result = {"seed": seed, "steps": steps, "quickstart": exports(cwd, "runs/elpv", "elpv")}
    recall_run = cwd / "runs" / "elpv-recall95"
    if not recall_run.exists():
        shutil.copytree(cwd / "runs" / "elpv", recall_run, ignore=shutil.ignore_patterns("eval", "export", "benchmark"))
        run(["edgetl", "eval", str(recall_run.relative_to(cwd)), "data/elpv/test", "--target-recall", "0.95",
             "--no-report", "--json"], cwd)  # fmt: skip
    result["recall95"] = exports(cwd, "runs/elpv-recall95", "elpv-recall95")
    result["anomaly"] = [{"model": "runs/anomaly (float)", **_metrics("runs/anomaly", cwd), "gate": "", "rc": 0},
                         {"model": "anomaly-int8.tflite", **_metrics("anomaly-int8.tflite", cwd), "rc": 0,
                          "gate": _gate(cwd / "anomaly-int8.tflite.report.json")}]  # fmt: skip
    broken = cwd / "calib-5-good"
    if not broken.exists():
        broken.mkdir()
        for path in sorted((cwd / "data" / "elpv" / "train" / "good").iterdir())[:5]:
            shutil.copy(path, broken / path.name)
    done = run(["edgetl", "export", "runs/elpv", "--quant", "int8", "--calib", str(broken.relative_to(cwd)),
                "-o", "broken-calibration.tflite"], cwd)  # fmt: skip
    result["broken_calibration"] = {"rc": done.returncode, "gate": _gate(cwd / "broken-calibration.tflite.report.json")}
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| seed | flow | model | exit | test decision accuracy | Δ vs float | defect recall | Δ | false rejects | "
             "threshold | gate on the validation images (lost/gained, p) |", "|" + "---|" * 11]  # fmt: skip
    for r in results:
        for flow in ("quickstart", "recall95", "anomaly"):
            rows = r[flow]
            base = rows[0]
            for row in rows:
                if "decision_accuracy" not in row:
                    lines.append(f"| {r['seed']} | {flow} | {row['model']} | {row['rc']} | not written | | | | | | "
                                 f"{row['gate']} |")  # fmt: skip
                    continue
                da = 100 * (row["decision_accuracy"] - base["decision_accuracy"])
                dr = 100 * (row["defect_recall"] - base["defect_recall"])
                lines.append(f"| {r['seed']} | {flow} | {row['model']} | {row['rc']} | "
                             f"{100 * row['decision_accuracy']:.2f} % | {da:+.2f} | {100 * row['defect_recall']:.2f} % | "
                             f"{dr:+.2f} | {100 * row['false_reject_rate']:.1f} % | {row['threshold']:.4f} | "
                             f"{row['gate']} |")  # fmt: skip
        b = r["broken_calibration"]
        lines.append(f"| {r['seed']} | 5 good calibration images | broken-calibration.tflite | {b['rc']} | | | | | | | "
                     f"{b['gate']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--limit", type=int, default=None, help="ELPV cells per seed (default: all 2,624)")
    args = parser.parse_args(argv)
    results = []
    for seed in args.seeds:  # written after each seed: a later failure keeps the seeds done
        results.append(one_seed(seed, args.work.resolve(), args.limit))
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print(markdown(results))
    failed = [(r["seed"], s["command"]) for r in results for s in r["steps"] if s["rc"]]
    for seed, command in failed:
        print(f"seed {seed}: failed: {command}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

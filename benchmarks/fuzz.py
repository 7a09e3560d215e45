"""Fuzz edgetl's readers with hostile files: only edgetl's own errors may come out, nothing hangs or blows up memory.

Each case is a mutated copy of a valid seed file (models, embedded contracts, images, labels files,
device profiles, PyTorch weights; see ``fuzz_cases.py``), run in a worker process that the parent
watches. Every case ends in one outcome:

* ``ok`` (the file was read and predicted on) or ``refused`` (an edgetl error said what is wrong):
  both are correct behaviour;
* ``traceback`` (any other exception), ``crash`` (the worker died, e.g. a segfault), ``hang`` (no
  answer within ``--timeout`` s), ``memory`` (MemoryError, or the case's peak RSS above
  ``--rss-limit-mb``: the worker's over its baseline at start, a probe child's over the worker's RSS
  when it forked), ``program`` (a stand-in for Ghostscript or another program, first on ``PATH``,
  was started): each is a defect,
  kept under ``--keep`` with the seed and case index that rebuild it.

    .venv/bin/python benchmarks/fuzz.py --minutes 10 [--seed 0] [--targets image,profile] [--json F]
    .venv/bin/python benchmarks/fuzz.py --cases 400            # a fixed number of cases (as the test suite runs)

The seed models are a small Keras classifier exported to TFLite fp32, int8 and ONNX with an
embedded contract, built with TensorFlow on first use and cached in ``--cache-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_cases import TARGETS, Corpus, make_case, write_fill_tflite, write_run_seed, write_weights_seeds  # noqa: E402

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "runs" / "bench-cache" / "fuzz"
BAD = ("traceback", "crash", "hang", "memory", "program")
FAKE_PROGRAMS = ("gs", "gsc", "gswin64c", "convert", "magick", "ffmpeg", "inkscape", "rsvg-convert", "dcraw", "sh")


# --------------------------------------------------------------------------- the worker (one process, many cases)


def _peak_rss_kb() -> int:
    """This process's peak RSS since the last :func:`_reset_peak` (VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _selftest(kind: str) -> None:
    if kind == "traceback":
        raise KeyError("a bug outside the project's error types")
    if kind == "hang":
        time.sleep(3600)
    if kind == "crash":
        os.kill(os.getpid(), 11)  # SIGSEGV, as a native reader would die
    if kind == "memory":
        np.ones(300 << 20, dtype=np.uint8)  # 300 MB, touched
    if kind == "program":  # as Pillow starting Ghostscript for an EPS file
        import subprocess

        subprocess.run(["gs", "-q"], check=False)
    if kind == "child-memory":  # as a probe child building a model that declares huge tensors
        pid = os.fork()
        if pid == 0:
            np.ones(300 << 20, dtype=np.uint8)
            os._exit(0)
        os.waitpid(pid, 0)


def _worker(corpus: Corpus) -> None:
    """Read ``{"path", "target"}`` lines on stdin; answer one JSON line per case on stdout."""
    import edgetl_runtime
    import shutil

    from edgetl.evaluation import _leak_warning
    from edgetl.reports import _thumbnail
    from edgetl.run import RunError, load_run
    from edgetl.weights import WeightsFileError
    from edgetl.weights.torch_pickle import load_state_dict
    from edgetl_runtime.errors import EdgetlRuntimeError
    from edgetl_runtime.preprocess import probe_image
    from edgetl_runtime.profiles import ENV_DEVICES_DIR, HostInfo, detect, list_profiles, load_profile

    model = edgetl_runtime.load(corpus.tflite[0], threads=1)
    image = corpus.images[0]
    model.predict(image)
    host = HostInfo.probe()
    allowed = (EdgetlRuntimeError, WeightsFileError, RunError)

    def run_folder(path: str, split: str | None = None) -> None:
        run_dir = Path(path).parent / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(corpus.run, run_dir)
        if split is not None:
            (run_dir / "split.json").write_text(split)
        else:
            shutil.copyfile(path, run_dir / Path(path).name)
        run = load_run(run_dir)
        run.split("train"), run.split("val")
        _leak_warning([Path(image)], run)  # eval's check: reads every file split.json names

    def run(target: str, path: str) -> None:
        name = Path(path).name
        if target == "fifo":
            kind = name.removeprefix("fifo-")
            if kind in ("model.tflite", "model.onnx"):
                edgetl_runtime.load(path, threads=1).predict(image)
            elif kind == "image.png":
                model.predict(path)
            elif kind == "labels.txt":
                edgetl_runtime.load(corpus.tflite[0], threads=1, labels=path).predict(image)
            elif kind == "profile.toml":
                load_profile(path)
            elif kind == "devices":  # a pipe named *.toml among the profiles: passed over, never opened
                folder = Path(path).parent / "devices"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                (folder / "line-camera.toml").symlink_to(path)
                os.environ[ENV_DEVICES_DIR] = str(folder)
                try:
                    list_profiles()
                    load_profile("raspberry-pi-4")
                finally:
                    del os.environ[ENV_DEVICES_DIR]
            elif kind == "split.json":
                run_folder(path, json.dumps({"train": [[path, "defect"], [str(image), "good"]], "val": [[str(image), "good"]]}))
        elif target in ("numbers",) and name.endswith((".tflite", ".onnx", ".imprint")):
            edgetl_runtime.load(path, threads=1).predict(image)
        elif target == "numbers" and name.endswith(".toml"):
            profile = load_profile(path)
            detect(host, [profile])
        elif target == "numbers":
            run_folder(path)
        elif target.endswith(("-bytes", "-metadata")) or target == "allocating-graph":
            edgetl_runtime.load(path, threads=1).predict(image)
        elif target == "image":
            model.predict(path)
        elif target in ("image-format", "jpeg-header"):
            try:
                model.predict(path)
            finally:
                _thumbnail(path)  # the eval gallery's reader: None for what it cannot read
                probe_image(path) if target == "jpeg-header" else None  # data inspect's check, decoded in full
        elif target == "labels":
            edgetl_runtime.load(corpus.tflite[0], threads=1, labels=path).predict(image)
        elif target == "profile":
            profile = load_profile(path)
            detect(host, [profile])
            edgetl_runtime.load(corpus.tflite[0], profile=profile, device="cpu").predict(image)
        elif target == "weights":
            load_state_dict(path)
        elif target == "run-folder":
            run_folder(path)
        elif target.startswith("selftest-"):  # proves the parent sees each kind of defect (tests only)
            _selftest(target.removeprefix("selftest-"))

    # The answers get their own descriptor; anything else printed on stdout (Python or native code) goes to the log.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    out.write(json.dumps({"ready": True, "rss_kb": _peak_rss_kb()}) + "\n")
    out.flush()
    for line in sys.stdin:
        case = json.loads(line)
        _reset_peak()
        start_kb = _peak_rss_kb()  # just reset: the RSS now, which a probe child forked in this case starts from
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        answer: dict = {"outcome": "ok"}
        try:
            run(case["target"], case["path"])
        except MemoryError as exc:
            answer = {"outcome": "memory", "error": f"MemoryError: {exc}"}
        except allowed as exc:
            answer = {"outcome": "refused", "error": f"{type(exc).__name__}: {exc}"[:300]}
        except Exception as exc:  # noqa: BLE001 - exactly what the fuzz looks for
            answer = {"outcome": "traceback", "error": f"{type(exc).__name__}: {exc}"[:300], "traceback": traceback.format_exc()}
        answer["rss_kb"] = _peak_rss_kb()
        answer["start_rss_kb"] = start_kb
        # The probe's children (a new model is built in a forked child first). The kernel keeps one figure for all
        # children so far, their largest peak: a child of this case shows only when it set a new record (a lower
        # peak is below one already reported). A forked child counts the worker's pages it shares in its RSS; the
        # case's growth is its peak above the worker's RSS when the case started.
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        answer["child_rss_kb"] = children_after if children_after > children_before else 0
        out.write(json.dumps(answer) + "\n")
        out.flush()


# --------------------------------------------------------------------------- the parent


@dataclass
class Result:
    """What a fuzz run found: cases per target and outcome, the defects, peak memory."""

    seed: int
    cases: int = 0
    seconds: float = 0.0
    outcomes: dict[str, Counter] = field(default_factory=dict)
    defects: list[dict] = field(default_factory=list)
    baseline_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0  # the largest one case's peak RSS reached
    worst_case_growth_mb: float = 0.0  # the largest growth of one case (see the module docstring)
    restarts: int = 0
    errors: dict[str, Counter] = field(default_factory=dict)  # target -> error type of the refusals

    @property
    def bad(self) -> int:
        return sum(c[o] for c in self.outcomes.values() for o in BAD)

    def to_dict(self) -> dict:
        return {
            "seed": self.seed, "cases": self.cases, "seconds": round(self.seconds, 1), "bad": self.bad,
            "outcomes": {t: dict(c) for t, c in self.outcomes.items()}, "defects": self.defects,
            "baseline_rss_mb": round(self.baseline_rss_mb, 1), "peak_rss_mb": round(self.peak_rss_mb, 1),
            "worst_case_growth_mb": round(self.worst_case_growth_mb, 1), "worker_restarts": self.restarts,
            "refused_with": {t: dict(c) for t, c in self.errors.items()},
        }

    def table(self) -> str:
        rows = [f"{'target':<16}" + "".join(f"{o:>10}" for o in ("cases", "ok", "refused", *BAD))]
        for target, c in self.outcomes.items():
            rows.append(f"{target:<16}{sum(c.values()):>10}" + "".join(f"{c[o]:>10}" for o in ("ok", "refused", *BAD)))
        rows.append(f"{self.cases} cases in {self.seconds:.0f} s, seed {self.seed}: {self.bad} defect(s); worker baseline "
                    f"{self.baseline_rss_mb:.0f} MB, largest peak {self.peak_rss_mb:.0f} MB "
                    f"(+{self.worst_case_growth_mb:.0f} MB in one case), {self.restarts} worker restart(s)")
        return "\n".join(rows)


def fake_programs(folder: Path) -> Path:
    """Write stand-ins for the programs an image library may start (Ghostscript...); each records that it ran.

    Returns the file they write to. Put ``folder`` first on ``PATH``: a case after which the file
    exists started a program, which no file someone hands edgetl may do.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ran = folder / "programs-ran.log"
    for name in FAKE_PROGRAMS:
        script = folder / name
        script.write_text(f"#!/bin/sh\necho \"$0 $*\" >> '{ran}'\nexit 1\n")
        script.chmod(0o755)
    return ran


class _Worker:
    def __init__(self, corpus: Corpus, log: Path, address_space_mb: int | None):
        self.ran = fake_programs(log.parent / "fake-bin")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONFAULTHANDLER="1",
                   EDGETL_PROBE_CACHE=str(log.parent / "probed-models"),  # not the user's cache
                   EDGETL_PROBE_TIMEOUT="10",  # a model the probe gives up on is refused within the case's timeout
                   PATH=f"{log.parent / 'fake-bin'}{os.pathsep}{os.environ.get('PATH', '')}")

        def limit() -> None:
            if address_space_mb:
                resource.setrlimit(resource.RLIMIT_AS, (address_space_mb << 20, address_space_mb << 20))

        self.stderr = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", corpus.to_json()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, env=env, preexec_fn=limit,
        )
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        ready = self.read(timeout=120)
        if ready is None or not ready.get("ready"):
            self.close()
            raise RuntimeError(f"the fuzz worker did not start; see {log}")
        self.baseline_kb = ready["rss_kb"]

    def read(self, timeout: float) -> dict | None:
        """Return the worker's next answer; None when it sent none within ``timeout`` or closed its output."""
        if not self.selector.select(timeout):
            return None
        line = self.proc.stdout.readline()
        if not line:  # the worker is exiting: let it finish, so that poll() tells a crash from a hang
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            return None
        return json.loads(line)

    def ask(self, target: str, path: Path, timeout: float) -> dict:
        try:
            self.proc.stdin.write((json.dumps({"target": target, "path": str(path)}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"outcome": "crash", "error": "the worker was gone before the case"}
        answer = self.read(timeout)
        if answer is not None:
            return answer
        if self.proc.poll() is None:
            return {"outcome": "hang", "error": f"no answer within {timeout:.0f} s"}
        return {"outcome": "crash", "error": f"the worker died (exit status {self.proc.returncode})"}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def run_fuzz(corpus: Corpus, work: Path, seed: int = 0, cases: int | None = None, seconds: float | None = None,
             targets: tuple[str, ...] = TARGETS, timeout: float = 20.0, rss_limit_mb: float = 1024,
             address_space_mb: int | None = None, progress: bool = False) -> Result:
    """Run ``cases`` cases (or as many as fit in ``seconds``), cycling through ``targets``; return the outcomes.

    Defective cases are kept in ``work/defects`` (the file, plus its target, seed and index).
    """
    work.mkdir(parents=True, exist_ok=True)
    kept = work / "defects"
    result = Result(seed, outcomes={t: Counter() for t in targets}, errors={t: Counter() for t in targets})
    worker = _Worker(corpus, work / "worker.log", address_space_mb)
    result.baseline_rss_mb = worker.baseline_kb / 1024
    start = time.monotonic()
    index = 0
    try:
        while (cases is None or index < cases) and (seconds is None or time.monotonic() - start < seconds):
            target = targets[index % len(targets)]
            if target.startswith("selftest-"):
                data, name = b"", "selftest"
            else:
                data, name = make_case(target, corpus, np.random.default_rng([seed, index]))
            path = work / "case" / name
            path.parent.mkdir(exist_ok=True)
            path.unlink(missing_ok=True)
            if target == "fifo":
                os.mkfifo(path)  # nothing ever writes to it: a reader that waits for a writer hangs
            else:
                path.write_bytes(data)
            answer = worker.ask(target, path, timeout)
            if worker.ran.exists():  # a fake Ghostscript (or another program) was started by this case
                answer = {**answer, "outcome": "program", "error": worker.ran.read_text()[:300]}
                worker.ran.unlink()
            rss_mb = max(answer.get("rss_kb", 0), answer.get("child_rss_kb", 0)) / 1024
            child_growth = (answer.get("child_rss_kb", 0) - answer.get("start_rss_kb", 0)) / 1024
            growth = max(answer.get("rss_kb", 0) / 1024 - worker.baseline_kb / 1024, child_growth)
            if answer["outcome"] in ("ok", "refused") and growth > rss_limit_mb:
                answer = {**answer, "outcome": "memory", "error": (
                    f"peak RSS {rss_mb:.0f} MB, +{growth:.0f} MB in one case (the worker {answer.get('rss_kb', 0) / 1024:.0f} MB, "
                    f"its probe children {answer.get('child_rss_kb', 0) / 1024:.0f} MB; the case was {answer['outcome']})")}
            result.peak_rss_mb = max(result.peak_rss_mb, rss_mb)
            result.worst_case_growth_mb = max(result.worst_case_growth_mb, growth)
            result.outcomes[target][answer["outcome"]] += 1
            if answer["outcome"] == "refused":
                result.errors[target][answer["error"].split(":")[0]] += 1
            if answer["outcome"] in BAD:
                kept.mkdir(exist_ok=True)
                keep = kept / f"{target}-seed{seed}-case{index}-{name}"
                keep.write_bytes(data)  # a FIFO case is its name (empty file)
                result.defects.append({"target": target, "index": index, "file": str(keep), **answer})
                if progress:
                    print(f"  {answer['outcome']}: {target} case {index}: {answer.get('error', '')}", file=sys.stderr)
            if answer["outcome"] in ("crash", "hang", "memory"):
                worker.close()
                worker = _Worker(corpus, work / "worker.log", address_space_mb)
                result.restarts += 1
            index += 1
            if progress and index % 200 == 0:
                print(f"  {index} cases, {time.monotonic() - start:.0f} s, {result.bad} defect(s)", file=sys.stderr)
    finally:
        worker.close()
        result.cases = index
        result.seconds = time.monotonic() - start
    return result


# --------------------------------------------------------------------------- seed files


def build_corpus(folder: Path) -> Corpus:
    """Build (or reuse) the seed files in ``folder``: models with TensorFlow, images, labels, profiles, weights."""
    folder.mkdir(parents=True, exist_ok=True)
    models = [folder / "seed_fp32.tflite", folder / "seed_int8.tflite", folder / "seed.onnx"]
    if not all(p.exists() for p in models):
        _build_models(folder, models)
    fill = folder / "seed_fill.tflite"
    if not fill.exists():
        write_fill_tflite(fill)
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for suffix, mode in ((".png", "RGB"), (".jpg", "RGB"), (".bmp", "L"), (".tif", "P"), (".webp", "RGB"), (".png", "I;16")):
        path = folder / f"seed_{mode.replace(';', '')}{suffix}"
        if not path.exists():
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            img = Image.fromarray(pixels).convert("L" if mode == "I;16" else mode)
            (img.convert("I;16") if mode == "I;16" else img).save(path)
        images.append(path)
    labels = folder / "labels.txt"
    labels.write_text("defect\ngood\n")
    profiles = sorted((Path(__file__).resolve().parents[1] / "devices").glob("*.toml"))
    return Corpus(models[:2], models[2:], images, labels, profiles, write_weights_seeds(folder), write_run_seed(folder, images),
                  fill)


def _build_models(folder: Path, paths: list[Path]) -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgetl._tf import keras, tensorflow
    from edgetl_runtime.contract import ExportInfo, InputSpec, ModelSpec
    from edgetl_runtime.metadata import embed_onnx_metadata, embed_tflite_metadata

    tf, k = tensorflow(), keras()
    k.utils.set_random_seed(0)
    inputs = k.Input((32, 32, 3), name="image")
    h = k.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    h = k.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = k.layers.DepthwiseConv2D(3, activation="relu")(h)
    h = k.layers.GlobalAveragePooling2D()(h)
    model = k.Model(inputs, k.layers.Dense(2, activation="softmax")(h))
    spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(32, 32))
    paths[0].write_bytes(embed_tflite_metadata(tf.lite.TFLiteConverter.from_keras_model(model).convert(), spec,
                                               ExportInfo("tflite", "fp32")))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    paths[1].write_bytes(embed_tflite_metadata(converter.convert(), spec, ExportInfo("tflite", "int8", io_type="uint8")))
    import tf2onnx

    proto, _ = tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image")], opset=13)
    paths[2].write_bytes(embed_onnx_metadata(proto, spec, ExportInfo("onnx", "fp32", opset=13)).SerializeToString())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="run for this long (default: 1 minute unless --cases)")
    parser.add_argument("--cases", type=int, default=None, help="run exactly this many cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds one case may take before it counts as a hang")
    parser.add_argument("--rss-limit-mb", type=float, default=1024, help="peak RSS growth in one case that counts as a blow-up")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--keep", type=Path, default=None, help="folder for defective cases (default: CACHE/run-SEED)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    seconds = args.minutes * 60 if args.minutes is not None else (None if args.cases else 60.0)
    corpus = build_corpus(args.cache_dir)
    from edgetl_runtime.host import machine_state

    state = machine_state()
    print(f"fuzz: {state.cpu_model}, {state.cores} cores, load {state.load[0]:.2f}, {state.date}", file=sys.stderr)
    result = run_fuzz(corpus, args.keep or args.cache_dir / f"run-{args.seed}", args.seed, args.cases, seconds, targets,
                      args.timeout, args.rss_limit_mb, progress=True)
    print(result.table())
    for defect in result.defects[:20]:
        print(f"{defect['outcome']}: {defect['target']} case {defect['index']} ({defect['file']}): {defect.get('error', '')}")
        if "traceback" in defect:
            print(defect["traceback"])
    if args.json:
        from dataclasses import asdict

        from edgetl_runtime.atomic import write_json

        write_json(args.json, {**result.to_dict(), "machine": asdict(state)})
    return 1 if result.bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Corpus.from_json(sys.argv[2]))
    else:
        sys.exit(main())

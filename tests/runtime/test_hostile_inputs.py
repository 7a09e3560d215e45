"""Broken and odd inputs get a clear error, at load, and never hang or leave debris (issue 11)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import edgetl_runtime
from edgetl_runtime.cli import main
from edgetl_runtime.errors import EdgetlRuntimeError, ImageError, MetadataError, ModelFormatError


def test_a_fifo_given_as_the_model_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    code = f"import edgetl_runtime\ntry:\n    edgetl_runtime.load({str(fifo)!r})\nexcept Exception as e:\n    print(type(e).__name__, e)"
    # Before: open() on the FIFO blocked forever.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("ModelFormatError") and "not a regular file" in proc.stdout, proc.stderr


def test_a_symlink_loop_is_a_clear_error(tmp_path):
    (tmp_path / "a.tflite").symlink_to(tmp_path / "b.tflite")
    (tmp_path / "b.tflite").symlink_to(tmp_path / "a.tflite")
    with pytest.raises(ModelFormatError, match="cannot be read"):
        edgetl_runtime.load(tmp_path / "a.tflite")


def test_byte_mutated_models_fail_at_load_or_run_fine(exported, tmp_path):
    # Before: a mutated model passed `info`, then `predict` raised an uncaught RuntimeError.
    data = bytearray(exported.tflite_int8.read_bytes())
    rng = np.random.default_rng(11)
    pixels = np.zeros((32, 32, 3), np.uint8)
    outcomes = {"refused at load": 0, "runs": 0}
    for i in range(25):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), size=8):
            mutated[pos] = rng.integers(0, 256)
        path = tmp_path / f"m{i}.tflite"
        path.write_bytes(bytes(mutated))
        try:
            model = edgetl_runtime.load(path, threads=1)
        except EdgetlRuntimeError:
            outcomes["refused at load"] += 1
            continue
        model.predict(pixels)  # loaded means it runs: the warm-up inference already did
        outcomes["runs"] += 1
    assert sum(outcomes.values()) == 25


def test_predict_refuses_an_empty_folder(exported, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["predict", str(exported.tflite_int8), str(empty)])
    assert result.exit_code == 2 and "no images found" in result.output  # before: exit 0, no output


def test_an_empty_or_non_finite_image_array_is_an_image_error(exported):
    model = edgetl_runtime.load(exported.tflite_fp32)
    for bad in (np.zeros((0, 0, 3), np.uint8), np.full((8, 8, 3), np.nan, np.float32)):
        with pytest.raises(ImageError):
            model.predict(bad)  # before: an empty array got a prediction


def test_written_files_follow_the_umask(tmp_path):
    from edgetl_runtime.atomic import write_bytes

    old = os.umask(0o022)
    try:
        path = write_bytes(tmp_path / "model.tflite", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # before: 0600 whatever the umask


def test_sigterm_in_the_write_window_leaves_no_partial_file(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from edgetl_runtime.atomic import atomic_path, exit_cleanly_on_sigterm
        exit_cleanly_on_sigterm()
        with atomic_path({str(tmp_path / "model.tflite")!r}) as tmp:
            tmp.write_bytes(b"half")
            print("ready", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []  # before: a 0-byte or half .partial file stayed


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_budgets_are_refused(tmp_path, value):
    from edgetl_runtime.profiles import ProfileError, load_profile

    text, n = re.subn(r"^p50_ms = .*$", f"p50_ms = {value}", load_profile("cpu-x86_64").path.read_text(), flags=re.M)
    assert n == 1
    path = tmp_path / "cpu-x86_64.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match="budget.p50_ms.*finite"):
        load_profile(path)


def test_a_latin1_labels_file_is_a_clear_error(tmp_path):
    from edgetl_runtime.errors import MetadataError
    from edgetl_runtime.model import read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes("défaut\nbon\n".encode("latin-1"))
    with pytest.raises(MetadataError, match="not UTF-8 text"):  # before: a UnicodeDecodeError traceback
        read_labels(path)


def _crafted(**changes):
    import json

    from edgetl_runtime.contract import InputSpec, ModelSpec

    data = json.loads(ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(32, 32)).to_json())
    for dotted, value in changes.items():
        table, _, key = dotted.rpartition("__")
        (data[table] if table else data)[key] = value
    return json.dumps(data)


@pytest.mark.parametrize("text, found", [
    (_crafted(input__height=60000, input__width=60000), "beyond 8192 px"),
    (_crafted(input__height="224"), "positive integer"),
    (_crafted(decision__threshold="0.5"), "threshold must be a number"),
    (_crafted(schema_version="2"), "schema_version must be an integer"),
    (_crafted(input__resize="lanczos9"), "resize"),
    (_crafted(input__normalization="runtime", input__mean=[1.0], input__std=[1.0, 1.0, 1.0]), "needs 3 values"),
    (_crafted(input__normalization="runtime", input__mean=[float("nan")] * 3, input__std=[1.0] * 3), "finite"),
    (_crafted(labels=[["defect"], "good"]), "labels"),
    (_crafted(labels=["x" * 1000, "good"]), "at most 256 characters"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{" + " " * (17 * 2**20) + "}", "beyond"),
])
def test_crafted_metadata_is_one_clear_error(text, found):
    # Before: wrong types, deep nesting or a 60000x60000 input ended in tracebacks or huge allocations.
    from edgetl_runtime.errors import MetadataError
    from edgetl_runtime.metadata import parse_embedded

    with pytest.raises(MetadataError, match=found):
        parse_embedded({"edgetl": text})


# ------------------------------------------------------------------ the probe: a model that crashes the engine (issue 11, class 4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe forks (Linux)")
def test_a_build_that_crashes_or_hangs_in_the_probe_child_is_a_model_format_error(tmp_path):
    from edgetl_runtime import probe

    def segfault():
        os.kill(os.getpid(), signal.SIGSEGV)

    def abort():
        os.abort()

    for build, name in ((segfault, "SIGSEGV"), (abort, "SIGABRT")):
        with pytest.raises(ModelFormatError, match=f"crashed \\({name}\\)"):
            probe.probe(tmp_path / "m.tflite", name.encode(), build)
    with pytest.raises(ModelFormatError, match="did not finish .* within 1 s"):
        probe.probe(tmp_path / "m.tflite", b"hangs", lambda: __import__("time").sleep(60), timeout=1)
    # A Python error in the child is left to the caller (who reports it in-process) and not remembered as good.
    probe.probe(tmp_path / "m.tflite", b"raises", lambda: 1 / 0)
    assert __import__("hashlib").sha256(b"raises").digest() not in probe._verified


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe forks (Linux)")
def test_a_crash_of_the_forked_child_alone_is_confirmed_in_a_fresh_process_before_refusing(tmp_path):
    # A fork of a process whose other threads hold native locks can crash whatever the model (seen once in
    # the test suite with an Edge TPU model): the fresh process decides.
    from edgetl_runtime import probe

    def segfault():
        os.kill(os.getpid(), signal.SIGSEGV)

    probe.probe(tmp_path / "m.tflite", b"fork-unsafe", segfault, confirm=[sys.executable, "-c", "pass"])
    with pytest.raises(ModelFormatError, match="crashed \\(SIGSEGV\\)"):
        probe.probe(tmp_path / "m.tflite", b"really bad", segfault,
                    confirm=[sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe forks (Linux)")
def test_load_refuses_a_tflite_whose_interpreter_crashes_and_the_process_lives_on(exported, tmp_path, monkeypatch):
    import importlib

    from edgetl_runtime import probe

    model_module = importlib.import_module("edgetl_runtime.model")
    calls = []
    real = probe.probe

    def crashing_engine(path, data, build, timeout=None, settings="", confirm=None):
        calls.append(path)  # LiteRT dying on the file (other bytes: this file may be remembered as good already)
        crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]  # in a fresh process too
        return real(path, data + b"crash", lambda: os.kill(os.getpid(), signal.SIGSEGV), timeout, settings, confirm=crash)

    monkeypatch.setattr(model_module, "probe", crashing_engine)
    with pytest.raises(ModelFormatError, match="crashed \\(SIGSEGV\\).*corrupt or crafted"):
        edgetl_runtime.load(exported.tflite_fp32)
    assert calls == [exported.tflite_fp32]
    monkeypatch.setattr(model_module, "probe", real)
    monkeypatch.setenv("EDGETL_PROBE", "0")
    assert edgetl_runtime.load(exported.tflite_fp32).predict(exported.images[0]).top_class in ("defect", "good")


def test_labels_files_cannot_hang_or_exhaust_memory(exported, tmp_path):
    cases = {
        "numbered.txt": (b"0 defect\n1000000000 good\n", "label number 1000000000 is past the 100,000"),
        "lines.txt": (b"x\n" * 300_000, "300,000 lines"),
        "big.txt": (b"a" * (33 << 20), "is not a labels file"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(MetadataError, match=message):
            edgetl_runtime.load(exported.tflite_int8, labels=tmp_path / name)
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)  # before: read_text() blocked forever
    with pytest.raises(MetadataError, match="not a regular file"):
        edgetl_runtime.load(exported.tflite_int8, labels=fifo)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe forks (Linux)")
def test_a_probed_model_is_remembered_on_disk_and_not_probed_again(tmp_path, monkeypatch):
    from edgetl_runtime import probe

    cache = tmp_path / "probed-models"
    monkeypatch.setenv("EDGETL_PROBE_CACHE", str(cache))
    marker = tmp_path / "built"
    probe.probe("m.tflite", b"model bytes", lambda: marker.write_text("child ran"), settings="threads=1")
    assert marker.read_text() == "child ran" and len(cache.read_text().split()) == 1
    marker.unlink()
    probe._verified.clear()  # a new process: only the disk remembers
    probe.probe("m.tflite", b"model bytes", lambda: marker.write_text("child ran"), settings="threads=1")
    assert not marker.exists()
    probe.probe("m.tflite", b"model bytes", lambda: marker.write_text("child ran"), settings="threads=4")
    assert marker.exists(), "other engine settings are another key"


def test_a_tflite_declaring_huge_tensors_is_refused_before_any_engine_allocates(exported, tmp_path):
    # Found by the fuzz: one damaged dimension (1x13x13x16,711,688 floats) made LiteRT allocate 11 GB at load.
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    obj = schema.ModelT.InitFromPackedBuf(bytearray(exported.tflite_fp32.read_bytes()), 0)
    tensor = max(obj.subgraphs[0].tensors, key=lambda t: len(t.shape))
    tensor.shape = np.array([1, 13, 13, 16_711_688], dtype=np.int32)
    builder = flatbuffers.Builder(0)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "huge.tflite"
    path.write_bytes(bytes(builder.Output()))
    with pytest.raises(ModelFormatError, match=r"tensors declare [0-9.]+ GiB or more"):
        edgetl_runtime.load(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe forks (Linux)")
def test_the_probe_works_in_an_application_that_ignores_sigchld(exported, tmp_path):
    code = textwrap.dedent(f"""
        import signal, edgetl_runtime
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel: waitpid has nothing to wait for
        print(edgetl_runtime.load({str(exported.tflite_int8)!r}).predict({exported.images[0]!r}).verdict)
    """)
    env = {**os.environ, "EDGETL_PROBE_CACHE": str(tmp_path / "probed-models")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() in ("defect", "good"), proc.stderr[-2000:]


def test_a_model_that_produces_more_outputs_than_it_declares_is_refused_at_load(exported, tmp_path):
    # Found by the fuzz: the last op rewired to a bigger tensor; the declared output (1, 2) became (1, 13, 13, 8)
    # at allocation, and predict indexed past the labels (an IndexError in the middle of a batch).
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    obj = schema.ModelT.InitFromPackedBuf(bytearray(exported.tflite_fp32.read_bytes()), 0)
    graph = obj.subgraphs[0]
    sizes = [int(np.prod(t.shape)) if t.shape is not None and i not in list(graph.inputs) else 0
             for i, t in enumerate(graph.tensors)]
    graph.operators[-1].inputs = np.array([int(np.argmax(sizes))], dtype=np.int32)  # the softmax reads a feature map
    builder = flatbuffers.Builder(0)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "rewired.tflite"
    path.write_bytes(bytes(builder.Output()))
    with pytest.raises(ModelFormatError, match="declares 2 outputs but produces"):
        edgetl_runtime.load(path)

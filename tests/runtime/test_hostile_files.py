"""Hostile files, round two (issue 27): no image format runs a program, memory bounded, no hang, no forged output.

Each test names what it did before the fix. Memory is measured in a child process (its peak RSS
as the kernel counts it), never by timing.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import edgetl_runtime
from edgetl_runtime.cli import main
from edgetl_runtime.errors import ImageError, MetadataError, ModelFormatError
from edgetl_runtime.preprocess import load_image, probe_image
from edgetl_runtime.profiles import ProfileError, load_profile

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import fuzz_cases  # noqa: E402

RGB = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS from /proc and fork (Linux)")


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from edgetl_runtime.cli import main; sys.exit(main())", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _peak_mb(code: str, env: dict | None = None) -> tuple[float, str]:
    """Run ``code`` in a fresh Python; return its peak RSS growth over the imports (MB) and its output."""
    script = textwrap.dedent("""
        import resource, edgetl_runtime, edgetl_runtime.preprocess
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
        {body}
        except Exception as exc:
            print("raised", type(exc).__name__, str(exc)[:300])
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print("growth_mb", (peak - base) / 1024)
    """).format(body=textwrap.indent(textwrap.dedent(code), "    "))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-2000:]
    growth = float(done.stdout.split("growth_mb")[-1])
    return growth, done.stdout


# --------------------------------------------------------------------------- image formats by content


@pytest.fixture()
def fake_ghostscript(tmp_path):
    """A ``gs`` first on PATH that records that it ran (the fuzz suite's stand-in for Ghostscript)."""
    import fuzz

    ran = fuzz.fake_programs(tmp_path / "bin")
    return {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}, ran


def test_an_eps_file_named_png_never_starts_ghostscript(exported, tmp_path, fake_ghostscript):
    env, ran = fake_ghostscript
    attack = tmp_path / "attack.png"
    attack.write_bytes(fuzz_cases.foreign_image("EPS", RGB))
    # The test's own check: plain Pillow, given the same file, does start the stand-in.
    subprocess.run([sys.executable, "-c", f"from PIL import Image; im = Image.open({str(attack)!r}); im.load()"],
                   capture_output=True, env={**os.environ, **env}, timeout=60)
    assert ran.exists(), "Pillow did not start gs: this test would prove nothing"
    ran.unlink()
    done = _cli("predict", str(exported.tflite_int8), str(attack), env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "a PostScript (EPS) file by its content" in done.stderr and "convert it to PNG" in done.stderr
    assert not ran.exists(), f"a program ran: {ran.read_text() if ran.exists() else ''}"


@pytest.mark.parametrize("fmt, named", [("DDS", "DDS"), ("BLP", "BLP"), ("ICNS", "ICNS"), ("PSD", "Photoshop (PSD)"),
                                        ("GIF", "GIF"), ("PDF", "PDF"), ("JPEG2000", "JPEG 2000"), ("QOI", "QOI"),
                                        ("PCX", None), ("TGA", None), ("SGI", None)])
def test_formats_edgetl_does_not_read_are_refused_by_content_whatever_the_name(tmp_path, fmt, named):
    # Before: DDS and BLP gave a NotImplementedError traceback in data inspect and train; every format Pillow knew was tried.
    path = tmp_path / "part.png"
    path.write_bytes(fuzz_cases.foreign_image(fmt, RGB))
    if fmt != "PDF":  # Pillow writes PDF but does not read it
        Image.open(io.BytesIO(path.read_bytes())).load()  # the file itself is valid: Pillow reads it
    for read in (lambda: load_image(path, (32, 32)), lambda: probe_image(path)):
        with pytest.raises(ImageError) as caught:
            read()
        assert "edgetl reads PNG, JPEG, BMP, TIFF and WebP only" in str(caught.value)
        assert (f"a {named} file by its content" if named else "not PNG, JPEG, BMP, TIFF or WebP") in str(caught.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"])
def test_the_documented_formats_still_read_whatever_their_name(tmp_path, fmt):
    path = tmp_path / "named-wrongly.jpg"
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())
    assert load_image(path, (32, 32)).shape == (32, 32, 3)


def test_the_eval_gallery_reads_thumbnails_through_the_same_allow_list(tmp_path, fake_ghostscript):
    env, ran = fake_ghostscript
    attack = tmp_path / "attack.png"
    attack.write_bytes(fuzz_cases.foreign_image("EPS", RGB))
    code = f"from edgetl.reports import _thumbnail; print(_thumbnail({str(attack)!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert done.stdout.strip() == "None" and not ran.exists(), done.stderr[-1000:]


# --------------------------------------------------------------------------- memory from tiny images


def test_a_progressive_jpeg_declaring_30000_squared_is_refused_before_decoding(tmp_path):
    # Before: a 7 KB file took 2.7-5.3 GB in predict (exit 0) and in data inspect ("All files readable").
    path = tmp_path / "bomb.jpg"
    path.write_bytes(fuzz_cases.set_jpeg_size(fuzz_cases.jpeg_seed(RGB, "progressive"), 30000, 30000))
    assert path.stat().st_size < 10_000
    for read in (lambda: load_image(path, (224, 224)), lambda: probe_image(path)):
        with pytest.raises(ImageError, match="a progressive JPEG of 30000x30000"):
            read()


@LINUX
@pytest.mark.parametrize("kind", ["420", "444"])
def test_a_baseline_jpeg_declaring_30000_squared_decodes_in_bounded_memory(tmp_path, kind):
    # Before: a 4 KB 4:2:0 file took 2.9 GB. Now JPEG is decoded at 1/8 scale: 3750x3750 at most.
    path = tmp_path / "big.jpg"
    path.write_bytes(fuzz_cases.set_jpeg_size(fuzz_cases.jpeg_seed(RGB, kind), 30000, 30000))
    growth, out = _peak_mb(f"""
        edgetl_runtime.preprocess.load_image({str(path)!r}, (224, 224))
        edgetl_runtime.preprocess.probe_image({str(path)!r})
    """)
    assert growth < 400, out


@LINUX
def test_a_16_bit_png_of_8000_squared_converts_in_bands(tmp_path):
    # Before: 1.65 GB (the whole image as float64). Now: the decoded 16-bit image plus one band.
    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((8000, 8000), np.uint16)).save(path)
    assert path.stat().st_size < 1_000_000
    growth, out = _peak_mb(f"print(edgetl_runtime.preprocess.load_image({str(path)!r}, (224, 224)).shape)")
    assert "(224, 224, 3)" in out and growth < 450, out


def test_the_banded_conversion_equals_the_whole_image_one():
    from edgetl_runtime.preprocess import _to_uint8

    rng = np.random.default_rng(1)
    wide = rng.integers(0, 65536, (700, 33), dtype=np.uint16)
    floats = rng.uniform(0, 1, (600, 17)).astype(np.float32)
    assert np.array_equal(_to_uint8(Image.fromarray(wide), rows=256),
                          np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    assert np.array_equal(_to_uint8(Image.fromarray(floats, mode="F"), rows=100),
                          np.clip(np.rint(floats.astype(np.float64) * 255.0), 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- memory from tiny models


@LINUX
@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Resize"])
def test_an_onnx_that_allocates_gigabytes_when_it_runs_is_refused_and_memory_stays_bounded(tmp_path, op):
    # Before: a 1 KB ConstantOfShape [32768, 32768] took 4.3-8.8 GB.
    path = tmp_path / "tiny.onnx"
    path.write_bytes(fuzz_cases.allocating_onnx(32768, op))
    growth, out = _peak_mb(f"edgetl_runtime.load({str(path)!r}).predict(__import__('numpy').zeros((8, 8, 3), 'uint8'))",
                           env={"EDGETL_PROBE_CACHE": str(tmp_path / "probed")})
    assert "raised ModelFormatError" in out and "MB of memory" in out or "memory capped" in out, out
    assert growth < 1100, out


@LINUX
def test_a_tflite_fill_that_allocates_gigabytes_when_it_runs_is_refused(tmp_path):
    # Before: a 2.3 KB .tflite whose FILL output declares [1, 1] took 3.5 GB (the child failed, the parent built it).
    seed = fuzz_cases.write_fill_tflite(tmp_path / "fill.tflite")
    path = tmp_path / "big-fill.tflite"
    path.write_bytes(fuzz_cases.set_fill_side(seed.read_bytes(), 32768.0))
    growth, out = _peak_mb(f"edgetl_runtime.load({str(path)!r}).predict(__import__('numpy').zeros((8, 8, 3), 'uint8'))",
                           env={"EDGETL_PROBE_CACHE": str(tmp_path / "probed")})
    assert "raised ModelFormatError" in out and "memory capped at 768 MB" in out, out
    assert growth < 1100, out


@LINUX
def test_small_allocating_graphs_still_load_and_the_cap_is_a_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETL_PROBE_CACHE", str(tmp_path / "probed"))
    small = tmp_path / "small.onnx"
    small.write_bytes(fuzz_cases.allocating_onnx(64))
    assert edgetl_runtime.load(small).predict(RGB).top_probability > 0
    seed = fuzz_cases.write_fill_tflite(tmp_path / "fill.tflite")
    assert edgetl_runtime.load(seed).predict(RGB).top_probability > 0
    medium = tmp_path / "medium.onnx"  # 8192² floats: 256 MB, within the default cap, beyond a 128 MB one
    medium.write_bytes(fuzz_cases.allocating_onnx(8192))
    monkeypatch.setenv("EDGETL_PROBE_MEMORY_MB", "128")
    with pytest.raises(ModelFormatError, match="more than 128 MB of memory"):
        edgetl_runtime.load(medium)
    monkeypatch.setenv("EDGETL_PROBE_MEMORY_MB", "1024")
    assert edgetl_runtime.load(medium).predict(RGB).top_probability > 0


def test_onnx_external_data_is_read_beside_the_model_never_from_the_current_folder(exported, tmp_path, monkeypatch):
    # Before: external data was resolved against the current directory.
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(exported.onnx)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=256)
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, folder / "m.onnx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(b"\0" * (folder / "weights.bin").stat().st_size)  # a decoy
    monkeypatch.chdir(elsewhere)
    got = edgetl_runtime.load(folder / "m.onnx").predict(exported.images[0])
    want = edgetl_runtime.load(exported.onnx).predict(exported.images[0])
    assert got.top_probability == pytest.approx(want.top_probability, abs=1e-6)
    for tensor in model.graph.initializer:  # now a location that leads out of the model's folder
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere/weights.bin"
    (folder / "escape.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelFormatError):
        edgetl_runtime.load(folder / "escape.onnx")


# --------------------------------------------------------------------------- hangs and huge files


def test_a_fifo_among_the_profiles_or_named_as_one_never_hangs(exported, tmp_path):
    # Before: a FIFO named *.toml in the profiles folder hung predict --profile and devices list.
    devices = tmp_path / "devices"
    devices.mkdir()
    os.mkfifo(devices / "line-3.toml")
    env = {"EDGETL_DEVICES_DIR": str(devices)}
    done = _cli("predict", str(exported.tflite_int8), exported.images[0], "--profile", "raspberry-pi-4", env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-1000:]
    devices_list = [sys.executable, "-c", "import sys; from edgetl.cli import main; sys.exit(main())", "devices", "list"]
    done = subprocess.run(devices_list, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert done.returncode == 0 and "raspberry-pi-4" in done.stdout, done.stderr[-1000:]
    with pytest.raises(ProfileError, match=r"not a regular file \(a pipe \(FIFO\)\)"):
        load_profile(devices / "line-3.toml")


def test_a_300_mb_profile_is_refused_unread(tmp_path):
    path = tmp_path / "huge.toml"
    with path.open("wb") as f:  # sparse: no disk used
        f.truncate(300 * 2**20)
    with pytest.raises(ProfileError, match="more than the 1,048,576 a file of this kind may have"):
        load_profile(path)


def test_thread_counts_are_bounded_where_they_are_given(exported):
    # Before: --threads 100000 segfaulted predict; bench --concurrency 100000 raised "can't start new thread".
    runner = CliRunner()
    for args in (["predict", str(exported.tflite_int8), exported.images[0], "--threads", "100000"],
                 ["bench", str(exported.tflite_int8), "--concurrency", "100000"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and "is not in the range 1<=x<=256" in result.output, result.output
    with pytest.raises(edgetl_runtime.backends.DeviceError, match="give 1 to 256 CPU threads"):
        edgetl_runtime.load(exported.tflite_int8, threads=100_000)


# --------------------------------------------------------------------------- numbers of every size


def _with_contract(exported, tmp_path, edit) -> Path:
    from edgetl_runtime.metadata import METADATA_KEY, embed_tflite_entries, file_entries

    data = exported.tflite_int8.read_bytes()
    raw = file_entries(data, "tflite")[METADATA_KEY]
    path = tmp_path / "edited.tflite"
    text = edit(raw if isinstance(raw, str) else bytes(raw).decode())
    path.write_bytes(embed_tflite_entries(data, {METADATA_KEY: text.encode()}))
    return path


@pytest.mark.parametrize("number", ["1" + "0" * 400, "-" + "9" * 400, "1e400"])
def test_a_huge_number_in_a_contract_is_one_clear_error(exported, tmp_path, number):
    # Before: OverflowError (a traceback) wherever the number was first turned into a float.
    def edit(text: str) -> str:
        doc = json.loads(text)
        doc["decision"] = {**doc.get("decision", {}), "threshold": "@"}
        doc["input"]["mean"] = ["@@"]
        return json.dumps(doc).replace('"@"', number).replace('"@@"', number)

    with pytest.raises(MetadataError, match="out of range|not a finite number"):
        edgetl_runtime.load(_with_contract(exported, tmp_path, edit))


@pytest.mark.parametrize("value, found", [("9" * 400, "out of range"), ("[" * 500 + "]" * 500, "nested too deeply"),
                                          ("{ a = " * 100 + "1" + " }" * 100, "nested more than 64 levels"),
                                          ("nan", "not a finite number")])
def test_a_hostile_value_in_a_profile_is_a_profile_error_naming_the_key(tmp_path, value, found):
    # Before: OverflowError and RecursionError tracebacks.
    seed = Path(__file__).resolve().parents[2] / "devices" / "raspberry-pi-4.toml"
    lines = seed.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("p50_ms = 30"))
    lines[i] = f"p50_ms = {value}"
    path = tmp_path / "raspberry-pi-4.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(ProfileError, match=found) as caught:
        load_profile(path)
    assert len(str(caught.value)) < 600
    if found == "out of range":
        assert "budget.p50_ms" in str(caught.value)


def test_a_huge_number_in_an_imprint_manifest_is_one_clear_error(exported, tmp_path):
    import zipfile

    corpus = fuzz_cases.Corpus([exported.tflite_int8], [], [Path(exported.images[0])], Path(), [])
    with zipfile.ZipFile(io.BytesIO(corpus.imprint())) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(entries["edgetl-imprint.json"])
    manifest["counts"] = ["@"]
    entries["edgetl-imprint.json"] = json.dumps(manifest).replace('"@"', "7" * 400).encode()
    path = tmp_path / "m.imprint"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(MetadataError, match="out of range"):
        edgetl_runtime.load(path)


# --------------------------------------------------------------------------- labels and forged output


def test_a_label_with_newlines_and_tabs_cannot_forge_rows_in_predict(exported, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("ok\\tdefect\\t0.0\nscratch\n")  # pycoral-style text cannot hold a raw newline in one label
    path = _with_contract(exported, tmp_path, lambda t: t.replace('"defect"', '"defect\\n/forged.png\\tgood\\t0.0000"'))
    result = CliRunner().invoke(main, ["predict", str(path), exported.images[0]])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line]
    assert len(rows) == 2 and all(row.count("\t") == 4 for row in rows), rows  # the header and one image
    odd = tmp_path / "odd\nname.png"
    odd.write_bytes(Path(exported.images[0]).read_bytes())
    result = CliRunner().invoke(main, ["predict", str(exported.tflite_int8), str(odd)])
    assert [line.count("\t") for line in result.output.splitlines() if line] == [4, 4], result.output


def test_a_byte_order_mark_is_not_part_of_the_first_label(exported, tmp_path):
    # Before: "\ufeffdefect" stayed the first label.
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeffdefect\r\ngood\r\n".encode("utf-8"))
    model = edgetl_runtime.load(exported.tflite_int8, labels=labels)
    assert model.labels == ("defect", "good")


def test_repeated_labels_are_read_with_a_warning_naming_file_lines_and_label(bare, tmp_path):
    # Before: Google's imagenet_labels.txt ("crane" twice) was refused with a 12.9 KB message naming neither.
    labels = tmp_path / "imagenet_labels.txt"
    labels.write_text("background\ncrane\n\ncrane\ngood\n")  # the ImageNet "background" line, dropped for 3 outputs
    model = edgetl_runtime.load(bare.uint8, labels=labels)
    assert model.labels == ("crane", "crane (output 1)", "good")
    note = " ".join(model.info.notes)
    assert str(labels) in note and "'crane' at line 2, line 4" in note, note
    prediction = model.predict(RGB)
    assert prediction.top_class in model.labels and len(prediction.probabilities) == 3
    result = CliRunner().invoke(main, ["predict", str(bare.uint8), str(_png(tmp_path)), "--labels", str(labels)])
    assert result.exit_code == 0 and "'crane' at line 2, line 4" in result.output, result.output


def _png(folder: Path) -> Path:
    path = folder / "part.png"
    Image.fromarray(RGB).save(path)
    return path


def test_error_messages_quote_a_few_hundred_characters_of_the_data_at_most(exported, tmp_path):
    long_label = "x" * 100_000
    path = _with_contract(exported, tmp_path, lambda t: t.replace('"defect"', f'"{long_label}", "{long_label}"'))
    with pytest.raises(MetadataError) as caught:
        edgetl_runtime.load(path)
    assert len(str(caught.value)) < 800, len(str(caught.value))


def test_predict_on_a_folder_lists_what_it_could_not_read(exported, tmp_path):
    # Before: broken or looping symlinks were skipped without a line.
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.png").write_bytes(Path(exported.images[0]).read_bytes())
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")
    result = CliRunner().invoke(main, ["predict", str(exported.tflite_int8), str(folder)])
    assert result.exit_code == 1, result.output
    out = result.output
    assert "gone.png: a symlink that leads nowhere" in out and "loop.png: a symlink that leads nowhere" in out
    assert "pipe.png: not a regular file" in out and "3 image(s) could not be classified" in out
    assert sum(1 for line in out.splitlines() if line.startswith(str(folder / "a.png"))) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any folder: chmod 000 does not make one unreadable")
def test_predict_on_a_folder_says_which_subfolder_it_cannot_list(exported, tmp_path):
    folder = tmp_path / "parts"
    (folder / "locked").mkdir(parents=True)
    (folder / "a.png").write_bytes(Path(exported.images[0]).read_bytes())
    (folder / "locked").chmod(0)
    try:
        result = CliRunner().invoke(main, ["predict", str(exported.tflite_int8), str(folder)])
    finally:
        (folder / "locked").chmod(0o755)
    assert result.exit_code == 1 and "locked: cannot be listed" in result.output, result.output


def test_a_model_dropped_frees_its_engine_at_once_without_waiting_for_the_garbage_collector(exported):
    # Found by the fuzz: a closure over the LiteRT backend made a reference cycle, so a dropped model kept its
    # interpreters (and the gigabytes a graph had allocated) until the next GC pass.
    import gc
    import weakref

    collecting = gc.isenabled()
    gc.disable()
    try:
        for path in (exported.tflite_int8, exported.onnx):
            model = edgetl_runtime.load(path, threads=1)
            model.predict(exported.images[0])
            engine, whole = weakref.ref(model._backend), weakref.ref(model)
            del model
            assert whole() is None and engine() is None, path
    finally:
        if collecting:
            gc.enable()


def test_a_small_file_is_read_without_a_buffer_of_the_limit(tmp_path):
    # Before: every image was read with f.read(256 MB + 1): a 256 MB allocation per part (not touched, so
    # not resident, but an mmap and munmap per image, and 256 MB in tracemalloc's books).
    import tracemalloc

    from edgetl_runtime.safefile import TooLarge, read_regular

    path = tmp_path / "part.png"
    path.write_bytes(b"x" * 100_000)
    tracemalloc.start()
    try:
        assert read_regular(path, 256 * 2**20) == b"x" * 100_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300_000, f"reading 100 kB allocated {peak:,} bytes"
    # a file whose size the kernel does not tell (st_size 0, like one still growing) is still read whole
    status = read_regular("/proc/self/status", 2**20)
    assert status.startswith(b"Name:") and b"VmRSS" in status
    with pytest.raises(TooLarge, match="more than the 64 bytes"):
        read_regular("/proc/self/status", 64)

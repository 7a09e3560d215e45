"""Bring your own model: channels-first ONNX classifiers as PyTorch exports them, `adopt`, and files that are no model.

The ONNX graphs are built here with ``onnx.helper`` the way ``torch.onnx.export`` writes them:
an NCHW float input named ``input`` with a dynamic ``batch_size`` axis, Conv/Relu/GlobalAveragePool/
Flatten/Gemm, logits out (timm, torchvision) or a Softmax at the end and Ultralytics' metadata
(``names``, ``imgsz``, ``task``). The reference is ONNX Runtime called by hand with each source's
documented preprocessing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import edgetl_runtime
from edgetl_runtime.errors import EdgetlRuntimeError, ModelFormatError

RUNTIME = str(Path(sys.executable).parent / "edgetl-runtime")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def torch_like_onnx(path: Path, classes: int = 5, size: int | None = 32, softmax: bool = False, nhwc: bool = False,
                    input_type: int = TensorProto.FLOAT, props: dict[str, str] | None = None, seed: int = 0) -> Path:
    """Write a small classifier as torch.onnx.export writes one (NCHW unless ``nhwc``) and return its path."""
    rng = np.random.default_rng(seed)
    side = size if size else "height"
    dims = ["batch_size", side, size or "width", 3] if nhwc else ["batch_size", 3, side, size or "width"]
    nodes, inits = [], [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "conv.weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv.bias"),
        numpy_helper.from_array(rng.normal(0, 0.5, (classes, 8)).astype(np.float32), "fc.weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "fc.bias"),
    ]
    x = "input"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], ["x_float"], to=TensorProto.FLOAT))
        x = "x_float"
    if nhwc:
        nodes.append(helper.make_node("Transpose", [x], ["x_nchw"], perm=[0, 3, 1, 2]))
        x = "x_nchw"
    nodes += [
        helper.make_node("Conv", [x, "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits" if softmax else "output"], transB=1),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["output"], axis=1))
    graph = helper.make_graph(nodes, "main_graph", [helper.make_tensor_value_info("input", input_type, dims)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", classes])],
                              inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    for key, value in (props or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


ULTRALYTICS = {"description": "Ultralytics YOLOv8n-cls model trained on parts.yaml", "author": "Ultralytics",
               "task": "classify", "batch": "1", "imgsz": "[32, 32]", "stride": "1",
               "names": "{0: 'dent', 1: 'good', 2: 'scratch'}"}  # fmt: skip


def by_hand(model: Path, image: Path, size: int, mean, std, resample=Image.BILINEAR, softmax=True) -> np.ndarray:
    """ONNX Runtime called by hand: the source's preprocessing (resize, /255, mean/std, NCHW), then a softmax."""
    img = Image.open(image).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), resample)
    x = (np.asarray(img, np.float32) / 255.0 - mean) / std
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    out = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0][0]
    if not softmax:
        return out
    e = np.exp(out - out.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(7)
    paths = []
    for i, shape in enumerate(((32, 32, 3), (32, 32, 3), (48, 64, 3), (40, 40, 3))):
        path = folder / f"part_{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RUNTIME, *args], capture_output=True, text=True, timeout=120)


def predictions(*args: str) -> list[dict]:
    done = run("predict", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("preset, resample", [("timm", Image.BICUBIC), ("torchvision", Image.BILINEAR)])
def test_a_pytorch_export_gives_the_scores_of_onnx_runtime_by_hand(tmp_path, images, preset, resample):
    bare = torch_like_onnx(tmp_path / "resnet.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("crack\ngood\nscratch\nsmudge\nchip\n")
    out = tmp_path / "adopted.onnx"
    done = run("adopt", str(bare), "--preset", preset, "--labels", str(labels), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "NCHW RGB 32x32" in done.stdout and "logits" in done.stdout
    # the graph's bytes are unchanged: the file is the original with the contract appended
    assert out.read_bytes().startswith(bare.read_bytes())
    rows = predictions(str(out), *map(str, images))
    for row, image in zip(rows, images):
        expected = by_hand(bare, image, 32, IMAGENET_MEAN, IMAGENET_STD, resample)
        got = np.array([row["probabilities"][name] for name in ("crack", "good", "scratch", "smudge", "chip")])
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert row["top_class"] == ("crack", "good", "scratch", "smudge", "chip")[int(expected.argmax())]
        assert row["defect_score"] == pytest.approx(1 - expected[1], abs=1e-4) and row["verdict"] in ("good", "defect")
    spec = edgetl_runtime.read_spec(out)
    assert spec.input.layout == "nchw" and spec.output.kind == "logits" and spec.good_labels == ("good",)
    assert "adopt" in spec.provenance.weights and preset in spec.provenance.weights


def test_an_ultralytics_classifier_brings_its_labels_and_size(tmp_path, images):
    bare = torch_like_onnx(tmp_path / "yolov8n-cls.onnx", classes=3, softmax=True, props=ULTRALYTICS)
    out = tmp_path / "parts.onnx"
    done = run("adopt", str(bare), "--preset", "ultralytics-cls", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "3 labels from the file's Ultralytics metadata" in done.stderr
    rows = predictions(str(out), *map(str, images))
    for row, image in zip(rows, images):
        expected = by_hand(bare, image, 32, np.zeros(3, np.float32), np.ones(3, np.float32), softmax=False)
        got = np.array([row["probabilities"][name] for name in ("dent", "good", "scratch")])
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert row["verdict"] == ("defect" if 1 - expected[1] >= 0.5 else "good")
    # a detector is not a classifier: said, nothing written
    detector = torch_like_onnx(tmp_path / "yolov8n.onnx", classes=3, props={**ULTRALYTICS, "task": "detect"})
    done = run("adopt", str(detector), "--preset", "ultralytics-cls", "-o", str(tmp_path / "d.onnx"))
    assert done.returncode == 2 and "an Ultralytics detect model" in done.stderr
    assert not (tmp_path / "d.onnx").exists()


def test_bench_and_serve_run_an_adopted_model(tmp_path, images):
    out = tmp_path / "adopted.onnx"
    edgetl_runtime.adopt(torch_like_onnx(tmp_path / "m.onnx", classes=3, softmax=True, props=ULTRALYTICS), out,
                         preset="ultralytics-cls")  # fmt: skip
    done = run("bench", str(out), "--runs", "5", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["runs"] == 5 and report["stages"]["inference"]["p50"] > 0
    incoming = tmp_path / "in"
    incoming.mkdir()
    for image in images:
        (incoming / image.name).write_bytes(image.read_bytes())
    results = tmp_path / "results.jsonl"
    done = subprocess.run([RUNTIME, "serve", str(out), "--source", f"dir:{incoming}?settle_ms=0&once=1", "--no-http",
                           "--sink", f"jsonl:{results}", "--history", str(tmp_path / "h.sqlite")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    expected = by_hand(out, images[0], 32, np.zeros(3, np.float32), np.ones(3, np.float32), softmax=False)
    first = next(r for r in rows if r["part_id"] == images[0].name)
    assert len(rows) == len(images) and first["defect_score"] == pytest.approx(1 - expected[1], abs=1e-4)


def test_a_bare_nchw_model_runs_says_its_guess_once_and_does_not_print_logits_as_probabilities(tmp_path, images):
    bare = torch_like_onnx(tmp_path / "bare.onnx")
    done = run("predict", str(bare), *map(str, images))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("ImageNet mean/std") == 1 and "edgetl-runtime adopt" in done.stderr  # the guess, once
    assert done.stderr.count("not probabilities") == 1 and "--softmax" in done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()[1:]]
    assert len(rows) == 4 and all(r[1] == "-" and r[4] == "-" for r in rows)  # no verdict, no "probability"
    raw = predictions(str(bare), str(images[0]))[0]
    assert "top_probability" not in raw and "top_score" in raw and raw["score_kind"] == "raw"
    expected = by_hand(bare, images[0], 32, IMAGENET_MEAN, IMAGENET_STD, softmax=False)  # the guess: ImageNet
    np.testing.assert_allclose([raw["scores"][str(i)] for i in range(5)], expected, atol=1e-4)
    soft = predictions(str(bare), str(images[0]), "--softmax")[0]
    assert sum(soft["probabilities"].values()) == pytest.approx(1, abs=1e-5) and "score_kind" not in soft


def test_channels_first_uint8_and_a_bgr_nhwc_graph(tmp_path, images):
    # uint8 NCHW (a Cast inside): raw pixels, transposed in the one copy
    u8 = torch_like_onnx(tmp_path / "u8.onnx", input_type=TensorProto.UINT8)
    model = edgetl_runtime.load(u8, softmax=True)
    assert model.info.spec.input.layout == "nchw" and model.info.spec.input.normalization == "model"
    pixels = np.asarray(Image.open(images[0]).convert("RGB"))
    session = ort.InferenceSession(str(u8), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": pixels.transpose(2, 0, 1)[None].copy()})[0][0]
    np.testing.assert_allclose(model.scores(pixels[None])[0], softmax(logits), atol=1e-5)
    # a Keras-applications ResNet50-like NHWC graph taking BGR minus the Caffe mean
    nhwc = torch_like_onnx(tmp_path / "caffe.onnx", nhwc=True)
    out = tmp_path / "caffe-edgetl.onnx"
    edgetl_runtime.adopt(nhwc, out, preset="keras-caffe", output="logits")
    model = edgetl_runtime.load(out)
    assert model.info.spec.input.channel_order == "bgr" and model.info.spec.input.layout == "nhwc"
    x = pixels[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
    logits = ort.InferenceSession(str(nhwc), providers=["CPUExecutionProvider"]).run(None, {"input": x[None]})[0][0]
    np.testing.assert_allclose(model.scores(pixels[None])[0], softmax(logits), atol=1e-5)


def test_a_dynamic_image_size_needs_size_and_adopt_guesses_nothing(tmp_path):
    dynamic = torch_like_onnx(tmp_path / "dynamic.onnx", size=None)
    with pytest.raises(ModelFormatError, match="dynamic"):
        edgetl_runtime.load(dynamic)
    done = run("adopt", str(dynamic), "--preset", "timm", "-o", str(tmp_path / "x.onnx"))
    assert done.returncode == 2 and "--size HxW" in done.stderr
    done = run("adopt", str(dynamic), "--preset", "timm", "--size", "48x40", "-o", str(tmp_path / "x.onnx"))
    assert done.returncode == 0, done.stderr
    assert edgetl_runtime.load(tmp_path / "x.onnx").input_size == (48, 40)
    fixed = torch_like_onnx(tmp_path / "fixed.onnx")
    for args, said in ((["--output-kind", "logits"], "how is its float32 input scaled"),
                       (["--mean", "0", "--std", "255"], "what does its output hold"),
                       (["--preset", "timm", "--layout", "nhwc"], "its channels second (nchw)"),
                       (["--preset", "timm", "--size", "64x64"], "fixed at 32x32"),
                       (["--preset", "timm", "--good", "nothing"], "not among the labels")):  # fmt: skip
        done = run("adopt", str(fixed), *args, "-o", str(tmp_path / "y.onnx"))
        assert done.returncode == 2 and said in done.stderr, (args, done.stderr)
        assert not (tmp_path / "y.onnx").exists()
    spec, _ = edgetl_runtime.adopt(fixed, tmp_path / "z.onnx", preset="timm", mean=127.5)  # std stays the preset's
    assert spec.input.mean == (127.5,) * 3 and spec.input.std == pytest.approx((58.395, 57.12, 57.375))
    done = run("adopt", str(fixed), "--preset", "timm", "-o", str(fixed))
    assert done.returncode == 2 and "keeps" in done.stderr


def test_adopt_refuses_an_edgetl_export_and_can_be_redone(tmp_path, exported):
    done = run("adopt", str(exported.onnx), "--preset", "timm", "-o", str(tmp_path / "x.onnx"))
    assert done.returncode == 2 and "`edgetl export` wrote" in done.stderr
    first = tmp_path / "first.onnx"
    edgetl_runtime.adopt(torch_like_onnx(tmp_path / "m.onnx"), first, preset="timm")
    again = tmp_path / "again.onnx"
    edgetl_runtime.adopt(first, again, preset="torchvision", threshold=0.3)  # the earlier adopted contract replaced
    spec = edgetl_runtime.read_spec(again)
    assert spec.input.resize == "bilinear" and spec.threshold == 0.3
    assert onnx.load(str(again)).metadata_props[-1].key == "edgetl" and len(onnx.load(str(again)).metadata_props) == 1


def test_adopt_a_tflite_model(tmp_path, bare, images):
    out = tmp_path / "keras.tflite"
    labels = tmp_path / "labels.txt"
    labels.write_text("background\nscratch\ngood\n")
    spec, notes = edgetl_runtime.adopt(bare.float32, out, preset="keras-applications", labels=labels,
                                       output="logits")  # fmt: skip
    assert spec.input.layout == "nhwc" and spec.input.mean == (127.5,) * 3
    adopted, by_option = edgetl_runtime.load(out), edgetl_runtime.load(bare.float32, labels=labels, softmax=True)
    pixels = np.asarray(Image.open(images[0]).convert("RGB").resize((24, 24)))[None]
    np.testing.assert_array_equal(adopted.scores(pixels), by_option.scores(pixels))
    assert adopted.info.notes == ()  # nothing guessed


@pytest.mark.parametrize("name, content, said", [
    ("best.pt", b"PK\x03\x04" + b"\x00" * 26 + b"best/data.pkl" + b"ultralytics.nn.tasks", "an Ultralytics YOLO checkpoint"),
    ("resnet.pth", b"PK\x03\x04" + b"\x00" * 26 + b"archive/data.pkl", "a PyTorch checkpoint"),
    ("old.pth", b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.", "a PyTorch checkpoint"),
    ("model.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "a Keras HDF5 model"),
    ("model.keras", b"PK\x03\x04" + b"\x00" * 26 + b"config.json", "a Keras 3 model"),
    ("frozen.pb", b"\x0a\x0c\x0a\x05input\x12\x03Placeholder", "a TensorFlow graph"),
    ("model.engine", b"ftrt" + b"\x00" * 64, "a TensorRT engine"),
    ("model.safetensors", b"\x40\x00\x00\x00\x00\x00\x00\x00{}", "a safetensors file"),
])  # fmt: skip
def test_files_that_are_not_models_the_runtime_runs_say_what_they_are(tmp_path, name, content, said):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EdgetlRuntimeError, match=said):
        edgetl_runtime.load(path)
    done = run("predict", str(path), str(path))
    assert done.returncode == 2 and said in done.stderr and ".onnx" in done.stderr
    assert "Traceback" not in done.stderr and "imprinted" not in done.stderr


def test_a_savedmodel_folder_says_how_to_convert_it(tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(EdgetlRuntimeError, match="a TensorFlow SavedModel.*tf2onnx"):
        edgetl_runtime.load(folder)


def test_an_nchw_contract_round_trips_and_nhwc_contracts_keep_their_bytes():
    from edgetl_runtime.contract import InputSpec, ModelSpec

    nhwc = ModelSpec(labels=("a", "good"), input=InputSpec(8, 8))
    assert "layout" not in nhwc.to_json() and "channel_order" not in nhwc.to_json()
    nchw = nhwc.replace(input=InputSpec(8, 8, normalization="runtime", mean=(1.0,) * 3, std=(2.0,) * 3,
                                        layout="nchw", channel_order="bgr"))  # fmt: skip
    assert ModelSpec.from_json(nchw.to_json()) == nchw
    with pytest.raises(Exception, match="input layout must be one of"):
        InputSpec(8, 8, layout="ncwh")
    nchw.check_model((1, 3, 8, 8), 2, "m.onnx")
    with pytest.raises(Exception, match="height 8 but the model's input tensor has 9"):
        nchw.check_model((1, 3, 9, 8), 2, "m.onnx")


def test_a_channels_first_tflite_model_runs_on_litert(tmp_path, images):
    # onnx2tf can keep a PyTorch model's NCHW input; LiteRT then gets (1, 3, H, W) as well
    from .conftest import tf_modules, to_tflite

    _, keras = tf_modules()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 24, 24), batch_size=1)
    x = keras.layers.Permute((2, 3, 1))(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    net = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "nchw.tflite"
    path.write_bytes(to_tflite(net))
    out = tmp_path / "nchw-edgetl.tflite"
    edgetl_runtime.adopt(path, out, mean=(0.0,), std=(255.0,), output="probabilities", labels=["a", "good", "c"])
    model = edgetl_runtime.load(out)
    assert model.info.engine in ("litert", "tflite_runtime", "tensorflow") and model.info.spec.input.layout == "nchw"
    pixels = np.asarray(Image.open(images[0]).convert("RGB").resize((24, 24)))
    expected = net.predict((pixels.astype(np.float32) / 255).transpose(2, 0, 1)[None], verbose=0)[0]
    np.testing.assert_allclose(model.scores(pixels[None])[0], expected, atol=1e-5)
    assert model.predict(pixels).verdict in ("good", "defect") and model.info.notes == ()


def test_the_new_modules_examples_hold():
    import doctest

    from edgetl_runtime import adopting, model, preprocess, readout

    for module in (adopting, model, preprocess, readout):
        assert doctest.testmod(module).failed == 0, module.__name__

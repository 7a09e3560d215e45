"""End-to-end training: two phases, checkpoints, interruption and exact resume, eval, strategies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgetl.cli import main
from edgetl.training import TrainOptions, auto_unfreeze, train

pytestmark = pytest.mark.slow

TINY = dict(
    backbone="mobilenet_v2",
    weights="none",
    alpha=0.35,
    input_size=32,
    epochs=3,
    fine_tune_epochs=3,
    unfreeze=2,
    batch_size=8,
    patience=50,
    verbose=0,
)


def _weights(run_dir: Path) -> list[np.ndarray]:
    from edgetl.run import load_run

    return load_run(run_dir).load_model().get_weights()


def test_train_writes_a_complete_run_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(tiny_dataset, options=TrainOptions(**TINY), output=tmp_path / "run")
    run = result.run_dir
    for name in ("model.keras", "config.json", "metrics.json", "split.json",
                 "training_curves.png", "confusion_matrix.png", "roc_curve.png"):
        assert (run / name).is_file(), name
    assert list((run / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs missing"
    assert not (run / "checkpoints").exists(), "checkpoints should be cleared after a finished run"
    config = json.loads((run / "config.json").read_text())
    spec = json.loads((run / "model_spec.json").read_text())
    assert spec["labels"] == ["defect", "good"] and spec["good_labels"] == ["good"] and spec["task"] == "classification"
    assert spec["input"] == {"height": 32, "width": 32, "color_mode": "rgb", "resize": "bilinear",
                             "normalization": "model", "mean": [], "std": []}
    assert config["unfreeze"]["blocks"] == 2 and "user" in config["unfreeze"]["reason"]
    assert config["options"]["fine_tune_epochs"] == 3 and spec["provenance"]["weights"] == "none"
    assert len(spec["provenance"]["data_hash"]) >= 8
    assert not {"labels", "input_size", "threshold", "good_labels"} & set(config)  # stated once, in the spec
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]["phase1"]) == 3 and len(metrics["history"]["phase2"]) == 3
    assert 0.0 <= metrics["validation"]["decision_accuracy"] <= 1.0

    # The trained model evaluates through the CLI, and --target-recall stores a threshold.
    out = CliRunner().invoke(main, ["eval", str(run), str(tiny_dataset), "--target-recall", "1.0", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)  # --json: nothing but JSON on stdout
    assert report["defect_recall"] == 1.0 and report["n"] == 32
    # A threshold chosen from a handful of defects comes with a warning and the recall's interval.
    assert "defective validation images" in out.stderr and "Wilson" in out.stderr
    # The "test" data here is the training data itself: eval says the metrics are inflated.
    assert "32 of 32 test images are byte-identical to images the model was trained or validated on" in out.stderr
    low, high = report["recall_95ci"]
    assert 0 < low < high == 1.0 and report["validation_defects"] < 30
    assert (run / "eval" / tiny_dataset.name / "misclassified.html").is_file()
    stored = json.loads((run / "model_spec.json").read_text())["decision"]
    assert stored["threshold"] == pytest.approx(report["threshold"]) and "target recall" in stored["threshold_source"]

    # The stored threshold travels inside the exported file and decides is_defect on the device.
    import edgetl
    import edgetl_runtime

    exported = edgetl.export(run, edgetl.ExportOptions(), tmp_path / "model.tflite")
    device_model = edgetl_runtime.load(exported.path)
    assert device_model.info.spec.threshold == stored["threshold"]
    for path, _ in json.loads((run / "split.json").read_text())["val"]:
        pred = device_model.predict(path)
        assert pred.is_defect == (pred.defect_score >= stored["threshold"])


def test_interrupted_run_resumes_to_the_same_model(tiny_dataset: Path, tmp_path: Path) -> None:
    options = TrainOptions(**{**TINY, "fine_tune_epochs": 12})
    reference = train(tiny_dataset, options=options, output=tmp_path / "reference")

    run_dir = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "edgetl", "train", str(tiny_dataset), "-o", str(run_dir),
           "--backbone", "mobilenet_v2", "--weights", "none", "--alpha", "0.35", "--input-size", "32",
           "--epochs", "3", "--fine-tune-epochs", "12", "--unfreeze", "2", "--batch-size", "8",
           "--patience", "50"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = run_dir / "checkpoints" / "state.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text()).get("phase2", {}).get("next_epoch", 0) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "--resume" in output
    assert not (run_dir / "model.keras").exists()
    saved = json.loads(state.read_text())
    assert 2 <= saved["phase2"]["next_epoch"] < 12

    # Running again without --resume refuses to clobber the interrupted run.
    again = CliRunner().invoke(main, cmd[3:])
    assert again.exit_code != 0 and "--resume" in again.output

    resumed = train(tiny_dataset, options=options, output=run_dir, resume=True)
    assert resumed.metrics["decision_accuracy"] == reference.metrics["decision_accuracy"]
    for a, b in zip(_weights(run_dir), _weights(reference.run_dir)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fine_tuning_that_hurts_is_dropped_for_the_phase_1_model(tiny_dataset: Path, tmp_path: Path) -> None:
    from edgetl._tf import keras
    from edgetl.backbones import load_backbone
    from edgetl.run import load_run

    # A learning rate this large wrecks the unfrozen blocks: validation loss cannot beat phase 1.
    wrecked = train(tiny_dataset, options=TrainOptions(**{**TINY, "fine_tune_learning_rate": 50.0}),
                    output=tmp_path / "wrecked")
    assert "phase 1 weights" in wrecked.config["unfreeze"]["kept"]
    # Phase 1 never changes the (frozen) backbone, so the kept model's backbone is the seeded
    # initial one, layer for layer; the wrecked phase-2 weights are gone.
    keras().utils.set_random_seed(TINY.get("seed", 0))
    initial = load_backbone("mobilenet_v2", weights="none", input_size=32, alpha=0.35)
    final = load_run(wrecked.run_dir).load_model()
    for layer in initial.layers:
        for a, b in zip(layer.get_weights(), final.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_mirrored_strategy_over_two_logical_cpus(tiny_dataset: Path, tmp_path: Path) -> None:
    script = f"""
import json
from edgetl._tf import tensorflow
tf = tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from edgetl.training import TrainOptions, train
options = TrainOptions(**{json.dumps({**TINY, 'epochs': 1, 'fine_tune_epochs': 1})}, strategy="mirrored")
result = train({str(tiny_dataset)!r}, options=options, output={str(tmp_path / 'run')!r})
print(json.dumps({{"replicas": result.config["replicas"], "strategy": result.config["strategy"]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"replicas": 2, "strategy": "MirroredStrategy"}


def test_auto_unfreeze_depth_grows_with_the_data() -> None:
    depths = [auto_unfreeze(n, 17)[0] for n in (50, 200, 1000, 3000, 20000)]
    assert depths == sorted(depths) and depths[0] == 0 and depths[-1] > depths[1]
    assert auto_unfreeze(3000, 2)[0] == 2  # never more blocks than the backbone has


def test_without_input_size_the_backbones_default_size_is_used(tiny_dataset: Path, tmp_path: Path) -> None:
    # The backbone's default size is (height, width); it once reached the contract as a height and
    # every `edgetl train` without --input-size failed ("input height ... got (224, 224)").
    options = TrainOptions(**{**TINY, "input_size": None, "epochs": 1, "fine_tune_epochs": 0})
    result = train(tiny_dataset, options=options, output=tmp_path / "run")
    assert result.spec.input_size == (224, 224)
    assert tuple(result.spec.input_size) == tuple(load_run_model_input(result.run_dir))


def load_run_model_input(run_dir: Path) -> tuple[int, int]:
    from edgetl.run import load_run

    return tuple(load_run(run_dir).load_model().input_shape[1:3])


def test_a_training_that_fails_before_its_first_epoch_does_not_block_the_retry(tiny_dataset: Path, tmp_path: Path) -> None:
    # Before: the failed set-up left checkpoints/ and split.json, and the retry said "already holds a run".
    from edgetl.weights import WeightsUnavailable

    run = tmp_path / "run"
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        train(tiny_dataset, options=TrainOptions(**{**TINY, "weights": str(tmp_path / "missing.h5")}), output=run)
    assert not run.exists()  # the folder it created is gone
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsUnavailable):
        train(tiny_dataset, options=TrainOptions(**{**TINY, "weights": str(tmp_path / "missing.h5")}), output=empty)
    assert empty.is_dir() and list(empty.iterdir()) == []  # not made by the run: kept, and only its files removed
    with pytest.raises(ValueError, match="no interrupted run to resume"):  # nothing stale for --resume to reuse
        train(tiny_dataset, options=TrainOptions(**TINY), output=empty, resume=True)
    result = train(tiny_dataset, options=TrainOptions(**{**TINY, "epochs": 1, "fine_tune_epochs": 0}), output=empty)
    assert result.model_path.is_file() and not (empty / ".edgetl.lock").exists()


def test_train_never_writes_into_a_folder_of_someone_elses_files(tiny_dataset: Path, tmp_path: Path) -> None:
    # Before: checkpoints/my_model_epoch90.ckpt and split.json of the user's were deleted (or overwritten).
    from edgetl.run import RunError

    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "my_model_epoch90.ckpt").write_text("the user's own weights")
    (folder / "split.json").write_text('{"mine": true}')
    before = {p: p.read_text() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match="holds files that are not an edgetl run .checkpoints, split.json."):
        train(tiny_dataset, options=TrainOptions(**TINY), output=folder)
    assert {p: p.read_text() for p in folder.rglob("*") if p.is_file()} == before


def test_a_second_train_on_the_same_folder_is_refused_while_the_first_writes(tiny_dataset: Path, tmp_path: Path) -> None:
    # Before: two `edgetl train -o SAME` both exited 0 and one result was silently lost.
    from edgetl.run import RunError, claim

    run = tmp_path / "run"
    with claim(run, resuming=False):  # the first train holds the folder
        with pytest.raises(RunError, match=r"another edgetl train \(pid \d+\) is writing this run folder"):
            train(tiny_dataset, options=TrainOptions(**TINY), output=run)
    assert sorted(p.name for p in run.iterdir()) == []  # the lock is gone with its holder


@pytest.mark.slow
def test_two_local_workers_train_one_run_like_a_single_worker(tiny_dataset: Path, tmp_path: Path) -> None:
    """MultiWorkerMirroredStrategy with two processes on localhost (TF_CONFIG), CPU: one run folder, the chief's."""
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("localhost", 0))
            return s.getsockname()[1]

    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    script = f"""
import json
from edgetl.training import TrainOptions, train
options = TrainOptions(**{json.dumps({**TINY, 'epochs': 2, 'fine_tune_epochs': 1})}, strategy="multi-worker")
result = train({str(tiny_dataset)!r}, options=options, output={str(tmp_path / 'run')!r})
print(json.dumps({{"replicas": result.config["replicas"], "strategy": result.config["strategy"],
                  "run_dir": str(result.run_dir), "accuracy": result.metrics["decision_accuracy"]}}))
"""
    procs = []
    for index in range(2):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CONFIG": json.dumps(task)}
        procs.append(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [(r["replicas"], r["strategy"], r["run_dir"]) for r in results] == [
        (2, "CollectiveAllReduceStrategy", str(tmp_path / "run"))] * 2
    run = tmp_path / "run"
    single = train(tiny_dataset, options=TrainOptions(**{**TINY, "epochs": 2, "fine_tune_epochs": 1}), output=tmp_path / "one")
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in single.run_dir.iterdir())  # no worker debris
    assert abs(results[0]["accuracy"] - single.metrics["decision_accuracy"]) <= 0.25  # tiny validation set: noisy


def _probs(run_dir: Path, data: Path) -> np.ndarray:
    from edgetl.run import load_run
    from edgetl_runtime.preprocess import load_image

    files = sorted(data.glob("*/*.png"))
    x = np.stack([load_image(str(p), (32, 32)) for p in files]).astype(np.float32)
    return load_run(run_dir).load_model().predict(x, verbose=0)


def test_a_student_distilled_from_a_teacher_learns_the_teachers_scores(tiny_dataset: Path, tmp_path: Path) -> None:
    teacher = train(tiny_dataset, options=TrainOptions(**{**TINY, "epochs": 8}), output=tmp_path / "teacher").run_dir
    student_options = {**TINY, "seed": 1, "fine_tune_epochs": 4}
    plain = train(tiny_dataset, options=TrainOptions(**student_options), output=tmp_path / "plain").run_dir
    runner = CliRunner()
    args = ["train", str(tiny_dataset), "-o", str(tmp_path / "student"), "--teacher", str(teacher),
            "--distill-weight", "1.0", "--distill-temperature", "1.0", "--backbone", "mobilenet_v2",
            "--weights", "none", "--alpha", "0.35", "--input-size", "32", "--epochs", "3",
            "--fine-tune-epochs", "4", "--unfreeze", "2", "--batch-size", "8", "--patience", "50",
            "--seed", "1", "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    student = tmp_path / "student"
    config = json.loads((student / "config.json").read_text())
    assert config["options"]["teacher"] == str(teacher.resolve())
    assert list((student / "cache").glob("teacher-*.npz"))  # scored once, reused by --resume

    t, s, p = (_probs(r, tiny_dataset) for r in (teacher, student, plain))

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.clip(a, 1e-7, 1), np.clip(b, 1e-7, 1)
        return float((a * np.log(a / b)).sum(-1).mean())

    # Same data, seed and schedule: only the targets differ, and the distilled model is the one
    # whose scores follow the teacher's.
    assert kl(t, s) < 0.5 * kl(t, p), (kl(t, s), kl(t, p))


def test_a_teacher_with_other_classes_is_refused_before_training(tiny_dataset: Path, tmp_path: Path) -> None:
    import shutil

    from edgetl.run import RunError

    other = tmp_path / "other"
    for src, dst in (("good", "ok"), ("defect", "crack")):
        shutil.copytree(tiny_dataset / src, other / dst)
    teacher = train(other, options=TrainOptions(**{**TINY, "epochs": 1, "fine_tune_epochs": 0},
                                                good_labels=("ok",)), output=tmp_path / "t").run_dir
    with pytest.raises(RunError, match=r"teacher's classes \['crack', 'ok'\] differ from this data set's \['defect', 'good'\]"):
        train(tiny_dataset, options=TrainOptions(**TINY, teacher=str(teacher)), output=tmp_path / "s")
    assert not (tmp_path / "s").exists()  # nothing left to block the retry


def test_bfloat16_mixed_precision_trains_on_cpu_and_saves_a_float32_model(tiny_dataset: Path, tmp_path: Path) -> None:
    from edgetl._tf import keras

    result = train(tiny_dataset, options=TrainOptions(**{**TINY, "epochs": 2, "fine_tune_epochs": 2},
                                                      mixed_precision="bfloat16"), output=tmp_path / "run")
    assert result.config["precision_policy"] == "mixed_bfloat16"
    assert keras().mixed_precision.global_policy().name == "float32"  # the process is left as it was
    model = __import__("edgetl.run", fromlist=["load_run"]).load_run(result.run_dir).load_model()
    assert {w.dtype.name for w in model.weights} == {"float32"}
    history = json.loads((result.run_dir / "metrics.json").read_text())["history"]["phase2"]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)


def test_the_fine_tuning_recipe_flags_train_and_select_on_validation_auc(tiny_dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["train", str(tiny_dataset), "-o", str(run_dir), "--backbone", "mobilenet_v2", "--weights", "none",
            "--alpha", "0.35", "--input-size", "32", "--epochs", "3", "--fine-tune-epochs", "4", "--unfreeze", "3",
            "--batch-size", "8", "--patience", "50", "--warmup-epochs", "1", "--layer-decay", "0.7",
            "--ema", "0.9", "--select", "auc", "--rotate", "10", "--gamma", "0.2", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    options = json.loads((run_dir / "config.json").read_text())["options"]
    assert (options["warmup_epochs"], options["layer_decay"], options["ema"], options["select"]) == (1.0, 0.7, 0.9, "auc")
    assert (options["augmentation"]["rotate"], options["augmentation"]["gamma"]) == (10.0, 0.2)
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [len(history["phase1"]), len(history["phase2"])] == [3, 4]
    assert all(0.0 <= h["val_auc"] <= 1.0 for phase in history.values() for h in phase)
    # A bad value is refused before any work, with the rule that was broken.
    bad = CliRunner().invoke(main, [*args[:3], str(tmp_path / "bad"), "--layer-decay", "1.5"])
    assert bad.exit_code == 2 and "layer decay" in bad.output and not (tmp_path / "bad").exists()


def test_selecting_on_auc_with_every_class_good_is_refused_and_leaves_nothing(tiny_dataset: Path, tmp_path: Path) -> None:
    from edgetl.run import RunError

    options = TrainOptions(**TINY, select="auc", good_labels=("defect", "good"))
    with pytest.raises(RunError, match="every class"):
        train(tiny_dataset, options=options, output=tmp_path / "run")
    assert not (tmp_path / "run").exists()

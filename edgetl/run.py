"""The run folder written by ``edgetl train`` and read by ``eval``, ``export`` and ``benchmark``.

Layout of ``RUN_DIR``::

    model.keras       the trained model (flat functional Keras model, input: pixels 0..255)
    model_spec.json   the model contract (edgetl_runtime.contract.ModelSpec): task, labels, good
                      labels, input, output kind, decision rule and threshold, provenance; every
                      export embeds these exact bytes
    config.json       how it was trained: the options, data path, counts, unfreeze depth, timing
    split.json        {"train": [[path, label], ...], "val": [[path, label], ...]}
    metrics.json      validation metrics and per-epoch history (eval writes its own under eval/)
    checkpoints/      per-epoch checkpoints for --resume (removed when the run finishes)
    logs/             TensorBoard logs
    cache/            backbone features of the frozen phase 1 (safe to delete)
    *.png             training curves, confusion matrix, ROC curve
    eval/, export/, benchmark/   written later by those commands

The full table (what each file is, which command needs it, what is safe to delete) is
docs/run-folder.md.

Runs written by edgetl 0.1 have no ``model_spec.json``: their contract is converted once from
the labels, input size and threshold in ``config.json``.

>>> RunError("x").__class__.__name__
'RunError'
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from edgetl_runtime.atomic import write_bytes
from edgetl_runtime.contract import ModelSpec
from edgetl_runtime.errors import MetadataError

MODEL_FILE = "model.keras"
SPEC_FILE = "model_spec.json"
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.json"

# What each entry of a run folder is, in the order `edgetl train` lists them (docs/run-folder.md).
RUN_FILES = {
    MODEL_FILE: "the trained model",
    SPEC_FILE: "the model contract",
    CONFIG_FILE: "how it was trained",
    SPLIT_FILE: "the train/validation split",
    METRICS_FILE: "validation metrics",
    "training_curves.png": "loss and accuracy per epoch",
    "confusion_matrix.png": "validation confusion matrix",
    "roc_curve.png": "validation ROC curve",
    "anomaly_scores.png": "held-out anomaly scores against the threshold (anomaly runs)",
    "logs": "TensorBoard logs",
    "cache": "cached backbone features, safe to delete",
    "checkpoints": "resume state of an unfinished run",
    "eval": "reports of edgetl eval",
    "export": "exported models of edgetl export",
    "benchmark": "models and results of edgetl benchmark",
}


class RunError(ValueError):
    """A run folder or model path is missing a piece that the command needs."""


MAX_JSON_BYTES = 256 * 2**20  # split.json of a million images is about 100 MB


LOCK_FILE = ".edgetl.lock"  # held (flock) by the process writing the run folder


@contextlib.contextmanager
def claim(run_dir: Path, resuming: bool, own: Iterable[str] = ()) -> Iterator[bool]:
    """Hold ``run_dir``'s lock while a run writes it; yield whether the folder was created here.

    Refused with a :class:`RunError`: another process holds the lock (two ``edgetl train -o SAME``
    at once: the second waits for nothing and says who writes); or, unless ``resuming``, the folder
    holds entries this run did not write (anything but ``own``, the entries of an unfinished run of
    its own, the lock and the hidden ``.worker-N`` folders of a multi-worker run). A run writes into
    a new or empty folder only: it never deletes or overwrites what someone else put there.
    """
    import fcntl

    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise RunError(f"{run_dir}: cannot write the run folder ({exc.strerror or exc}); choose another -o folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunError(f"{run_dir}: another edgetl train (pid {holder}) is writing this run folder; wait for it to "
                       "finish, or choose another -o folder") from None  # fmt: skip
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        if not resuming:
            allowed = {LOCK_FILE, *own}
            foreign = sorted(e.name for e in run_dir.iterdir() if e.name not in allowed and not e.name.startswith(".worker-"))
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise RunError(f"{run_dir}: holds files that are not an edgetl run ({shown}); a new run is written "
                               "into a new or empty folder only, so nothing of yours is overwritten or deleted: "
                               "choose a new -o folder")  # fmt: skip
        yield created
    finally:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        os.close(fd)  # closing releases the lock


def read_json(path: Path, expect: type = dict) -> Any:
    """Return the JSON value in run-folder file ``path``, which must be a ``expect`` (dict or list).

    Raises :class:`RunError` naming the file when it is not a regular file, over
    :data:`MAX_JSON_BYTES`, not UTF-8 JSON, nested deeper than Python parses, or of another type.
    """
    from edgetl_runtime.safefile import DataError, SpecialFile, TooLarge, loads_json, read_regular

    try:
        value = loads_json(read_regular(path, MAX_JSON_BYTES), str(path))
    except SpecialFile as exc:
        raise RunError(str(exc)) from None
    except TooLarge:
        raise RunError(f"{path}: more than a run folder's JSON files hold ({MAX_JSON_BYTES >> 20} MiB); the file was "
                       "replaced") from None  # fmt: skip
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except DataError as exc:
        raise RunError(f"{exc}; the file is damaged: restore it, or retrain") from None
    if not isinstance(value, expect):
        raise RunError(f"{path}: holds a JSON {type(value).__name__}, not the {expect.__name__} edgetl wrote; "
                       "the file is damaged: restore it, or retrain")  # fmt: skip
    return value


def read_split(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Return ``{"train": [(path, label), ...], "val": [...]}`` from a run's ``split.json``, checked."""
    raw = read_json(path)
    split: dict[str, list[tuple[str, str]]] = {}
    for name in ("train", "val"):
        entries = raw.get(name, [])
        if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(v, str) for v in e) for e in entries
        ):
            raise RunError(f"{path}: '{name}' is not a list of [path, label] pairs; the file is damaged: restore it, or retrain")
        split[name] = [(p, label) for p, label in entries]
    return split


@dataclass(frozen=True)
class Run:
    """A finished training run: its folder, its model contract, its config and where its model lives."""

    run_dir: Path
    model_path: Path
    spec: ModelSpec
    config: dict[str, Any]

    def split(self, name: str) -> list[tuple[str, str]]:
        """Return the ``train`` or ``val`` file list recorded by the run (empty if unknown)."""
        path = self.run_dir / SPLIT_FILE
        if not path.exists():
            return []
        return read_split(path)[name]

    def load_model(self):
        """Return the trained Keras model (not compiled), checked against the run's contract; see :func:`load_keras_model`.

        Raises :class:`RunError` when the model's input size or number of outputs is not what
        ``model_spec.json`` says (a contract edited by hand, or copied from another run).
        """
        model = load_keras_model(self.model_path)
        spec, where = self.spec, self.run_dir / SPEC_FILE
        shape = tuple(model.inputs[0].shape[1:])
        if shape != (*spec.input_size, spec.channels):
            raise RunError(f"{where}: says the model takes {spec.input.height}x{spec.input.width} px with {spec.channels} "
                           f"channel(s), but {self.model_path.name} takes {shape}; the contract was edited or comes from "
                           "another run: restore it, or retrain")  # fmt: skip
        units = model.outputs[0].shape[-1]
        if units is not None and int(units) != len(spec.labels):
            raise RunError(f"{where}: names {len(spec.labels)} labels, but {self.model_path.name} has {int(units)} "
                           "outputs; the contract was edited or comes from another run: restore it, or retrain")
        return model

    def with_spec(self, spec: ModelSpec) -> Run:
        """Write ``spec`` as this run's contract (atomically) and return the updated run."""
        write_spec(self.run_dir, spec)
        return Run(self.run_dir, self.model_path, spec, self.config)


ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def load_keras_model(path: str | Path):
    """Return the Keras model in the ``.keras`` (zip) file at ``path``, loaded in Keras' safe mode.

    The format is checked by the file's bytes, not its name. Only the zip format is loaded, with
    ``safe_mode=True``, which refuses layers that carry Python code (``Lambda``). An HDF5 file is
    refused: tf_keras' HDF5 loader ignores ``safe_mode`` and would run a ``Lambda`` layer's code.
    Raises :class:`RunError` naming the file and what to do.
    """
    from ._tf import keras

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise RunError(f"{path}: cannot read the trained model ({exc.strerror or exc})") from None
    if head.startswith(HDF5_MAGIC):
        raise RunError(f"{path}: is an HDF5 (.h5) file, not the .keras zip format: edgetl does not load HDF5 models, "
                       "because their loader runs the code of Lambda layers. Re-save a model you trust with "
                       "model.save('model.keras'), or retrain with edgetl train")  # fmt: skip
    if not head.startswith(ZIP_MAGIC):
        raise RunError(f"{path}: not a Keras model (a .keras file is a zip archive); the file may be truncated "
                       "or replaced; retrain, or restore it from the run's backup")  # fmt: skip
    try:
        from .anomaly.graph import layer_classes  # an anomaly detector's layers: registered classes, no code

        return keras().models.load_model(path, custom_objects=layer_classes(), compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for foreign or tampered archives
        raise RunError(f"{path}: cannot load the trained model ({_reason(exc)}); retrain or restore it") from None


def _reason(exc: BaseException, limit: int = 300) -> str:
    """Return the first line of the innermost exception behind ``exc``, at most ``limit`` characters.

    Keras wraps a layer's own error in one that quotes the layer's whole config, which a tampered
    file can make megabytes long.
    """
    inner = exc
    while (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{inner.__class__.__name__}: {text}"


def write_spec(run_dir: str | Path, spec: ModelSpec) -> Path:
    """Write the contract to ``run_dir/model_spec.json`` (its canonical bytes), atomically."""
    return write_bytes(Path(run_dir) / SPEC_FILE, spec.to_json().encode("utf-8"))


def _read_spec(run_dir: Path, config: dict[str, Any]) -> ModelSpec:
    from edgetl_runtime.contract import MAX_CONTRACT_BYTES
    from edgetl_runtime.safefile import read_regular

    path = run_dir / SPEC_FILE
    try:
        if path.exists() or path.is_symlink():
            return ModelSpec.from_json(read_regular(path, MAX_CONTRACT_BYTES))
        # edgetl 0.1 run folder: the contract's facts lived in config.json (schema 1 names).
        return ModelSpec.from_dict({**config, "schema_version": 1})
    except MetadataError as exc:
        where = path if path.exists() else run_dir / CONFIG_FILE
        raise RunError(f"{where}: {exc}") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def _not_a_run(folder: Path) -> str:
    """Return why ``folder`` (which has no model) is not a finished run, and what to do about it."""
    from edgetl_runtime.preprocess import is_image_file

    if (folder / "checkpoints" / "state.json").is_file():
        return (f"{folder}: no trained model ({MODEL_FILE}) yet: its training is still running or was interrupted. "
                f"Finish it with `edgetl train DATA -o {folder} --resume` (DATA: the folder it was trained on)")
    try:
        entries = list(folder.iterdir())[:1000]
        images = any(is_image_file(p) for p in entries) or any(
            is_image_file(q) for p in entries if p.is_dir() for q in list(p.iterdir())[:50])
    except OSError:
        images = False
    if images:
        return (f"{folder}: this is a folder of images, not a trained run. Train on it first: `edgetl train {folder} "
                "-o runs/NAME`, then pass runs/NAME here")  # fmt: skip
    return (f"{folder}: not a run folder of `edgetl train` (no {MODEL_FILE} in it); pass the folder given to "
            "`edgetl train -o`")


def load_run(path: str | Path) -> Run:
    """Return the :class:`Run` at ``path`` (a run folder, or a ``.keras`` file inside one)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".keras":
        run_dir, model_path = path.parent, path
    elif path.is_dir():
        run_dir, model_path = path, path / MODEL_FILE
    else:
        raise RunError(f"{path}: no such run folder or .keras model; pass the -o folder of `edgetl train`")
    if not model_path.is_file():
        raise RunError(_not_a_run(run_dir))
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        raise RunError(f"{run_dir}: {CONFIG_FILE} is missing; the run is incomplete, retrain it")
    config = read_json(config_path)
    return Run(run_dir=run_dir, model_path=model_path, spec=_read_spec(run_dir, config), config=config)

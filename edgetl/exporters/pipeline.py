"""``export()``: a run (or a Keras model and its contract) through one target's steps, validated.

The steps, in order: resolve the source (model + contract), plan the output path, load
calibration images (int8/QAT), apply QAT, ``target.convert``, ``target.embed`` the contract and
export facts, ``target.finalize`` (e.g. Edge TPU compile), validate the artifact that ships
(``target.validation_plan``), write the JSON report beside the output path.

Every file is built in a private staging folder beside the output and moved into place only when
validation passes: an export that fails validation leaves its report and nothing at the output
path (an earlier file there stays as it was).

>>> default_output("runs/elpv", ExportOptions.for_int8())
PosixPath('runs/elpv/export/model-tflite-int8.tflite')
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from glob import escape as glob_escape
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from edgetl_runtime.atomic import check_writable, write_bytes, write_json
from edgetl_runtime.contract import ExportInfo, ModelSpec
from edgetl_runtime.decision import defect_scores
from edgetl_runtime.line.drift import reference as drift_reference

from .edgetpu import CompatibilityReport
from . import anomaly as anomaly_export
from . import embedding as embedding_export
from . import operating_point
from .errors import CalibrationError, ExportError
from .options import ExportOptions
from .registry import get_target
from .validate import TOLERANCES, Tolerance, ValidationReport, raise_for, reference_scores, validate


MAX_REFIT_IMAGES = 5000  # fitted / held-out good images an anomaly export runs through its quantized graph
MAX_VALIDATION_IMAGES = 5000  # validation takes every image of the split up to this many (0.75 GB at 224 px)


@dataclass(frozen=True)
class QatSummary:
    """What the quantization-aware fine-tune did."""

    epochs: int
    learning_rate: float
    final_loss: float | None
    float_layers: tuple[str, ...]  # layers outside tfmot's int8 scheme (calibrated post-training)


@dataclass(frozen=True)
class ExportResult:
    """What an export produced: the artifact that ships, every file written, and how close it is.

    ``path`` is the artifact that ships (the compiled ``*_edgetpu.tflite`` for the Edge TPU when
    the compiler ran); ``report`` is its validation against the float model (None when skipped).
    """

    path: Path
    written: tuple[Path, ...]
    size_bytes: int
    spec: ModelSpec
    info: ExportInfo
    report: ValidationReport | None
    report_path: Path | None = None
    calibration_images: int | None = None
    qat: QatSummary | None = None
    edgetpu: CompatibilityReport | None = None
    note: str = ""
    adjusted: tuple[str, ...] = ()  # what an anomaly export set for itself (statistics re-fitted, threshold)

    @property
    def format(self) -> str:
        return self.info.format

    @property
    def quantization(self) -> str:
        return self.info.quantization

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "written": [str(p) for p in self.written],
            "size_bytes": self.size_bytes,
            "export": json.loads(self.info.to_json()),
            "spec": self.spec.to_dict(),
            "report_path": str(self.report_path) if self.report_path else None,
            "validation": self.report.to_dict() if self.report else None,
            "calibration_images": self.calibration_images,
            "qat": dataclasses.asdict(self.qat) if self.qat else None,
            "edgetpu": self.edgetpu.to_dict() if self.edgetpu else None,
            "note": self.note,
            "adjusted": list(self.adjusted),
        }


class Source(NamedTuple):
    """What is exported: the float Keras model, its contract, and the run it came from (or None)."""

    model: Any
    spec: ModelSpec
    run: Any


def report_path_for(output: str | Path) -> Path:
    """Return where the validation report of ``output`` goes: ``model.tflite`` -> ``model.tflite.report.json``."""
    output = Path(output)
    return output.with_name(output.name + ".report.json")


def default_output(run_dir: str | Path, options: ExportOptions) -> Path:
    """Return the default file name for an export of the run in ``run_dir``: ``<run>/export/model-<format>-<quant><suffix>``."""
    tta = "-tta" if options.tta else ""
    emb = "-embedding" if options.embedding else ""
    return Path(run_dir) / "export" / f"model-{options.format}-{options.quantization}{tta}{emb}{options.suffix}"


def options_for_profile(profile_name: str, **overrides: Any) -> tuple[ExportOptions, Any]:
    """Return ``(ExportOptions, DeviceProfile)`` with format and quantization taken from the device profile."""
    from edgetl_runtime.profiles import load_profile

    profile = load_profile(profile_name)
    target = profile.export
    return ExportOptions(**{"format": target.format, "quantization": target.quantization, **overrides}), profile


def _resolve(run_or_model: Any, spec: ModelSpec | None) -> Source:
    from edgetl.run import Run, RunError, load_run

    if isinstance(run_or_model, (str, Path, Run)):
        try:
            run = run_or_model if isinstance(run_or_model, Run) else load_run(run_or_model)
        except RunError as exc:
            raise ExportError(str(exc)) from None
        try:
            model = run.load_model()  # safe mode, zip format only (edgetl.run.load_keras_model)
        except RunError as exc:
            raise ExportError(str(exc)) from None
        return Source(model, spec or run.spec, run)
    if spec is None:
        raise ExportError("exporting a bare Keras model needs spec=ModelSpec(labels=..., input=InputSpec(...))")
    return Source(run_or_model, spec, None)


def _plan_output(source: Source, options: ExportOptions, output: str | Path | None) -> Path:
    if output is None:
        if source.run is None:
            raise ExportError("pass output= (a file path) when exporting a bare Keras model")
        output = default_output(source.run.run_dir, options)
        output.parent.mkdir(parents=True, exist_ok=True)
    output = Path(output)
    if output.suffix.lower() != options.suffix:
        raise ExportError(f"{output}: a {options.format} model is written as {options.suffix}; name the output *{options.suffix}")
    if output.is_dir():
        raise ExportError(f"{output}: is a directory; give a file name such as {output / ('model' + options.suffix)}")
    parent = output.parent
    if not parent.is_dir():
        blocking = next((p for p in [parent, *parent.parents] if p.exists()), None)
        if blocking is not None and not blocking.is_dir():  # -o img.png/out.onnx: a file where a folder must be
            raise ExportError(f"{output}: {blocking} is a file, not a folder; give an -o path inside a folder")
        raise ExportError(f"{output}: output directory {parent} does not exist; create it first (mkdir -p {parent})")
    try:
        check_writable(parent)
    except OSError as exc:
        raise ExportError(
            f"{output}: output directory {parent} is not writable ({exc.strerror}); choose another -o path or fix its permissions"
        ) from None
    return output


def _roi(options: ExportOptions) -> Any:
    """Return the export's :class:`~edgetl_runtime.roi.Roi`, or None."""
    from edgetl_runtime.roi import Roi

    return Roi.parse(options.roi) if options.roi else None


def _images(source: Source, folder: Path | None, split: str, limit: int | None, what: str,
            roi: Any = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Return ``(uint8 pixels, label index into the contract's labels or -1)`` for calibration/validation.

    ``roi`` (:class:`edgetl_runtime.roi.Roi`): cropped from every image before the resize.
    """
    from edgetl.data import DatasetError
    from edgetl.data.loading import sample_images

    flag = "--calib" if split == "train" else "--data"
    if source.run is None and folder is None:
        raise CalibrationError(f"a bare Keras model has no recorded {what} images; pass a folder of them "
                               f"(ExportOptions.{'calib_data' if split == 'train' else 'val_data'}, CLI {flag})")
    recorded = source.run.split(split) if source.run is not None else []
    try:
        loaded = sample_images(folder, recorded, source.spec.input, limit or MAX_VALIDATION_IMAGES, what, roi=roi)
    except DatasetError as exc:
        raise CalibrationError(f"{exc}. Point {flag} at a folder of .png/.jpg images (optionally in <label>/ subfolders).") from None
    return loaded.x, loaded.truth(source.spec)


def _quantize_aware(model: Any, pixels: np.ndarray, labels: np.ndarray, options: ExportOptions) -> tuple[Any, QatSummary]:
    from .qat import quantize_aware

    qat = quantize_aware(model, pixels, labels, options.qat_epochs, options.qat_learning_rate, options.qat_batch_size)
    return qat.model, QatSummary(options.qat_epochs, options.qat_learning_rate, qat.loss, tuple(qat.float_layers))


def _tolerance(options: ExportOptions) -> Tolerance | None:
    if options.atol is None and options.min_agreement is None:
        return None
    default = TOLERANCES[options.quantization]
    return Tolerance(
        options.atol if options.atol is not None else default.max_abs_diff,
        options.min_agreement if options.min_agreement is not None else default.min_agreement,
    )


def export(
    run_or_model: Any,
    options: ExportOptions | None = None,
    output: str | Path | None = None,
    *,
    spec: ModelSpec | None = None,
) -> ExportResult:
    """Export a run (folder, ``.keras`` path or :class:`~edgetl.run.Run`) or a Keras model; return the result.

    The run's contract (``spec``, required for a bare Keras model) is embedded unchanged.
    ``output`` defaults to :func:`default_output`. The validation report is written beside it
    (:func:`report_path_for`), also when validation fails; a failing validation then raises a
    :class:`~edgetl.exporters.errors.ValidationError` subclass unless
    ``options.fail_on_validation`` is False. A bare Keras model needs ``options.calib_data`` /
    ``options.val_data``.
    """
    options = options or ExportOptions()
    asked = options  # what the user gave: the failure advice names the levers not yet pulled by these
    target = get_target(options.format)
    if options.validate_on != "host" and options.validate:
        from . import emulated

        emulated.check_root(emulated.default_root())  # before minutes of conversion, not after
    source = _resolve(run_or_model, spec)
    output = _plan_output(source, options, output)
    model_shape = tuple(source.model.inputs[0].shape[1:])
    if model_shape != (*source.spec.input_size, source.spec.channels):
        raise ExportError(f"{output}: the model takes {model_shape} but its contract says "
                          f"{(*source.spec.input_size, source.spec.channels)}; they must agree")  # fmt: skip

    anomaly = source.spec.task == "anomaly"
    if source.spec.task != "classification":  # an anomaly detector's tail is its statistics, not a classifier head
        options = options.replace(float_head=False)
        asked = asked.replace(float_head=True)  # so the failure advice never offers a float head as a lever
    if options.embedding and source.spec.task != "classification":
        raise ExportError(f"{output}: --embedding is for classifiers (imprinting adds classes to one); this is a "
                          f"{source.spec.task} model")  # fmt: skip
    if anomaly and (options.quantization == "qat" or options.tta):
        raise ExportError(f"{output}: an anomaly detector has nothing to train, so no quantization-aware training, and "
                          "its heatmap has no test-time-augmentation rule: export it with --quant int8 (or a float "
                          "format), without --tta")  # fmt: skip
    calibration, calib_labels, qat, calibrated_on = None, None, None, None
    if options.is_integer:
        calibration, calib_labels = _images(source, options.calib_data, "train", options.calib_samples, "calibration",
                                            _roi(options))
        calibrated_on = len(calibration)  # the images found (an anomaly set doubles them below)
        if anomaly:  # int8 ranges must reach anomalous distances too, or every defect saturates to one value
            calibration = anomaly_export.calibration_set(calibration)
    model, reference = source.model, source.model
    refitted = recalibration = None
    if anomaly and options.quantization != "fp32" and source.run is not None:
        good = source.spec.good_indices[0]
        if options.is_integer:
            fitted, labels = _images(source, None, "train", MAX_REFIT_IMAGES, "fitted good", _roi(options))
            model, refitted = anomaly_export.refit(model, target, options, calibration, source.run,
                                                   fitted[labels == good])
        held_out, labels = _images(source, None, "val", MAX_REFIT_IMAGES, "held-out good", _roi(options))
        model, recalibration = anomaly_export.recalibrate(model, target, options, calibration, source.run,
                                                          held_out[labels == good])
    anomaly_notes = "; ".join(step.note() for step in (refitted, recalibration) if step is not None)
    if options.quantization == "qat":
        model, qat = _quantize_aware(model, calibration, calib_labels, options)
    if options.tta:
        from .tta import with_tta

        model, reference = with_tta(model), with_tta(source.model)
    if options.embedding:
        model = embedding_export.with_embedding(model)

    from edgetl import __version__

    info = ExportInfo(format=options.format, quantization=options.quantization, io_type=options.effective_io_type,
                      opset=options.opset if options.format == "onnx" else None, sdk_version=__version__,
                      tta=options.tta, embedding=embedding_export.size(model) if options.embedding else 0,
                      created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
                      roi=_roi(options).to_json() if options.roi else None)  # fmt: skip
    data = target.embed(target.convert(model, options, calibration), source.spec, info)
    if options.embedding:
        if calibration is None:
            calibration, calib_labels = _images(source, options.calib_data, "train", options.calib_samples, "prototype",
                                                _roi(options))
        protos, owners = embedding_export.prototypes(data, options, source.spec, info, calibration, calib_labels, output)
        info = info.replace(prototypes=protos, prototype_labels=owners)
        data = target.embed(data, source.spec, info)
    val, reset, emulated_pass = None, None, None
    if _decides(source, options):  # the file's own threshold (a lossy export) and its drift reference
        val = _validation_set(source, options, reference)
        good = source.spec.good_indices
        float_scores = defect_scores(val.reference, good)
        exported = float_scores
        if options.quantization != "fp32":
            raw, ran = operating_point.exported_scores(data, options.format, val.pixels, options.validate_on)
            if ran is not None:  # emulated: minutes a pass. The gate reuses these scores of the same graph (the
                emulated_pass = (raw, ran)  # file that ships differs only in its metadata: threshold, reference)
            exported = defect_scores(raw, good)
            reset = operating_point.reset_threshold(float_scores, exported, source.spec.threshold)
            info = info.replace(threshold=reset.threshold, threshold_source=reset.source)
        # the parts the station will see are like the real validation images, not the painted defects
        info = info.replace(reference=drift_reference(exported[: len(exported) - val.synthetic]))
        data = target.embed(data, source.spec, info)
    _remove_stale_staging(output)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-{os.getpid()}-", dir=output.parent))
    except OSError as exc:
        raise ExportError(f"{output}: cannot write in {output.parent} ({exc.strerror or exc}); free space or choose "
                          "another -o path") from None  # fmt: skip
    try:
        final = target.finalize(write_bytes(staging / output.name, data), options, source.spec, info)
        report = None
        if options.validate:
            plan = target.validation_plan(final)
            val = val or _validation_set(source, options, reference)
            report = validate(plan.path, reference, val.pixels, val.labels, options.quantization, _tolerance(options),
                              plan.device, spec=source.spec, max_drop=options.max_drop, alpha=options.alpha,
                              float_scores=val.reference, on=options.validate_on,
                              emulated=emulated_pass if plan.path == final.artifact else None)  # fmt: skip
            synthetic = val.synthetic
            notes = (plan.note, report.note, anomaly_notes, reset.note() if reset else "",
                     f"{synthetic} of the validation images are good ones with a synthetic defect painted on "
                     "(labelled anomaly), so that the scores' order and ROC AUC are compared without defect "
                     "labels" if synthetic else "")  # fmt: skip
            report = dataclasses.replace(report, note="; ".join(filter(None, notes)))
            report = dataclasses.replace(report, path=str(output.parent / Path(report.path).name))
        rejected = report is not None and not report.passed and options.fail_on_validation
        moved = {} if rejected else _move_into_place(staging, output.parent)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile: name the output, not the staging folder
        raise ExportError(f"{output}: cannot write in {output.parent} ({exc.strerror or exc}); free space or choose "
                          "another -o path") from None  # fmt: skip
    except ExportError as exc:  # the staging folder is gone with this error: say where the files were to go
        if str(staging) not in str(exc) or len(exc.args) != 1:
            raise
        raise type(exc)(str(exc).replace(str(staging), str(output.parent))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    artifact = moved.get(final.artifact, final.artifact)
    final = _unstaged(final, staging, output.parent)
    result = ExportResult(
        path=output.parent / final.artifact.name if rejected else artifact,
        written=tuple(moved.get(p, p) for p in final.written) if not rejected else (),
        size_bytes=len(data) if rejected else artifact.stat().st_size, spec=source.spec,
        info=info, report=report, calibration_images=None if calibration is None else len(calibration), qat=qat,
        edgetpu=final.details if isinstance(final.details, CompatibilityReport) else None, note=final.note,
        adjusted=tuple(step.note() for step in (refitted, recalibration, reset) if step is not None),
    )  # fmt: skip
    if report is not None:
        report_file = write_json(report_path_for(output), result.to_dict())
        result = dataclasses.replace(result, report_path=report_file)
        if options.fail_on_validation:
            raise_for(report, asked, calibrated_on)
    return result


class _Validation(NamedTuple):
    """The validation images, loaded once: uint8 pixels, label indices, the float model's scores."""

    pixels: np.ndarray
    labels: np.ndarray
    reference: np.ndarray
    synthetic: int  # of them, good images with a painted defect (anomaly detectors)


def _validation_set(source: Source, options: ExportOptions, reference_model: Any) -> _Validation:
    pixels, labels = _images(source, options.val_data, "val", options.val_samples, "validation", _roi(options))
    synthetic = 0
    if source.spec.task == "anomaly":
        pixels, labels, synthetic = anomaly_export.with_synthetic_defects(pixels, labels, source.spec)
    return _Validation(pixels, labels, reference_scores(reference_model, pixels), synthetic)


def _decides(source: Source, options: ExportOptions) -> bool:
    """True when the file gets a drift reference (and, when lossy, its own threshold): a model with a verdict and
    validation images (the run's, or --data). A lossy export sets its own threshold by the rank match.

    An anomaly export first re-sets its decision layer on the held-out good images (exporters/anomaly.py);
    the match over every validation image then keeps the float model's count of verdicts, which the few
    held-out images near a 1 % false-alarm target cannot pin down (3 or 2 of 270 is the whole difference).
    """
    return (source.spec.task in ("classification", "anomaly") and bool(source.spec.good_indices)
            and (source.run is not None or options.val_data is not None)
            and (options.validate or options.quantization != "fp32"))  # fmt: skip


def _remove_stale_staging(output: Path) -> None:
    """Remove staging folders of exports to ``output`` whose process is gone (killed with ``kill -9``)."""
    for folder in output.parent.glob(f".{glob_escape(output.name)}.staging-*"):
        pid = folder.name.rpartition(".staging-")[2].split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def _unstaged(final: Any, staging: Path, folder: Path) -> Any:
    """Return ``final`` with the staging folder's name replaced by the output folder in its texts."""
    fix = lambda text: text.replace(str(staging), str(folder))  # noqa: E731
    details = final.details
    if isinstance(details, CompatibilityReport):
        details = dataclasses.replace(
            details, compiler_command=tuple(fix(c) for c in details.compiler_command),
            compiler_log=fix(details.compiler_log) if details.compiler_log else details.compiler_log,
            compiled_path=folder / details.compiled_path.name if details.compiled_path else None)  # fmt: skip
    return final._replace(note=fix(final.note), details=details)


def _move_into_place(staging: Path, folder: Path) -> dict[Path, Path]:
    """Move every file of ``staging`` into ``folder`` (same file system: atomic renames); return old -> new."""
    moved = {}
    for path in sorted(staging.iterdir()):
        if path.is_file():
            os.replace(path, folder / path.name)
            moved[path] = folder / path.name
    return moved

"""Export a trained run to TFLite, Edge TPU or ONNX, quantized, with metadata inside, validated.

One module per target with the same shape, ``export(model, options, output, *, metadata,
calibration) -> Path``: :mod:`.tflite`, :mod:`.edgetpu`, :mod:`.onnx`; :mod:`.qat` prepares a
quantization-aware model; :mod:`.validate` checks the written file through the device runtime.

>>> from edgetl.exporters import ExportOptions, export                       # doctest: +SKIP
>>> result = export("runs/elpv", ExportOptions.for_int8(), "model.tflite")  # doctest: +SKIP
>>> result.report.agreement                                                # doctest: +SKIP
0.99
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgetl_runtime.atomic import check_writable, write_json
from edgetl_runtime.metadata import ModelMetadata

from .options import (
    FORMATS,
    QUANTIZATIONS,
    SUPPORTED,
    CalibrationError,
    ExportError,
    ExportOptions,
    ExportResult,
)
from .validate import (
    TOLERANCES,
    AgreementError,
    AtolError,
    ShapeError,
    Tolerance,
    ValidationError,
    ValidationReport,
)

__all__ = [
    "export",
    "ExportOptions",
    "ExportResult",
    "ExportError",
    "CalibrationError",
    "ValidationError",
    "AgreementError",
    "AtolError",
    "ShapeError",
    "ValidationReport",
    "Tolerance",
    "TOLERANCES",
    "FORMATS",
    "QUANTIZATIONS",
    "SUPPORTED",
    "report_path_for",
    "default_output",
    "options_for_device",
]


def report_path_for(output: str | Path) -> Path:
    """Return where the validation report of ``output`` goes: ``model.tflite`` -> ``model.tflite.report.json``."""
    output = Path(output)
    return output.with_name(output.name + ".report.json")


def default_output(run_dir: str | Path, options: ExportOptions) -> Path:
    """Return the default file name for an export of the run in ``run_dir``: ``<run>/export/model-<format>-<quant><suffix>``."""
    return Path(run_dir) / "export" / f"model-{options.format}-{options.quantization}{options.suffix}"


def options_for_device(profile_name: str, **overrides: Any) -> tuple[ExportOptions, Any]:
    """Return ``(ExportOptions, DeviceProfile)`` with format and quantization taken from the device profile."""
    from edgetl_runtime.profiles import load_profile

    profile = load_profile(profile_name)
    target = profile.export
    fields = {"format": target.format, "quantization": target.quantization, **overrides}
    if target.format == "edgetpu":
        fields["io_type"] = "uint8"
    return ExportOptions(**fields), profile


def _check_output(output: Path, options: ExportOptions) -> None:
    if output.suffix.lower() != options.suffix:
        raise ExportError(f"{output}: a {options.format} model is written as {options.suffix}; name the output *{options.suffix}")
    if output.is_dir():
        raise ExportError(f"{output}: is a directory; give a file name such as {output / ('model' + options.suffix)}")
    parent = output.parent
    if not parent.is_dir():
        raise ExportError(f"{output}: output directory {parent} does not exist; create it first (mkdir -p {parent})")
    try:
        check_writable(parent)
    except OSError as exc:
        raise ExportError(
            f"{output}: output directory {parent} is not writable ({exc.strerror}); choose another -o path or fix its permissions"
        ) from None


def _resolve(run_or_model: Any, metadata: ModelMetadata | None) -> tuple[Any, Any, ModelMetadata]:
    """Return ``(run or None, keras model, base metadata)``."""
    from edgetl.run import Run, RunError, load_run

    if isinstance(run_or_model, (str, Path, Run)):
        try:
            run = run_or_model if isinstance(run_or_model, Run) else load_run(run_or_model)
        except RunError as exc:
            raise ExportError(str(exc)) from None
        try:
            model = run.load_model()
        except Exception as exc:  # a truncated or foreign model.keras
            raise ExportError(f"{run.model_path}: cannot load the trained model ({exc.__class__.__name__}: {exc}); retrain or restore it") from None
        return run, model, metadata or run.metadata()
    if metadata is None:
        raise ExportError("exporting a bare Keras model needs metadata=ModelMetadata(labels=..., input_size=...)")
    return None, run_or_model, metadata


def export(
    run_or_model: Any,
    options: ExportOptions | None = None,
    output: str | Path | None = None,
    *,
    metadata: ModelMetadata | None = None,
) -> ExportResult:
    """Export a run (folder, ``.keras`` path or :class:`~edgetl.run.Run`) or a Keras model; return the result.

    ``output`` defaults to :func:`default_output`. The validation report is written beside it
    (:func:`report_path_for`), also when validation fails; a failing validation then raises a
    :class:`ValidationError` subclass unless ``options.fail_on_validation`` is False.
    A bare Keras model needs ``metadata`` and ``options.calib_data`` / ``options.val_data``.
    """
    from .samples import samples_from

    options = options or ExportOptions()
    run, model, base_meta = _resolve(run_or_model, metadata)
    if output is None:
        if run is None:
            raise ExportError("pass output= (a file path) when exporting a bare Keras model")
        output = default_output(run.run_dir, options)
        output.parent.mkdir(parents=True, exist_ok=True)
    output = Path(output)
    _check_output(output, options)
    size, mode, labels = tuple(base_meta.input_size), base_meta.color_mode, base_meta.labels
    model_shape = tuple(model.inputs[0].shape[1:3])
    if model_shape != size:
        raise ExportError(f"model input is {model_shape} but the metadata says input_size={size}; they must agree")

    calibration = None
    extra: dict[str, Any] = {}
    if options.is_integer:
        train = samples_from(options.calib_data, run.split("train") if run else [], "train", size, mode, labels, options.calib_samples)
        calibration = train.pixels
        extra["calibration_images"] = len(train)
    to_convert = model
    if options.quantization == "qat":
        from .qat import quantize_aware

        qat = quantize_aware(model, train, options.qat_epochs, options.qat_learning_rate, options.qat_batch_size)
        to_convert = qat.model
        extra["qat"] = {"epochs": options.qat_epochs, "learning_rate": options.qat_learning_rate,
                        "final_loss": qat.loss, "float_layers": list(qat.float_layers)}  # fmt: skip

    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    meta = base_meta.replace(quantization=options.quantization, format=options.format, created=created)
    if run is not None:  # a trained run has the backbone's normalization inside: it takes raw pixels
        channels = 3 if mode == "rgb" else 1
        meta = meta.replace(mean=(0.0,) * channels, std=(1.0,) * channels)
    if options.format == "onnx":
        from . import onnx as target

        extra["opset"] = options.opset
    elif options.format == "edgetpu":
        from . import edgetpu as target
    else:
        from . import tflite as target
    target.export(to_convert, options, output, metadata=meta, calibration=calibration)

    if options.format == "edgetpu":
        from .edgetpu import check_compatibility, compile_model

        compat = check_compatibility(output)
        compiled, log, command = compile_model(output) if options.compile_edgetpu else (None, "compiler not run (compile_edgetpu=False)", [])
        extra["edgetpu"] = {**compat.to_dict(), "compiled_path": str(compiled) if compiled else None,
                            "compiler_log": log, "compiler_command": " ".join(command)}  # fmt: skip

    report = None
    report_file = None
    if options.validate:
        from .validate import raise_for, validate

        val = samples_from(options.val_data, run.split("val") if run else [], "val", size, mode, labels, options.val_samples)
        tolerance = None
        if options.atol is not None or options.min_agreement is not None:
            default = TOLERANCES[options.quantization]
            tolerance = Tolerance(
                options.atol if options.atol is not None else default.max_abs_diff,
                options.min_agreement if options.min_agreement is not None else default.min_agreement,
            )
        report = validate(output, model, val, options.quantization, tolerance)
        report_file = write_json(report_path_for(output), {**report.to_dict(), "export": {
            "format": options.format, "quantization": options.quantization, "io_type": options.io_type if options.is_integer else "float32",
            "size_bytes": output.stat().st_size, "metadata": meta.to_dict(), **extra}})  # fmt: skip
        if options.fail_on_validation:
            raise_for(report)
    return ExportResult(
        path=output,
        size_bytes=output.stat().st_size,
        format=options.format,
        quantization=options.quantization,
        report=report,
        report_path=report_file,
        extra=extra,
    )

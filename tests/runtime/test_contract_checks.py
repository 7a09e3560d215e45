"""The runtime checks the embedded model contract against the model's own tensors when it loads."""

from __future__ import annotations

from pathlib import Path

import pytest


def _with_spec(path: Path, out: Path, **input_changes) -> Path:
    """Write ``path`` to ``out`` with its embedded contract's input changed (as a careless edit would)."""
    import dataclasses

    from edgetl_runtime.metadata import embed_onnx_metadata, embed_tflite_metadata, read_embedded

    spec, _, info = read_embedded(path)
    edited = spec.replace(input=dataclasses.replace(spec.input, **input_changes))
    if path.suffix == ".onnx":
        import onnx

        out.write_bytes(embed_onnx_metadata(onnx.load(path), edited, info).SerializeToString())
    else:
        out.write_bytes(embed_tflite_metadata(path.read_bytes(), edited, info))
    return out


@pytest.mark.parametrize("kind", ["tflite_int8", "onnx"])
@pytest.mark.parametrize(("change", "message"), [({"height": 40, "width": 40}, "height 40 but the model's input tensor has 32"),
                                                 ({"color_mode": "grayscale"}, "channels 1 but the model's input tensor has 3")])
def test_an_edited_contract_that_does_not_fit_the_model_is_refused_at_load(exported, tmp_path, kind, change, message):
    import edgetl_runtime
    from edgetl_runtime.errors import ContractError

    source = Path(getattr(exported, kind))
    edited = _with_spec(source, tmp_path / f"edited{source.suffix}", **change)
    with pytest.raises(ContractError, match=message) as info:
        edgetl_runtime.load(edited)
    assert str(edited) in str(info.value) and "re-export" in str(info.value)


@pytest.mark.parametrize("kind", ["tflite_int8", "onnx"])
def test_a_contract_promising_a_heatmap_the_model_lacks_is_refused_at_load(exported, tmp_path, kind):
    """An anomaly contract glued onto a one-output classifier: the missing heatmap is named, not indexed past."""
    import dataclasses

    import edgetl_runtime
    from edgetl_runtime.contract import OutputSpec
    from edgetl_runtime.errors import ContractError
    from edgetl_runtime.metadata import embed_onnx_metadata, embed_tflite_metadata, read_embedded

    source = Path(getattr(exported, kind))
    spec, _, info = read_embedded(source)
    good = spec.good_labels[0]
    labels = (good, next(name for name in spec.labels if name != good))
    edited = dataclasses.replace(spec, task="anomaly", labels=labels, good_labels=(good,),
                                 output=OutputSpec(heatmap=(4, 4)))
    out = tmp_path / f"anomaly{source.suffix}"
    if kind == "onnx":
        import onnx

        out.write_bytes(embed_onnx_metadata(onnx.load(source), edited, info).SerializeToString())
    else:
        out.write_bytes(embed_tflite_metadata(source.read_bytes(), edited, info))
    with pytest.raises(ContractError, match=r"\(4, 4\) anomaly heatmap is the second output"):
        edgetl_runtime.load(out)

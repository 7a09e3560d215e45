"""Reading a model's outputs: class scores, which extra output is what, and the contract of a bare model.

Kept apart from :mod:`edgetl_runtime.model` (loading and predicting) so each stays small.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import Backend, TensorSpec
from .contract import InputSpec, ModelSpec, default_good_labels
from .errors import ModelFormatError
from .imprinted import ImprintBackend
from .modelfile import output_size
from .preprocess import from_model_output

# MobileNet convention for bare float/int8 models: pixels scaled to [-1, 1].
MOBILENET_MEAN, MOBILENET_STD = (127.5,), (127.5,)
# PyTorch's ImageNet convention (torchvision, timm), in pixel units: (p/255 - mean) / std.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def probabilities(raw: np.ndarray, quant: tuple[float, int] | None, kind: str) -> np.ndarray:
    """Return class scores (N, C) float32 from a raw output tensor: dequantized, softmaxed for logits.

    ``kind`` is the contract's output kind: ``probabilities`` are returned as the model gives
    them (dequantized, nothing else); ``logits`` get a softmax. No guessing from the values.
    """
    x = from_model_output(raw.reshape(raw.shape[0], -1), quant)
    if kind != "logits":
        return x
    e = np.exp(x - x.max(axis=1, keepdims=True))  # numerically stable softmax
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def input_layout(shape: tuple[int, ...]) -> str | None:
    """Return ``"nhwc"`` or ``"nchw"`` for an image input shape by where its 1 or 3 channels are (None: cannot tell)."""
    if len(shape) != 4:
        return None
    last, second = shape[3] in (1, 3), shape[1] in (1, 3)
    if last and not second:
        return "nhwc"
    if second and not last:
        return "nchw"
    if last and second:  # (N, 3, H, 3): a 3-pixel-wide image is not an image: channels last, as TensorFlow's
        return "nhwc"
    return None


def bare_guess(tensor: TensorSpec) -> str:
    """Return, in words, how a bare model's input is scaled when nothing says (what :func:`bare_spec` chose)."""
    if np.dtype(tensor.dtype) == np.uint8:
        return "raw pixels 0..255 (its input is uint8)"
    if input_layout(tensor.shape) == "nchw":
        return ("ImageNet mean/std, (p/255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225), PyTorch's convention "
                "for a channels-first float input")  # fmt: skip
    return "(p - 127.5) / 127.5, MobileNet's [-1, 1]"


def bare_spec(tensor: TensorSpec, labels: tuple[str, ...], where: str) -> ModelSpec:
    """Return the contract of a bare model, read from its input tensor.

    Channels last or first by where the 1 or 3 channels are. Scaling (a guess, which
    :func:`bare_guess` words for the user): uint8 inputs take raw pixels; float NHWC inputs
    MobileNet's [-1, 1]; float NCHW inputs (PyTorch exports) ImageNet mean/std.
    """
    shape = tensor.shape
    if len(shape) != 4:
        raise ModelFormatError(f"{where}: expected an image input (N, H, W, C) or (N, C, H, W), found shape {shape}")
    layout = input_layout(shape)
    if layout is None:
        raise ModelFormatError(f"{where}: cannot tell the image channels from input shape {shape} (1 or 3 channels, "
                               "first or last)")  # fmt: skip
    height, width, channels = (shape[1], shape[2], shape[3]) if layout == "nhwc" else (shape[2], shape[3], shape[1])
    if height <= 0 or width <= 0:
        raise ModelFormatError(f"{where}: input size is dynamic {shape}; give it one with `edgetl-runtime adopt "
                               f"{where} --size HxW -o OUT` (or re-export with a fixed size)")  # fmt: skip
    raw = np.dtype(tensor.dtype) == np.uint8  # uint8 models take raw pixels
    if raw:
        mean, std = (), ()
    elif layout == "nchw":
        mean = IMAGENET_MEAN if channels == 3 else IMAGENET_MEAN[:1]
        std = IMAGENET_STD if channels == 3 else IMAGENET_STD[:1]
    else:
        mean, std = MOBILENET_MEAN * channels, MOBILENET_STD * channels
    return ModelSpec(
        labels=labels,
        good_labels=default_good_labels(labels),
        input=InputSpec(
            height=height, width=width, color_mode="rgb" if channels == 3 else "grayscale",
            normalization="model" if raw else "runtime", mean=mean, std=std, layout=layout,
        ),  # fmt: skip
    )


def extra_outputs(backend: Backend, spec: ModelSpec, export: Any, where: str, embedded: bool) -> tuple[int | None, int | None]:
    """Return the indices of the heatmap and of the embedding among the backend's outputs (None when absent).

    An anomaly detector's contract names a heatmap; an export with ``--embedding`` names its size
    in the export facts. Any other output is a file assembled from mismatched parts.
    """
    from .errors import ContractError

    extra = [i for i, t in enumerate(backend.outputs) if t is not backend.output]
    size = getattr(export, "embedding", 0) if embedded else 0
    embedding = [i for i in extra if size and output_size(backend.outputs[i]) == size and len(backend.outputs[i].shape) == 4]
    extra = [i for i in extra if i not in embedding[:1]]
    if size and not embedding:
        raise ContractError(f"{where}: its export facts say it has a {size}-value embedding output, but its outputs are "
                            f"{[t.shape for t in backend.outputs]}; re-export it with `edgetl export --embedding`")  # fmt: skip
    if not spec.output.heatmap:
        if extra and embedded:
            raise ContractError(f"{where}: the model has {len(backend.outputs)} outputs but its contract describes "
                                f"{len(backend.outputs) - len(extra)}; a file assembled from mismatched parts: "
                                "re-export it")  # fmt: skip
        if extra:
            raise ModelFormatError(f"{where}: expected an image classifier with 1 output, found "
                                   f"{len(backend.outputs)} outputs")  # fmt: skip
        return None, embedding[0] if embedding else None
    rows, cols = spec.output.heatmap
    fits = [i for i in extra if tuple(backend.outputs[i].shape[1:]) in ((rows, cols), (rows, cols, 1))]
    if len(extra) != 1 or not fits:
        shapes = [backend.outputs[i].shape for i in extra]
        raise ContractError(f"{where}: its contract says a ({rows}, {cols}) anomaly heatmap is the second output, but "
                            f"the model's other outputs are {shapes}; re-export it with `edgetl export`")  # fmt: skip
    return fits[0], embedding[0] if embedding else None


def imprinted_backend(backend: Backend, embedded: Any, artifact: Any, embedding_output: int | None, where: str) -> Any:
    """Return the backend of an imprinted model: its base's embedding, then the class means (see :mod:`.imprinted`)."""
    from .errors import ContractError

    base = embedded.spec
    if base is None:  # a bare embedding extractor: its one output is the embedding
        embedding_output = next(i for i, t in enumerate(backend.outputs) if t is backend.output)
    elif embedding_output is None:
        raise ContractError(f"{where}: its base was exported without an embedding output; the file is assembled from "
                            "mismatched parts: imprint again on an `edgetl export --embedding` file")  # fmt: skip
    size = output_size(backend.outputs[embedding_output])
    if size != artifact.embedding:
        raise ContractError(f"{where}: its class means have {artifact.embedding} values but the base's embedding has "
                            f"{size}; the file is assembled from mismatched parts: imprint again")  # fmt: skip
    if not artifact.base_classes:
        return ImprintBackend(backend, artifact, embedding_output)
    export = embedded.export
    protos, owners = getattr(export, "prototypes", ()), getattr(export, "prototype_labels", ())
    if (base is None or base.labels != artifact.spec.labels[:artifact.base_classes]
            or set(owners) != set(range(len(base.labels)))):  # fmt: skip
        raise ContractError(f"{where}: it extends a classifier's labels, but its base does not carry those labels and "
                            "their prototypes; imprint again on an `edgetl export --embedding` file")  # fmt: skip
    primary = next(i for i, t in enumerate(backend.outputs) if t is backend.output)
    quant, kind = backend.output.quantization, base.output.kind
    head = lambda outputs: probabilities(outputs[primary], quant, kind)  # noqa: E731
    return ImprintBackend(backend, artifact, embedding_output, head, np.asarray(protos, np.float32),
                          np.asarray(owners, np.intp))  # fmt: skip

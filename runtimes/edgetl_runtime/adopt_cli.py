"""``edgetl-runtime adopt``: write an edgetl model contract into a third-party model (see :mod:`.adopting`).

Kept apart from :mod:`edgetl_runtime.cli`, which registers it, as the station's commands are.
"""

from __future__ import annotations

import click

from .clitools import InputError, _writable_file, note, verbosity_options
from .errors import EdgetlRuntimeError


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    h, sep, w = value.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or not 0 < int(h) <= 8192 or not 0 < int(w) <= 8192:
        raise click.BadParameter(f"{value!r}: give HEIGHTxWIDTH in pixels, e.g. 224x224")
    return int(h), int(w)


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give 1 or 3 numbers, comma-separated (pixel units, 0..255)") from None


@click.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the model to write, with the contract (MODEL is kept as it is)")
@click.option("--preset", type=click.Choice(["timm", "torchvision", "ultralytics-cls", "keras-applications", "keras-caffe",
                                             "keras-torch", "keras-raw"]), default=None,
              help="the source's documented preprocessing and output (see --help-presets)")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="labels file, one per output [Ultralytics: the file's own; else numbered]")
@click.option("--good", multiple=True, help="a label that means 'no defect' (repeatable) [good, ok, normal, pass...]")
@click.option("--mean", callback=_floats, default=None, metavar="M[,M,M]",
              help="subtracted per channel, in pixel units 0..255 (PyTorch's ImageNet: 123.675,116.28,103.53)")
@click.option("--std", callback=_floats, default=None, metavar="S[,S,S]",
              help="divided per channel, in pixel units (PyTorch's ImageNet: 58.395,57.12,57.375; pixels 0..1: 255)")
@click.option("--bgr", "channel_order", flag_value="bgr", default=None, help="the model takes BGR (OpenCV, Caffe)")
@click.option("--rgb", "channel_order", flag_value="rgb", help="the model takes RGB [the preset's, else RGB]")
@click.option("--layout", type=click.Choice(["nchw", "nhwc"]), default=None,
              help="input layout [read from the input tensor: where its 1 or 3 channels are]")
@click.option("--resize", type=click.Choice(["bilinear", "bicubic", "nearest", "area"]), default=None,
              help="resampling to the model's size [the preset's, else bilinear]")
@click.option("--output-kind", "output_kind", type=click.Choice(["probabilities", "logits"]), default=None,
              help="what the output holds: logits get a softmax in the runtime [the preset's]")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="defect-score threshold [0.5]")
@click.option("--size", callback=_size, default=None, metavar="HxW",
              help="image size, for a model exported with dynamic image axes [the input tensor's]")
@click.option("--json", "as_json", is_flag=True, help="print the contract written as JSON on stdout")
@click.option("--help-presets", is_flag=True, is_eager=True, expose_value=False,
              callback=lambda ctx, p, v: _print_presets(ctx) if v else None, help="what each preset sets, and its source")
@verbosity_options
def adopt(model: str, output: str, preset: str | None, labels: str | None, good: tuple[str, ...],
          mean: tuple[float, ...] | None, std: tuple[float, ...] | None, channel_order: str | None,
          layout: str | None, resize: str | None, output_kind: str | None, threshold: float | None,
          size: tuple[int, int] | None, as_json: bool) -> None:  # fmt: skip
    """Write an edgetl model contract into a third-party .onnx/.tflite classifier.

    The contract says how to prepare the image (layout, colour order, size, resize, mean/std)
    and read the output (probabilities or logits, labels, good labels, threshold); predict,
    bench, eval, serve then treat the file like an edgetl export. The graph is not changed.

    \b
      edgetl-runtime adopt resnet18.onnx --preset torchvision --labels labels.txt -o resnet18-edgetl.onnx
      edgetl-runtime adopt yolov8n-cls.onnx --preset ultralytics-cls --good ok -o parts.onnx
      edgetl-runtime adopt model.onnx --mean 0 --std 255 --output-kind logits --labels l.txt -o out.onnx
    """
    from .adopting import adopt as run_adopt
    from .adopting import describe

    _writable_file(output)
    try:
        spec, notes = run_adopt(model, output, preset=preset, labels=labels, good_labels=good or None, mean=mean,
                                std=std, channel_order=channel_order, layout=layout, resize=resize,
                                output=output_kind, threshold=threshold, size=size)  # fmt: skip
    except EdgetlRuntimeError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"{exc.filename or model}: {exc.strerror or exc}") from None
    for text in notes:
        note(text)
    if as_json:
        click.echo(spec.to_json(), nl=False)
        return
    click.echo(f"wrote {output}: {model} with an edgetl contract (its outputs checked equal to the original's)")
    for line in describe(spec):
        click.echo(f"  {line}")


def _print_presets(ctx: click.Context) -> None:
    from .adopting import PRESETS, describe
    from .contract import InputSpec, ModelSpec, OutputSpec

    for p in PRESETS.values():
        spec = ModelSpec(labels=("good", "defect"), good_labels=("good",), output=OutputSpec(kind=p.output),
                         input=InputSpec(224, 224, resize=p.resize, normalization="runtime" if p.mean else "model",
                                         mean=p.mean, std=p.std, layout=p.layout, channel_order=p.channel_order))  # fmt: skip
        text = f"{describe(spec)[0][9:]}; output {p.output}. Source: {p.source}"
        click.echo(f"{p.name}\n" + click.wrap_text(text, width=78, initial_indent="  ", subsequent_indent="  "))
    ctx.exit(0)

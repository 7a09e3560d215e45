"""``edgetl``: the workstation CLI (data, backbones, select, train, eval, export, benchmark, devices).

Each command lives in ``edgetl/commands/<name>.py`` and imports TensorFlow only inside its body,
so ``edgetl --help`` is instant.
"""

from __future__ import annotations

import importlib

import click

from . import __version__
from .console import NORMAL, set_verbosity

# command name -> (module, attribute); modules are imported when the CLI is built, so they must
# not import TensorFlow at module level (a test checks this).
_COMMANDS = {
    "data": ("edgetl.commands.data", "data"),
    "backbones": ("edgetl.commands.backbones", "backbones"),
    "train": ("edgetl.commands.train", "train"),
    "eval": ("edgetl.commands.evaluate", "eval_cmd"),
    "export": ("edgetl.commands.export", "export"),
    "benchmark": ("edgetl.commands.benchmark", "benchmark"),
    "select": ("edgetl.commands.select", "select"),
    "devices": ("edgetl.commands.devices", "devices"),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgetl")
def main() -> None:
    """Fine-tune a defect classifier on inspection images and ship it to edge hardware.

    \b
    Typical flow:
      edgetl data elpv data/elpv
      edgetl train data/elpv/train -o runs/elpv
      edgetl eval runs/elpv data/elpv/test
      edgetl export runs/elpv --format tflite --quant int8 -o model.tflite
    """
    # Each invocation starts at normal verbosity (in one process, e.g. tests, a previous -q must
    # not leak); a command's -q/-v (edgetl.console.verbosity_options) then sets its own.
    set_verbosity(NORMAL)
    from edgetl_runtime.atomic import exit_cleanly_on_sigterm

    exit_cleanly_on_sigterm()  # SIGTERM runs the cleanup of atomic writes instead of killing mid-write


for _name, (_module, _attr) in _COMMANDS.items():
    main.add_command(getattr(importlib.import_module(_module), _attr), _name)

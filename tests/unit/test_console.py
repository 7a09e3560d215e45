"""Verbosity, the stderr console, -q/-v, and keeping TensorFlow's log noise off the terminal."""

from __future__ import annotations

import os

import click
import pytest
from click.testing import CliRunner

from edgetl import _tf, console
from edgetl.console import NORMAL, QUIET, VERBOSE, set_verbosity, verbosity, verbosity_options

ONEDNN = (b"I0000 00:00:1795653902.843781   23699 port.cc:153] oneDNN custom operations are on. You may see "
          b"slightly different numerical results.")
CUDA_PROBE = b"E0000 00:00:1795653905.693679   23699 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)"
FATAL = b"F0000 00:00:1795653905.693679   23699 cpu_feature_guard.cc:1] The TensorFlow library was compiled to use AVX"
ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


@pytest.fixture(autouse=True)
def normal_verbosity():
    set_verbosity(NORMAL)
    yield
    set_verbosity(NORMAL)


@verbosity_options
@click.command()
def show() -> None:
    click.echo(verbosity())


@pytest.mark.parametrize("args, level", [([], NORMAL), (["-q"], QUIET), (["--quiet"], QUIET),
                                         (["-v"], VERBOSE), (["--verbose"], VERBOSE)])
def test_quiet_and_verbose_flags_set_the_verbosity_before_the_command_runs(args, level) -> None:
    result = CliRunner().invoke(show, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(level)


def test_quiet_and_verbose_together_are_a_usage_error() -> None:
    result = CliRunner().invoke(show, ["-q", "-v"])
    assert result.exit_code == 2 and "exclude each other" in result.stderr


def test_a_command_without_flags_runs_at_normal_verbosity_after_a_quiet_one() -> None:
    runner = CliRunner()
    assert runner.invoke(show, ["-q"]).stdout.strip() == str(QUIET)
    assert runner.invoke(show, []).stdout.strip() == str(NORMAL)


@pytest.mark.parametrize("level, shown", [(QUIET, {"warn"}), (NORMAL, {"info", "warn"}),
                                          (VERBOSE, {"info", "debug", "warn"})])
def test_console_prints_by_verbosity_and_only_on_stderr(capsys, level, shown) -> None:
    set_verbosity(level)
    console.info("info line")
    console.debug("debug line")
    console.warn("warn line")
    console.err_console().print("plain line")  # what the trainer prints: informational
    out, err = capsys.readouterr()
    assert out == ""
    assert {name for name in ("info", "debug", "warn") if f"{name} line" in err} == shown
    assert ("plain line" in err) == (level >= NORMAL)
    assert "warning:" in err


def test_tf_log_level_defaults_to_errors_only_and_leaves_the_users_setting(monkeypatch) -> None:
    monkeypatch.setattr(_tf, "_level_we_set", None)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    _tf._configure()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    set_verbosity(VERBOSE)  # ours to change: --verbose restores TensorFlow's default
    _tf._configure()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # the user's: kept in every mode
    _tf._configure()
    set_verbosity(NORMAL)
    _tf._configure()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == onednn  # it changes numerics, not only the notice


def test_native_filter_drops_early_absl_lines_below_the_level_and_keeps_the_rest(capfd) -> None:
    # A line that is no log message is kept, unless it continues a dropped message.
    lines = [b"a line that is not a log message", ABSL_NOTICE, ONEDNN, b"  continuation of the oneDNN notice",
             CUDA_PROBE, FATAL]
    with _tf._native_log_filter(min_level=3):
        os.write(2, b"\n".join(lines) + b"\n")
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "continuation" not in err and "cuInit" not in err and "absl::Init" not in err
    assert "a line that is not a log message" in err and "compiled to use AVX" in err

    with _tf._native_log_filter(min_level=2):
        os.write(2, b"\n".join(lines) + b"\n")
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "cuInit" in err

    with _tf._native_log_filter(min_level=0):  # TensorFlow's default: everything
        os.write(2, ONEDNN + b"\n")
    assert "oneDNN" in capfd.readouterr().err


def test_native_filter_restores_stderr_when_the_block_raises(capfd) -> None:
    with pytest.raises(RuntimeError):
        with _tf._native_log_filter(min_level=3):
            raise RuntimeError("import failed")
    os.write(2, ONEDNN + b"\n")
    assert "oneDNN" in capfd.readouterr().err

"""The shared command-line pieces: the config flags spelled one way everywhere, value types, and progress bars only
on a terminal."""

import argparse
import io
import os
import subprocess
import sys

import pytest

from utils.cli import add_config_flags, add_progress_flag, non_negative_int, progress_wanted, str2bool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parser(**kwargs):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, **kwargs)
    add_progress_flag(parser)
    return parser


def test_config_flags_take_the_authors_spelling_and_repeated_sets_add_up():
    args = _parser().parse_args(["--cfg_path", "Config_Demo", "--set", "epochs=1", "--set", "seed=2", "lr=3"])
    assert (args.config, args.set, args.device) == ("Config_Demo", ["epochs=1", "seed=2", "lr=3"], None)
    assert _parser(default="Config_QaTa_CPU").parse_args([]).config == "Config_QaTa_CPU"
    assert not hasattr(_parser(device=False).parse_args([]), "device")
    with pytest.raises(SystemExit):
        _parser(device=False).parse_args(["--device", "cpu"])


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal_and_not_when_asked_off():
    assert progress_wanted(False, _Terminal()) is True
    assert progress_wanted(True, _Terminal()) is False
    assert progress_wanted(False, io.StringIO()) is False  # a file or a pipe: logs only


def test_value_types():
    assert str2bool("False") is False and str2bool(" yes ") is True
    assert non_negative_int("0") == 0
    for parse, bad, said in ((str2bool, "maybe", "True or False"), (non_negative_int, "-3", "0 or more, got -3"),
                             (non_negative_int, "x", "0 or more, got 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            parse(bad)


def test_every_command_declares_the_config_flags_through_the_one_helper():
    """Each command's --help shows -c/--config/--cfg_path and --set as add_config_flags words them."""
    for command in (["train_model.py"], ["test.py", "test"], ["test.py", "predict"], ["Load_Dataset.py"],
                    ["-m", "tools.benchmark"], ["-m", "tools.summary"], ["-m", "tools.audit_reports"],
                    ["-m", "tools.curves"], ["-m", "tools.qata_table"], ["-m", "tools.compare"]):
        done = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, (command, done.stderr)
        assert "-c CONFIG, --config CONFIG, --cfg_path CONFIG" in done.stdout, command
        assert "--set [KEY=VALUE ...]" in done.stdout, command

"""test.py's command line: the two subcommands, the flags it shares with train_model.py and the authors' spellings."""


import pytest
import torch

import test as test_cli
from utils.inference import commands


def test_without_a_subcommand_it_tests():
    args = test_cli.parse_args(["-t", "session_1"])
    assert args.command == "test" and args.test_session == "session_1" and args.config == "Config_QaTa"
    assert test_cli.parse_args(["test", "-t", "session_1"]) == args


@pytest.mark.parametrize("flags, expected", [([], False), (["--test_vis"], True), (["-v"], True),
                                             (["--test_vis", "True"], True), (["--test_vis", "False"], False)])
def test_test_vis_is_a_flag_and_still_takes_the_authors_value(flags, expected):
    assert test_cli.parse_args(["-t", "s", *flags]).test_vis is expected


def test_test_vis_refuses_a_word_that_is_not_a_boolean(capsys):
    with pytest.raises(SystemExit):
        test_cli.parse_args(["-t", "s", "--test_vis", "maybe"])
    assert "expected True or False, got 'maybe'" in capsys.readouterr().err


def test_config_flag_and_its_authors_spelling():
    assert test_cli.parse_args(["-c", "Config_Demo", "-t", "s"]).config == "Config_Demo"
    assert test_cli.parse_args(["--config", "Config_Demo", "-t", "s"]).config == "Config_Demo"
    assert test_cli.parse_args(["--cfg_path", "Config_Demo", "-t", "s"]).config == "Config_Demo"
    assert test_cli.parse_args(["predict", "--cfg_path", "Config_Demo", "--checkpoint", "c", "--image", "i",
                                "--text", "", "--out", "o"]).config == "Config_Demo"


def test_device_picks_the_cpu_and_the_authors_gpu_index_maps_to_cuda(monkeypatch, caplog):
    assert commands.test_device("cpu", None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("WARNING"):
        assert commands.test_device(None, "1").type == "cpu"
    assert "--gpu 1 is ignored" in caplog.text


def test_device_and_gpu_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        test_cli.parse_args(["-t", "s", "--gpu", "0", "--device", "cpu"])
    assert "give --device or the authors' --gpu, not both" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["-t", "s", "--checkpoint", "c"], "not allowed with argument"),
    ([], "one of the arguments -t/--test_session --checkpoint is required"),
    (["predict", "--checkpoint", "c", "--out", "o"], "give --image (with --text) or --images (with --table)"),
    (["predict", "--checkpoint", "c", "--out", "o", "--image", "i"], "--image needs --text"),
    (["predict", "--checkpoint", "c", "--out", "o", "--images", "d"], "--images needs --table"),
])
def test_incomplete_command_lines_say_what_is_missing(argv, message, capsys):
    with pytest.raises(SystemExit):
        test_cli.parse_args(argv)
    assert message in capsys.readouterr().err


def test_predict_shares_the_common_flags():
    args = test_cli.parse_args(["predict", "--checkpoint", "c", "--images", "d", "--table", "t", "--out", "o",
                                "--device", "cpu", "--set", "img_size=32", "--precision", "auto", "--text_cache", "0"])
    assert (args.device, args.set, args.precision, args.text_cache) == ("cpu", ["img_size=32"], "auto", 0)

"""Bad input on the command line and in config modules, one case per test (the bad-input family; docs/RELIABILITY.md
lists the cases): each gives one line naming the thing and the fix, the documented exit code, and no traceback."""

import os

import pytest
import torch

import test as test_cli
import train_model
from utils.checkpoints import LATEST_NAME
from utils.config import load_config
from utils.misc import get_device
from utils.sessions import create_session_dir


def test_repeated_set_flags_add_up():
    args = train_model.parse_args(["--set", "epochs=1", "--set", "output_root=X", "seed=2"])
    assert args.set == ["epochs=1", "output_root=X", "seed=2"]
    args = test_cli.parse_args(["-t", "s", "--set", "epochs=1", "--set", "output_root=X"])
    assert args.set == ["epochs=1", "output_root=X"]


@pytest.mark.parametrize("item, fragment", [
    ("learning_rate=-1", "learning_rate must be > 0"),
    ("learning_rate=0", "learning_rate must be > 0"),
    ("weight_decay=-0.1", "weight_decay must be >= 0"),
    ("task_name='../../..'", "task_name must be a plain folder name"),
    ("task_name=a/b", "task_name must be a plain folder name"),
])
def test_values_that_cannot_work_are_refused(item, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_config("Config_QaTa", [item])


def test_a_folder_given_as_config_says_so(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="is a folder; give a config file"):
        load_config(str(tmp_path))
    assert train_model.main(["-c", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("body, fragment, line", [
    ("from utils.config import Config\nconfig = Config(\n", "syntax error", 2),
    ("from utils.config import Config\n\nconfig = Config().replace(epochs=0)\n", "ValueError: epochs", 3),
    ("import nothing_of_that_name\n", "ModuleNotFoundError", 1),
])
def test_a_broken_config_module_names_its_file_and_line(tmp_path, capsys, monkeypatch, body, fragment, line):
    path = tmp_path / "Config_Broken.py"
    path.write_text(body)
    monkeypatch.delenv("RECLMIS_DEBUG", raising=False)
    with pytest.raises(ValueError, match=fragment) as caught:
        load_config(str(path))
    assert f"{path}, line {line}" in str(caught.value)
    assert train_model.main(["-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"line {line}" in err
    monkeypatch.setenv("RECLMIS_DEBUG", "1")  # the traceback, for whoever wants it
    with pytest.raises((SyntaxError, ValueError, ModuleNotFoundError)) as raw:
        load_config(str(path))
    assert "RECLMIS_DEBUG" not in str(raw.value)


@pytest.mark.parametrize("name", ["gpu0", "GPU", "cuda0"])
def test_a_device_name_torch_does_not_know_is_one_line(name, capsys):
    with pytest.raises(ValueError, match=f"unknown device '{name}'; use auto, cpu, cuda, cuda:N"):
        get_device(name)
    assert train_model.main(["-c", "Config_Demo", "--device", name]) == 2
    assert "unknown device" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["learning_rate=0.5", "lr=exp", "weight_decay=0.1", "batch_size=2", "seed=9"])
def test_resume_refuses_what_the_checkpoint_fixes(tmp_path, capsys, key):
    session = create_session_dir(str(tmp_path), "Demo")
    os.makedirs(os.path.join(session, "models"), exist_ok=True)
    torch.save({"config": load_config("Config_Demo").to_dict(), "epoch": 1},
               os.path.join(session, "models", LATEST_NAME))
    assert train_model.main(["-c", "Config_Demo", "--resume", os.path.basename(session), "--set",
                             f"output_root={tmp_path}", key]) == 2
    err = capsys.readouterr().err
    assert f"--set {key.split('=')[0]} cannot change on --resume" in err and "start a new session" in err
    assert train_model.main(["-c", "Config_Demo", "--resume", os.path.basename(session), "--set",
                             f"output_root={tmp_path}", "epochs=0"]) == 2  # a field it may change still checked
    assert "epochs" in capsys.readouterr().err

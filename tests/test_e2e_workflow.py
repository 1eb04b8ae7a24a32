"""End to end on CPU: train two epochs on a generated set, resume for a third, test by session and by checkpoint."""

import csv
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import test as test_cli
import train_model
from tests.tiny import NEEDS_CXX, PATIENCE, write_clip_file
from utils.checkpoints import BEST_NAME, LATEST_NAME
from utils.data.demo import make_demo_dataset
from utils.sessions import create_session_dir
from utils.training import precision
from utils.training.checkpoint import save_checkpoint
from utils.training.trainer import Trainer
from utils.weights_io import read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1", "text_embed_dim=32",
        "rec_trans_num_layers1=1", "batch_size=4", "num_workers=0", "tensorboard_images=2", "demo_data=False"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "Demo", n_train=8, n_val=4, n_test=4, img_size=64,
                             seed=1)


def _settings(root, output):
    return TINY + [f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder",
                   f"test_dataset={root}/Test_Folder", f"output_root={output}"]


def _event_scalars(folder):
    events = EventAccumulator(folder)
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events.Tags()


def test_train_resume_and_test(demo_root, tmp_path, capsys):
    output = tmp_path / "runs"
    settings = _settings(demo_root, output)
    assert train_model.main(["-c", "Config_Demo", "--set", "epochs=2", *settings, "--no_progress"]) == 0
    session = capsys.readouterr().out.strip().splitlines()[-1]
    session_dir = output / "Demo" / "RecLMIS" / session
    for item in ("config.json", f"{session}.log", "models", "tensorboard_logs"):
        assert (session_dir / item).exists(), item
    latest = read_checkpoint(str(session_dir / "models" / LATEST_NAME))
    assert latest["epoch"] == 1 and latest["config"]["epochs"] == 2
    best = read_checkpoint(str(session_dir / "models" / BEST_NAME))
    assert "optimizer" in latest and "rng" in latest and "optimizer" not in best  # resuming reads latest only

    # Resume for a third epoch: same session, the log appended, TensorBoard steps not duplicated.
    assert train_model.main(["-c", "Config_Demo", "--resume", session, "--set", f"output_root={output}", "epochs=3",
                             "--no_progress"]) == 0
    assert read_checkpoint(str(session_dir / "models" / LATEST_NAME))["epoch"] == 2
    log = (session_dir / f"{session}.log").read_text()
    assert "Epoch 1/" in log and "Epoch 3/3" in log and "resumed from" in log
    scalars, tags = _event_scalars(str(session_dir / "tensorboard_logs"))
    for tag in ("train/total", "train/ccl", "train/text_rec", "train/img_rec", "val/dice", "val/iou", "train/lr",
                "val/dice_shuffled", "val/text_gain"):
        assert scalars[tag] == [1, 2, 3], tag
    assert "val/input_truth_prediction" in tags["images"]
    events = EventAccumulator(str(session_dir / "tensorboard_logs"))
    events.Reload()
    grid = events.Images("val/input_truth_prediction")[-1]
    assert (grid.height, grid.width) == (14 + 2 * 32, 3 * 32)  # the column header, then 2 images of 32 px
    gains = [line for line in log.splitlines() if "text_gain=" in line]
    assert len(gains) >= 3
    values = dict(item.split("=") for item in gains[-1].split("| val: ")[1].split(" | ")[0].split())
    assert float(values["text_gain"]) == pytest.approx(float(values["dice"]) - float(values["dice_shuffled"]),
                                                       abs=2e-4)
    # config.json records the resolved fields of Config_Demo's variant="improved".
    saved = json.loads((session_dir / "config.json").read_text())
    assert saved["variant"] == "improved" and saved["geometry"] == "report" and saved["text_guide"]

    # Test from the session id, then from the checkpoint file.
    assert test_cli.main(["-c", "Config_Demo", "--set", *settings, "-t", session, "--test_vis", "True",
                          "--no_progress"]) == 0
    with open(session_dir / "test_per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(0 <= float(r["dice"]) <= 1 for r in rows) and rows[0]["report"]
    summary = json.loads((session_dir / "test_summary.json").read_text())
    assert summary["images"] == 4 and 0 <= summary["dice_pooled"] <= 1
    assert summary["text_cache"]["computed"] + summary["text_cache"]["reused"] == 4
    assert len(os.listdir(session_dir / "Demo_visualize_test")) == 4
    preds = tmp_path / "preds"
    assert test_cli.main(["-c", "Config_Demo", "--set", *settings, "--checkpoint",
                          str(session_dir / "models" / BEST_NAME), "--save_pred", str(preds), "--no_progress"]) == 0
    assert sorted(os.listdir(preds)) == sorted(r["mask"] for r in rows)
    cached = json.loads((session_dir / "test_summary.json").read_text())
    assert test_cli.main(["-c", "Config_Demo", "--set", *settings, "--checkpoint",
                          str(session_dir / "models" / BEST_NAME), "--text_cache", "0", "--no_progress"]) == 0
    uncached = json.loads((session_dir / "test_summary.json").read_text())
    assert uncached["text_cache"] is None and cached["text_cache"]["capacity"] == 1024
    assert (uncached["dice"], uncached["iou_pooled"]) == (cached["dice"], cached["iou_pooled"])  # batch 1: same bits


def test_the_shuffled_report_check_changes_no_weight(demo_root, tmp_path, capsys):
    """Scoring validation with shuffled reports draws no random number: the faithful run stays bit for bit."""
    weights = {}
    for every in (0, 1):
        output = tmp_path / f"every{every}"
        assert train_model.main(["-c", "Config_Demo", "--set", "epochs=2", "variant=faithful",
                                 f"val_text_check_every={every}", *_settings(demo_root, output),
                                 "--no_progress"]) == 0
        session = capsys.readouterr().out.strip().splitlines()[-1]
        models = output / "Demo" / "RecLMIS" / session / "models"
        weights[every] = read_checkpoint(str(models / LATEST_NAME))["state_dict"]
        log = (output / "Demo" / "RecLMIS" / session / f"{session}.log").read_text()
        assert ("text_gain=" in log) == bool(every)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@NEEDS_CXX
def test_compiled_test_run_writes_the_same_masks(demo_root, tmp_path, capsys):
    settings = _settings(demo_root, tmp_path / "runs")
    assert train_model.main(["-c", "Config_Demo", "--set", "epochs=1", *settings, "--no_progress"]) == 0
    session = capsys.readouterr().out.strip().splitlines()[-1]
    best = str(tmp_path / "runs" / "Demo" / "RecLMIS" / session / "models" / BEST_NAME)
    folders = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        folders[name] = tmp_path / name
        assert test_cli.main(["-c", "Config_Demo", "--set", *settings, "--checkpoint", best, "--save_pred",
                              str(folders[name]), *extra, "--no_progress"]) == 0
    summary = json.loads((tmp_path / "runs" / "Demo" / "RecLMIS" / session / "test_summary.json").read_text())
    assert summary["compiled"] is True
    for name in os.listdir(folders["eager"]):
        assert (folders["compiled"] / name).read_bytes() == (folders["eager"] / name).read_bytes(), name


def test_mixed_precision_on_the_cpu_times_bf16_against_fp32_warns_when_slower_and_trains_the_same(
        demo_root, tmp_path, capsys, monkeypatch):
    settings = _settings(demo_root, tmp_path / "runs")
    weights = []
    for timing in ("measured", "slower"):
        if timing == "slower":
            monkeypatch.setattr(precision, "time_amp_step", lambda *args: (2.0, 3.0))
        assert train_model.main(["-c", "Config_Demo", "--set", "epochs=1", "amp=True", *settings,
                                 "--no_progress"]) == 0
        out, err = capsys.readouterr()
        session = tmp_path / "runs" / "Demo" / "RecLMIS" / out.strip().splitlines()[-1]
        weights.append(read_checkpoint(str(session / "models" / LATEST_NAME))["state_dict"])
        if timing == "measured":
            assert re.search(r"forward, losses and backward on a validation batch of \d+ took [\d.e-]+ s in fp32 "
                             r"and [\d.e-]+ s in bf16 autocast \([\d.]+x; median of 2", err)
        else:
            assert "amp=True is slower on this CPU" in err and "(1.50x;" in err and "Set amp=False" in err
    for key, value in weights[0].items():  # timing on copies changed nothing the run trained
        assert torch.equal(weights[1][key], value), key
    monkeypatch.setattr(precision, "time_amp_step", lambda *args: pytest.fail("timed without amp=True"))
    assert train_model.main(["-c", "Config_Demo", "--set", "epochs=1", *settings, "--no_progress"]) == 0
    assert "bf16" not in capsys.readouterr().err


def test_two_sessions_in_one_minute_do_not_collide(tmp_path):
    first = create_session_dir(str(tmp_path), "Demo", now=0)
    second = create_session_dir(str(tmp_path), "Demo", now=0)
    assert first != second and second.endswith("_2")


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint({"epoch": 1}, str(path))

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"epoch": 2, "bad": Unsaveable()}, str(path))
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["latest.pt"]


def _straight_and_resumed(settings, output, capsys, epochs=3):
    """Sessions of a run of ``epochs`` epochs and of one stopped after ``epochs - 1`` and resumed."""
    assert train_model.main(["-c", "Config_Demo", "--set", f"epochs={epochs}", *settings, "--no_progress"]) == 0
    straight = capsys.readouterr().out.strip().splitlines()[-1]
    assert train_model.main(["-c", "Config_Demo", "--set", f"epochs={epochs - 1}", *settings, "--no_progress"]) == 0
    resumed = capsys.readouterr().out.strip().splitlines()[-1]
    assert train_model.main(["-c", "Config_Demo", "--resume", resumed, "--set", f"output_root={output}",
                             f"epochs={epochs}", "--no_progress"]) == 0
    root = output / "Demo" / "RecLMIS"
    return root / straight / "models", root / resumed / "models"


@pytest.mark.parametrize("clip_file", [False, True], ids=["random_tower", "clip_file"])
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(demo_root, tmp_path, capsys, clip_file):
    settings = _settings(demo_root, tmp_path / "runs")
    if clip_file:  # the latest file then leaves the frozen tower out; resuming rebuilds it from the CLIP file
        settings.append(f"clip_weights={write_clip_file(tmp_path / 'clip.pt')}")
    straight, resumed = _straight_and_resumed(settings, tmp_path / "runs", capsys)
    latest = read_checkpoint(str(resumed / LATEST_NAME))
    assert ("clip.token_embedding.weight" in latest["state_dict"]) is not clip_file
    assert ("frozen_omitted" in latest) is clip_file
    assert "clip.token_embedding.weight" in read_checkpoint(str(resumed / BEST_NAME))["state_dict"]
    for name in (LATEST_NAME, BEST_NAME):
        a = read_checkpoint(str(straight / name))["state_dict"]
        b = read_checkpoint(str(resumed / name))["state_dict"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_compact_resume_halves_the_moments_and_resumes_close(demo_root, tmp_path, capsys):
    output = tmp_path / "runs"
    straight, resumed = _straight_and_resumed(_settings(demo_root, output) + ["compact_resume=True"], output, capsys)
    latest = read_checkpoint(str(resumed / LATEST_NAME))
    moments = [s["exp_avg_sq"] for s in latest["optimizer"]["state"].values()]
    assert moments and all(m.dtype == torch.bfloat16 for m in moments)
    a = read_checkpoint(str(straight / LATEST_NAME))["state_dict"]
    b = latest["state_dict"]
    # Moments rounded to 8 significant bits change the resumed epoch's updates a little (and conv biases ahead of a
    # BatchNorm, whose gradients are rounding noise, at random), so the weights stay close overall but not equal.
    keys = [k for k in a if a[k].is_floating_point()]
    difference = torch.cat([(a[k].float() - b[k].float()).flatten() for k in keys]).norm()
    assert 0 < difference < 2e-4 * torch.cat([a[k].float().flatten() for k in keys]).norm()  # 6.5e-5 here


def test_a_distributed_run_with_amp_on_the_cpu_warns_without_timing(caplog, monkeypatch):
    monkeypatch.setattr(precision, "time_amp_step", lambda *args: pytest.fail("a distributed run timed the step"))
    for is_main, warned in ((True, 1), (False, 0)):
        caplog.clear()
        trainer = SimpleNamespace(amp=True, device=torch.device("cpu"), config=SimpleNamespace(batch_size=4),
                                  dist=SimpleNamespace(enabled=True, is_main=is_main))
        Trainer.check_amp(trainer)
        found = [r for r in caplog.records if "faster on some CPUs and slower on others" in r.getMessage()]
        assert len(found) == warned and all("--train_batch 4" in r.getMessage() for r in found)


def test_ctrl_c_while_timing_amp_removes_the_new_session_and_returns_130(demo_root, tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(precision, "time_amp_step", interrupted)
    output = tmp_path / "runs"
    settings = _settings(demo_root, output)
    assert train_model.main(["-c", "Config_Demo", "--set", "epochs=1", "amp=True", *settings, "--no_progress"]) == 130
    assert not list((output / "Demo" / "RecLMIS").iterdir())


FREED_WITHOUT_COLLECTION = """
import gc, sys
import train_model
from utils.training.trainer import Trainer
run = Trainer.run
def run_without_collection(trainer):
    gc.collect()  # what setting up left (torch's first import of dynamo holds its own frame)
    gc.disable()
    return run(trainer)
Trainer.run = run_without_collection
assert train_model.main(sys.argv[1:]) == 0
print(sum(type(o).__name__ in ("Trainer", "RecLMIS") for o in gc.get_objects()))
"""


def test_a_finished_training_frees_its_trainer_without_garbage_collection(demo_root, tmp_path):
    """In a distributed run the trainer holds the DDP model and, through it, the process group; a reference cycle
    made while it runs (drawing the curves once made one) keeps the group alive past its destruction until a later
    collection or interpreter exit, on one process only. A fresh interpreter, since matplotlib caches what it
    parsed."""
    settings = _settings(demo_root, tmp_path / "runs")
    done = subprocess.run([sys.executable, "-c", FREED_WITHOUT_COLLECTION, "-c", "Config_Demo", "--set", "epochs=1",
                           *settings, "--no_progress"], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, check=False, timeout=PATIENCE)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training curves:" in done.stderr  # the curves were drawn
    assert done.stdout.strip().splitlines()[-1] == "0"


def test_without_a_terminal_training_logs_lines_not_progress_bar_frames(demo_root, tmp_path, capsys):
    """stderr captured (a file or pipe, as under nohup or tee): no tqdm redraws, one log line per epoch."""
    output = tmp_path / "runs"
    assert train_model.main(["-c", "Config_Demo", "--set", "epochs=2", *_settings(demo_root, output)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err
    assert err.count("Epoch 1/2") == 1 and err.count("Epoch 2/2") == 1

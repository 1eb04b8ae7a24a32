"""Nothing is lost on a crash: a training process killed with SIGKILL or stopped with Ctrl-C resumes to the same
checkpoints as a run never interrupted; a full disk, an unwritable folder or a NaN loss stop with the last good
checkpoint intact. The kill tests run real training processes."""

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import train_model
from tests.tiny import PATIENCE, write_clip_file
from utils.checkpoints import BEST_NAME, LATEST_NAME
from utils.data.demo import make_demo_dataset
from utils.training.losses import RecLMISCriterion
from utils.weights_io import read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3
TINY = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1", "text_embed_dim=32",
        "rec_trans_num_layers1=1", "batch_size=2", "tensorboard_images=0", "demo_data=False",
        f"epochs={EPOCHS}", "early_stopping_patience=100"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = make_demo_dataset(tmp_path_factory.mktemp("data") / "Demo", n_train=48, n_val=4, n_test=2, img_size=48,
                             seed=3)
    write_clip_file(root.parent / "clip.pt")
    return root


def _settings(root, output, workers=0):
    """The text tower comes from a CLIP file, as in QaTa's config: the latest checkpoint leaves it out, and every
    resume below rebuilds it from the file."""
    return TINY + [f"num_workers={workers}", f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder",
                   f"test_dataset={root}/Test_Folder", f"output_root={output}", f"clip_weights={root.parent}/clip.pt"]


def _command(*args):
    return [sys.executable, "train_model.py", "-c", "Config_Demo", "--no_progress", *args]


def _env():
    """One thread per training process, as in the distributed tests: under load (another job on a 2-core machine)
    two threads wait on each other and a run takes several times longer; the checkpoints compared all come from
    processes started with this environment."""
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def _train(args):
    done = subprocess.run(_command(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, check=False,
                          timeout=PATIENCE)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _sessions_dir(output):
    return output / "Demo" / "RecLMIS"


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """The checkpoints of a run that was never interrupted, per worker count."""
    runs = {}
    for workers in (0, 2):
        output = tmp_path_factory.mktemp(f"reference{workers}")
        session = _train(["--set", *_settings(data_root, output, workers)])
        models = _sessions_dir(output) / session / "models"
        runs[workers] = {name: read_checkpoint(str(models / name)) for name in (BEST_NAME, LATEST_NAME)}
    return runs


def _start_and_wait_for_first_epoch(data_root, output, workers):
    process = subprocess.Popen(_command("--set", *_settings(data_root, output, workers)), cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + PATIENCE
    while time.time() < deadline:
        latest = list(_sessions_dir(output).glob(f"*/models/{LATEST_NAME}"))
        if latest:
            return process, latest[0].parent.parent
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.stderr.read()[-3000:]}")
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"no checkpoint within {PATIENCE} s")


def _assert_same_checkpoints(session_dir, expected):
    for name, reference_state in expected.items():
        state = read_checkpoint(str(session_dir / "models" / name))
        assert state["epoch"] == reference_state["epoch"], name
        assert state["state_dict"].keys() == reference_state["state_dict"].keys()
        for key, tensor in reference_state["state_dict"].items():
            assert torch.equal(state["state_dict"][key], tensor), f"{name}: {key}"
    latest = read_checkpoint(str(session_dir / "models" / LATEST_NAME))
    assert latest.get("partial_epoch") is None and "frozen_omitted" in latest


def _event_steps(session_dir, tag="train/total"):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(session_dir / "tensorboard_logs"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(data_root, reference, tmp_path):
    output = tmp_path / "killed"
    process, session_dir = _start_and_wait_for_first_epoch(data_root, output, workers=0)
    time.sleep(0.2)  # into the second epoch
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=PATIENCE)
    log = session_dir / f"{session_dir.name}.log"
    assert "Epoch 2/" not in log.read_text(), "the kill came after the second epoch: make the epoch longer"
    assert read_checkpoint(str(session_dir / "models" / LATEST_NAME))["epoch"] == 0

    _train(["--resume", session_dir.name, "--set", f"output_root={output}"])
    _assert_same_checkpoints(session_dir, reference[0])
    text = log.read_text()
    assert text.count("Epoch 1/") == 1 and text.count("Epoch 2/") == 1 and text.count("Epoch 3/") == 1
    assert "resumed from" in text
    assert _event_steps(session_dir) == [1, 2, 3]
    assert not list((session_dir / "models").glob(".tmp_*"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_saves_mid_epoch_and_resume_equals_an_uninterrupted_run(data_root, reference, tmp_path, signum):
    workers = 2
    output = tmp_path / "interrupted"
    process, session_dir = _start_and_wait_for_first_epoch(data_root, output, workers=workers)
    time.sleep(0.2)
    # Ctrl-C as a terminal sends it: to the trainer and its loader workers; SIGTERM as a scheduler sends it.
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=PATIENCE)
    assert process.returncode == 130, stderr[-3000:]
    assert "continue with --resume " + session_dir.name in stderr
    latest = read_checkpoint(str(session_dir / "models" / LATEST_NAME))
    partial = latest["partial_epoch"]
    assert partial is not None, "Ctrl-C came between epochs: make the epoch longer"
    assert partial["epoch"] == latest["epoch"] + 1 == 1 and partial["batches_done"] > 0
    assert f"interrupted in epoch 2 after {partial['batches_done']} batches" in stderr

    _train(["--resume", session_dir.name, "--set", f"output_root={output}"])
    _assert_same_checkpoints(session_dir, reference[workers])
    assert _event_steps(session_dir) == [1, 2, 3]


def _one_epoch_session(data_root, output):
    """Train one epoch in-process; the session folder, its latest checkpoint and that file's bytes."""
    assert train_model.main(["-c", "Config_Demo", "--set", *_settings(data_root, output), "epochs=1",
                             "--no_progress"]) == 0
    session_dir = next(_sessions_dir(output).iterdir())
    latest = session_dir / "models" / LATEST_NAME
    return session_dir, latest, latest.read_bytes()


def test_full_disk_at_save_keeps_the_previous_checkpoint(data_root, tmp_path, monkeypatch, capsys):
    output = tmp_path / "full"
    session_dir, latest, before = _one_epoch_session(data_root, output)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    assert train_model.main(["-c", "Config_Demo", "--resume", session_dir.name, "--set", f"output_root={output}",
                             "epochs=2", "--no_progress"]) == 1
    assert latest.read_bytes() == before
    assert f"could not write the checkpoint {latest}: No space left on device" in capsys.readouterr().err
    assert not list((session_dir / "models").glob(".tmp_*"))


def test_too_little_free_space_stops_before_training(data_root, tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 1024))
    output = tmp_path / "small"
    assert train_model.main(["-c", "Config_Demo", "--set", *_settings(data_root, output), "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "MiB free on the disk of" in err and "Epoch 1/" not in err
    assert not list(_sessions_dir(output).glob(f"*/models/{LATEST_NAME}"))


def test_unwritable_output_folder_is_an_error_before_training(data_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert train_model.main(["-c", "Config_Demo", "--set", *_settings(data_root, blocker / "runs"),
                             "--no_progress"]) == 2
    assert "cannot write the session under" in capsys.readouterr().err


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(data_root, tmp_path, monkeypatch, capsys):
    output = tmp_path / "nan"
    session_dir, latest, before = _one_epoch_session(data_root, output)
    original = RecLMISCriterion.forward

    def poisoned(self, outputs, labels):
        terms = original(self, outputs, labels)
        terms["img_rec"] = terms["img_rec"] * float("nan")
        terms["total"] = terms["total"] + terms["img_rec"]
        return terms

    monkeypatch.setattr(RecLMISCriterion, "forward", poisoned)
    assert train_model.main(["-c", "Config_Demo", "--resume", session_dir.name, "--set", f"output_root={output}",
                             "epochs=2", "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 2, batch 0 (images [" in err and "img_rec=nan" in err
    assert latest.read_bytes() == before


def test_a_save_killed_outright_leaves_no_temporary_behind_on_resume(tmp_path):
    from utils.training.checkpoint import remove_stale_temporaries, save_checkpoint

    (tmp_path / ".tmp_abc123.pt").write_bytes(b"half a checkpoint")
    (tmp_path / "keep.pt").write_bytes(b"x")
    assert remove_stale_temporaries(str(tmp_path)) == [".tmp_abc123.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pt"]
    save_checkpoint({"a": torch.zeros(1)}, str(tmp_path / "c.pt"))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o666 & ~mask  # not owner-only like mkstemp's files


def _files(session_dir):
    """Every file of the session: its bytes' digest and its modification time."""
    return {str(path.relative_to(session_dir)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in sorted(session_dir.rglob("*")) if path.is_file()}


def test_a_second_resume_of_a_session_in_training_is_refused_and_touches_nothing(data_root, tmp_path):
    output = tmp_path / "locked"
    epochs = EPOCHS + 2  # epochs left after the first checkpoint, for this test to stop the run in between
    process = subprocess.Popen(_command("--set", *_settings(data_root, output), f"epochs={epochs}"), cwd=ROOT,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + PATIENCE
        while not list(_sessions_dir(output).glob(f"*/models/{LATEST_NAME}")):
            assert process.poll() is None, f"training ended early: {process.stderr.read()[-3000:]}"
            assert time.time() < deadline, f"no checkpoint within {PATIENCE} s"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGSTOP)  # the holder stays alive, holding its lock, and writes nothing
        (session_dir,) = _sessions_dir(output).iterdir()
        log = session_dir / f"{session_dir.name}.log"
        assert f"Epoch {epochs}/" not in log.read_text(), "the run ended before it was stopped: make it longer"
        before = _files(session_dir)

        second = subprocess.run(_command("--resume", session_dir.name, "--set", f"output_root={output}"), cwd=ROOT,
                                env=_env(), capture_output=True, text=True, check=False, timeout=PATIENCE)
        assert second.returncode == 2, second.stderr[-3000:]
        assert second.stderr.splitlines() == [
            f"error: cannot resume: session {session_dir.name} is in use by another training (pid {process.pid} on "
            f"{socket.gethostname()} since {json.loads((session_dir / '.lock').read_text())['since']}); wait for it "
            "to end or stop it"]
        assert _files(session_dir) == before  # the log, the checkpoints, TensorBoard's events: as they were
    finally:
        os.killpg(process.pid, signal.SIGCONT)
    _, stderr = process.communicate(timeout=PATIENCE)
    assert process.returncode == 0, stderr[-3000:]
    text = log.read_text()  # one run wrote the log, once
    assert all(text.count(f"Epoch {epoch}/") == 1 for epoch in range(1, epochs + 1)) and "resumed from" not in text
    assert read_checkpoint(str(session_dir / "models" / LATEST_NAME))["epoch"] == epochs - 1

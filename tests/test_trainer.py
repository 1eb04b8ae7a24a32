"""The training layer on its own: the checkpoint owner, the epoch loop's early stopping and records, the interrupt
handler, and the training command's start errors; tiny models on generated data, on the CPU."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from tests.conftest import write_dataset
from utils.checkpoints import BEST_NAME, LATEST_NAME
from utils.misc import rng_state
from utils.sessions import EPOCHS_NAME, create_session_dir, read_epochs
from utils.training import trainer as trainer_module
from utils.training.checkpoint import TrainState
from utils.training.run import StartError, train
from utils.training.trainer import StopOnInterrupt, Trainer
from utils.weights_io import read_checkpoint

TINY = dict(clip_weights=None, img_size=32, base_channel=4, clip_width=32, clip_layers=1, clip_heads=1,
            text_embed_dim=32, rec_trans_num_layers1=1, batch_size=2, num_workers=0, tensorboard_images=0,
            demo_data=False, val_text_check_every=0)


@pytest.fixture
def session(tmp_path):
    config = write_dataset(tmp_path / "data", "qata", counts={"train": 4, "val": 2, "test": 2}, **TINY,
                           output_root=str(tmp_path / "runs"))
    return config, create_session_dir(config.output_root, config.task_name)


def _trainer(config, session_dir, **changes):
    torch.manual_seed(0)
    return Trainer(config.replace(**changes), session_dir, torch.device("cpu"), progress=False)


def test_best_holds_the_model_and_latest_adds_what_resuming_needs(session):
    config, session_dir = session
    trainer = _trainer(config, session_dir)
    keeper = trainer.checkpoints
    state = TrainState(best_dice=0.25, best_epoch=1)
    keeper.save_epoch(0, {"total": 1.5, "dice": 0.25}, state, improved=True, rngs=[{"x": 1}, {"x": 2}])
    best, latest = read_checkpoint(keeper.best_path), read_checkpoint(keeper.latest_path)
    assert {"optimizer", "lr_scheduler", "scaler", "rng", "partial_epoch"}.isdisjoint(best)
    assert best["val_dice"] == 0.25 and best["epoch"] == 0 and best["best_model"] is True
    assert latest["best_dice"] == 0.25 and latest["best_epoch"] == 1 and latest["rng_by_rank"] == [{"x": 1}, {"x": 2}]
    assert latest["partial_epoch"] is None and latest["best_model"] is False
    os.remove(keeper.best_path)
    keeper.save_epoch(1, {"total": 2.0, "dice": 0.1}, state, improved=False, rngs=[{"x": 3}])
    assert not os.path.exists(keeper.best_path) and read_checkpoint(keeper.latest_path)["epoch"] == 1


def test_resume_restores_the_weights_optimizer_progress_and_random_stream(session):
    config, session_dir = session
    first = _trainer(config, session_dir)
    with torch.no_grad():
        next(first.raw_model.parameters()).add_(1.0)
    first.optimizer.param_groups[0]["lr"] = 0.123
    torch.manual_seed(42)
    state = TrainState(start_epoch=0, best_dice=0.4, best_epoch=2, last_val={"total": 1.0, "dice": 0.4})
    first.checkpoints.save_partial(3, 5, {"terms": {}}, state, [rng_state()])
    expected = torch.rand(3)
    second = _trainer(config, session_dir)
    torch.manual_seed(0)
    second.resume()
    assert torch.equal(torch.rand(3), expected)  # the saved stream continues
    assert second.state.start_epoch == 3 and second.state.partial["batches_done"] == 5
    assert (second.state.best_dice, second.state.best_epoch) == (0.4, 2)
    assert second.optimizer.param_groups[0]["lr"] == 0.123
    for a, b in zip(first.raw_model.state_dict().values(), second.raw_model.state_dict().values()):
        assert torch.equal(a, b)


def test_resuming_with_more_processes_than_saved_warns(session, caplog):
    config, session_dir = session
    trainer = _trainer(config, session_dir)
    trainer.checkpoints.save_epoch(0, {"total": 1.0, "dice": 0.1}, TrainState(), False, [rng_state()])
    state = trainer.checkpoints.resume(world_size=2, rank=1)
    assert state.start_epoch == 1
    assert any("resuming with 2 process(es) where the run had 1" in r.getMessage() for r in caplog.records)


def test_the_loop_keeps_the_best_by_strictly_greater_dice_and_stops_early(session, monkeypatch):
    """Validation Dice 0.5, 0.5, 0.3, 0.2 with patience 2: the best stays epoch 1 (a tie is not better), and the
    run stops after epoch 4 (3 epochs without a better Dice), before epoch 5."""
    config, session_dir = session
    dices = iter([0.5, 0.5, 0.3, 0.2, 0.9])
    monkeypatch.setattr(trainer_module, "evaluate", lambda *a, **k: {"total": 1.0, "dice": next(dices), "iou": 0.1})
    trainer = _trainer(config, session_dir, epochs=6, early_stopping_patience=2)
    result = trainer.run()
    assert (result["best_epoch"], result["best_dice"]) == (1, 0.5)
    epochs = read_epochs(session_dir)
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert [e["val"]["dice"] for e in epochs] == [0.5, 0.5, 0.3, 0.2]
    assert read_checkpoint(os.path.join(session_dir, "models", BEST_NAME))["epoch"] == 0
    assert read_checkpoint(os.path.join(session_dir, "models", LATEST_NAME))["epoch"] == 3
    record = json.loads(open(os.path.join(session_dir, EPOCHS_NAME)).readline())
    assert set(record) == {"epoch", "train", "val", "lr", "seconds"} and "loss" in record["val"]


def test_a_failed_write_on_rank_zero_stops_with_its_error(session):
    config, session_dir = session
    trainer = _trainer(config, session_dir)

    def full_disk():
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        trainer.on_main(full_disk)


def test_a_first_signal_asks_to_stop_and_a_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopOnInterrupt() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's preemption: asks, raises nothing
        assert stop.requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_start_errors_are_raised_before_any_folder_is_written(tmp_path):
    with pytest.raises(StartError, match="lerning_rate"):
        train("Config_Demo", [f"output_root={tmp_path}", "lerning_rate=1"])
    with pytest.raises(StartError, match="cannot resume"):
        train("Config_Demo", [f"output_root={tmp_path}"], resume="session_nope")
    assert not any(tmp_path.iterdir())


def test_channels_last_trains_the_same_step_up_to_float_rounding(session):
    """The switch puts every convolution's weights in channels-last layout; a training step from the same weights,
    batch and random state gives the same losses and gradients up to float rounding, dropout included (it draws its
    mask in memory order, so the layout must not reach it)."""
    config, session_dir = session
    plain = _trainer(config, session_dir)
    fast = _trainer(config, session_dir, channels_last=True)
    fast.raw_model.load_state_dict(plain.raw_model.state_dict())
    convs = [m.weight for m in fast.raw_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    batch = next(iter(plain.loaders["val"]))
    results = []
    for trainer in (plain, fast):
        torch.manual_seed(5)
        np.random.seed(5)
        trainer.raw_model.train()
        outputs = trainer.raw_model(batch["image"], batch["text_token"], batch["text_mask"])
        terms = trainer.criterion(outputs, batch["label"])
        terms["total"].backward()
        grads = {n: p.grad.clone() for n, p in trainer.raw_model.named_parameters() if p.grad is not None}
        results.append(({k: float(v.detach()) for k, v in terms.items()}, grads))
    (losses_a, grads_a), (losses_b, grads_b) = results
    assert losses_a == pytest.approx(losses_b, rel=1e-4)
    assert grads_a.keys() == grads_b.keys()
    # Sums of many terms added in another order, compared by norm over all parameters (a convolution's bias ahead
    # of a BatchNorm has a true gradient of zero: its values are rounding noise either way).
    a = torch.cat([grads_a[name].flatten() for name in grads_a])
    b = torch.cat([grads_b[name].flatten() for name in grads_a])
    assert (a - b).norm() <= 1e-4 * a.norm()


def test_init_nudge_moves_the_initial_weights_by_one_float_step(session):
    config, session_dir = session
    plain = _trainer(config, session_dir).raw_model.state_dict()
    nudged = _trainer(config, session_dir, init_nudge_ulp=1).raw_model
    for name, param in nudged.named_parameters():
        start = plain[name]
        expected = torch.nextafter(start, torch.full_like(start, float("inf"))) if param.requires_grad else start
        assert torch.equal(param.detach(), expected), name

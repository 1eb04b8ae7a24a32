"""Distributed training on the CPU: 2 processes with gloo under torchrun against one process with the same global
batch, a resumed distributed run, and the pieces (sync BatchNorm, the differentiable gather)."""

import os
import subprocess
import sys

import pytest
import torch

from tests.tiny import PATIENCE, write_clip_file
from utils.checkpoints import BEST_NAME, LATEST_NAME
from utils.data.demo import make_demo_dataset
from utils.sessions import EPOCHS_NAME, SessionLock, read_epochs
from utils.weights_io import read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Deterministic inside the model (no dropout, no masking draws, so no near-tie top-k picks), BatchNorm over the
# global batch, contrastive negatives from both processes: the two runs compute the same thing.
SETTINGS = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1", "text_embed_dim=32",
            "rec_trans_num_layers1=1", "batch_size=4", "tensorboard_images=1", "demo_data=False", "num_workers=0",
            "rec_dropout=0.0", "interact_dropout=0.0", "mask_mode=topk", "text_mask_rate=0.0", "img_mask_rate=0.0",
            "sync_bn=True", "learning_rate=1e-4", "early_stopping_patience=100"]
TERMS = ("total", "seg", "ccl", "text_rec", "img_rec")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "Demo", n_train=16, n_val=6, n_test=2, img_size=48,
                             seed=3)


def _run(args, processes):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = (launcher if processes > 1 else [sys.executable]) + ["train_model.py", "-c", "Config_Demo",
                                                                   "--device", "cpu", "--no_progress", *args]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=PATIENCE)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _train(data_root, output, processes, epochs, *extra):
    settings = SETTINGS + [f"epochs={epochs}", f"output_root={output}", f"train_dataset={data_root}/Train_Folder",
                           f"val_dataset={data_root}/Val_Folder", f"test_dataset={data_root}/Test_Folder"]
    done = _run(["--set", *settings, *extra], processes)
    return output / "Demo" / "RecLMIS" / done.stdout.strip().splitlines()[-1]


def _curves(session_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(session_dir / "tensorboard_logs"))
    events.Reload()
    return {t: [e.value for e in events.Scalars(f"train/{t}")] for t in TERMS} | {
        "val/dice": [e.value for e in events.Scalars("val/dice")]}


def _weights(session_dir):
    return read_checkpoint(str(session_dir / "models" / LATEST_NAME))["state_dict"]


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    single = _train(data_root, root / "single", 1, 2)
    pair = _train(data_root, root / "pair", 2, 2)
    return {"root": root, "single": single, "pair": pair}


def test_two_processes_match_one_with_the_same_global_batch(runs):
    single, pair = _curves(runs["single"]), _curves(runs["pair"])
    for name in single:
        assert len(pair[name]) == len(single[name]) == 2, name
        assert pair[name] == pytest.approx(single[name], rel=1e-3, abs=1e-5), name
    a, b = _weights(runs["single"]), _weights(runs["pair"])
    assert a.keys() == b.keys()
    floats = [k for k in a if a[k].is_floating_point()]
    total = sum(((a[k].float() - b[k].float()) ** 2).sum() for k in floats).sqrt()
    assert total / sum((a[k].float() ** 2).sum() for k in floats).sqrt() < 5e-3
    # Conv biases in front of a BatchNorm get no true gradient, only float noise that Adam turns into +-lr
    # steps, and the running means carry them: those may differ more; every other tensor follows closely.
    for key in floats:
        if key.endswith(("conv.bias", "running_mean")):
            continue
        relative = (a[key].float() - b[key].float()).norm() / a[key].float().norm().clamp_min(1e-8)
        assert relative < 0.05, key


def test_only_rank_zero_writes(runs):
    sessions = list((runs["root"] / "pair" / "Demo" / "RecLMIS").iterdir())
    assert len(sessions) == 1
    session = sessions[0]
    assert sorted(p.name for p in (session / "models").iterdir()) == sorted([BEST_NAME, LATEST_NAME])
    assert len(list((session / "tensorboard_logs").iterdir())) == 1
    assert sorted(p.name for p in session.iterdir()) == sorted(  # .lock: rank 0's lock on the session
        [".lock", "config.json", EPOCHS_NAME, f"{session.name}.log", "models", "tensorboard_logs",
         "training_curves.png"])
    log = (session / f"{session.name}.log").read_text()
    assert log.count("Epoch 2/2") == 1 and "2 processes (gloo)" in log
    assert len((session / EPOCHS_NAME).read_text().splitlines()) == 2  # one record per epoch, rank 0's
    assert [e["epoch"] for e in read_epochs(str(session))] == [1, 2]


def test_a_distributed_resume_of_a_session_in_use_stops_every_process(runs):
    """Rank 0 takes the session's lock; when another training holds it (this test), every process stops (each with
    status 2, so torchrun fails), rank 0 with the reason, the others pointing to it, and none writes to the session."""
    session = runs["pair"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    with SessionLock(str(session)):
        before = {path: path.read_bytes() for path in session.rglob("*") if path.is_file()}
        done = subprocess.run(launcher + ["train_model.py", "-c", "Config_Demo", "--device", "cpu", "--no_progress",
                                          "--resume", str(session), "--set", "epochs=3"],
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"),
                              capture_output=True, text=True, check=False, timeout=PATIENCE)
        after = {path: path.read_bytes() for path in session.rglob("*") if path.is_file()}
    assert after == before
    assert done.returncode != 0
    assert (f"error: cannot resume: session {session.name} is in use by another training (pid {os.getpid()} on "
            in done.stderr), done.stderr[-4000:]
    assert "error: another process could not open the session (see its message)" in done.stderr


def test_a_resumed_distributed_run_continues_exactly(data_root, runs):
    output = runs["root"] / "resumed"
    session = _train(data_root, output, 2, 1)
    _run(["--resume", session.name, "--set", f"output_root={output}", "epochs=2"], 2)
    resumed, straight = _weights(session), _weights(runs["pair"])
    for key, tensor in straight.items():
        assert torch.equal(resumed[key], tensor), key
    assert _curves(session)["total"] == _curves(runs["pair"])["total"]


def test_a_resumed_distributed_run_with_random_draws_continues_exactly(data_root, tmp_path):
    """With dropout and random masking on, exact resumption needs every process's own random state back. The text
    tower comes from a CLIP file, so the latest checkpoint leaves it out and every process rebuilds it."""
    noisy = ["interact_dropout=0.1", "rec_dropout=0.1", "mask_mode=dist", "text_mask_rate=0.3", "img_mask_rate=0.5",
             "sync_bn=False", f"clip_weights={write_clip_file(tmp_path / 'clip.pt')}"]
    straight = _train(data_root, tmp_path / "straight", 2, 2, *noisy)
    session = _train(data_root, tmp_path / "resumed", 2, 1, *noisy)
    _run(["--resume", session.name, "--set", f"output_root={tmp_path / 'resumed'}", "epochs=2"], 2)
    resumed, reference = _weights(session), _weights(straight)
    for key, tensor in reference.items():
        assert torch.equal(resumed[key], tensor), key
    latest = read_checkpoint(str(session / "models" / LATEST_NAME))
    assert "frozen_omitted" in latest and "clip.ln_final.weight" not in latest["state_dict"]
    torch_states = [state["torch"] for state in latest["rng_by_rank"]]
    assert len(torch_states) == 2 and not torch.equal(*torch_states)  # each process draws its own stream


def test_sync_batchnorm_and_gather_on_one_process_are_plain():
    from utils.training.distributed import DistributedBatchNorm2d, convert_sync_batchnorm, gather_with_grad

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2), torch.nn.BatchNorm1d(2))
    convert_sync_batchnorm(model, torch.device("cpu"))
    assert type(model[1]) is DistributedBatchNorm2d and list(model.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
        "2.weight", "2.bias", "2.running_mean", "2.running_var", "2.num_batches_tracked"]
    x = torch.randn(3, 2, 4, 4)
    reference = torch.nn.BatchNorm2d(2).train()
    assert torch.allclose(model[1](x), reference(x), atol=1e-6)  # no process group: plain BatchNorm
    tensor = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(tensor) is tensor


def test_global_batch_must_split_evenly(data_root, tmp_path):
    settings = SETTINGS + ["batch_size=3", f"output_root={tmp_path}", f"train_dataset={data_root}/Train_Folder",
                           f"val_dataset={data_root}/Val_Folder", f"test_dataset={data_root}/Test_Folder"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(launcher + ["train_model.py", "-c", "Config_Demo", "--device", "cpu", "--no_progress",
                                      "--set", *settings], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, check=False, timeout=PATIENCE)
    assert done.returncode != 0
    assert "batch_size 3 (the global batch) must be a multiple of the 2 processes" in done.stderr


def _evaluate_shard(rank, world, init_file, data_root, queue):
    import torch.distributed as dist

    from Load_Dataset import ReportsSwapped, build_dataloader
    from nets import build_model
    from utils.data.reports import report_cycle
    from utils.training.distributed import Distributed
    from utils.training.engine import evaluate, evaluate_dice
    from utils.training.losses import RecLMISCriterion

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    config = _eval_config(data_root)
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.outc.bias.fill_(0.02)  # some positive pixels, so Dice and IoU differ from image to image
    loader = build_dataloader(config, "val", num_replicas=world, rank=rank)
    context = Distributed(rank=rank, world_size=world, backend="gloo")
    result = evaluate(model, RecLMISCriterion(config), loader, torch.device("cpu"), progress=False,
                      reduce=context.all_reduce_sums)
    swapped = ReportsSwapped(loader.dataset, report_cycle(len(loader.dataset), config.seed))  # as training does
    shuffled = evaluate_dice(model, build_dataloader(config, "val", dataset=swapped, num_replicas=world, rank=rank),
                             torch.device("cpu"), progress=False, reduce=context.all_reduce_sums)
    result["dice_shuffled"] = shuffled["dice"]
    queue.put((rank, len(loader.sampler), result))
    dist.destroy_process_group()


def _eval_config(data_root):
    from tests.tiny import tiny_config

    return tiny_config(val_dataset=f"{data_root}/Val_Folder", batch_size=2, num_workers=0, mask_mode="topk")


def test_sharded_validation_equals_one_process(data_root, tmp_path):
    """5 validation images over 2 processes (3 + 2, none repeated): the reduced scores, the shuffled-report Dice
    included, are the single-process ones."""
    import torch.multiprocessing as mp

    from Load_Dataset import ReportsSwapped, build_dataloader
    from nets import build_model
    from utils.data.reports import report_cycle
    from utils.training.engine import evaluate, evaluate_dice
    from utils.training.losses import RecLMISCriterion

    root = make_demo_dataset(tmp_path / "Demo", n_train=2, n_val=5, n_test=1, img_size=48, seed=4)
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_evaluate_shard, args=(r, 2, str(tmp_path / "init"), str(root), queue))
               for r in range(2)]
    for worker in workers:
        worker.start()
    results = dict((rank, (size, result)) for rank, size, result in (queue.get(timeout=PATIENCE) for _ in workers))
    for worker in workers:
        worker.join(timeout=PATIENCE)
    assert [results[r][0] for r in (0, 1)] == [3, 2]

    config = _eval_config(root)
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.outc.bias.fill_(0.02)
    single = evaluate(model, RecLMISCriterion(config), build_dataloader(config, "val"), torch.device("cpu"),
                      progress=False)
    val = build_dataloader(config, "val").dataset
    single["dice_shuffled"] = evaluate_dice(
        model, build_dataloader(config, "val", dataset=ReportsSwapped(val, report_cycle(len(val), config.seed))),
        torch.device("cpu"), progress=False)["dice"]
    for rank in (0, 1):
        shard = results[rank][1]
        for key in ("dice", "iou", "dice_pooled", "iou_pooled", "seg", "text_rec", "img_rec", "dice_shuffled"):
            assert shard[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key
    assert 0 < single["dice"] < 1


def test_train_sh_starts_one_process_per_gpu_id():
    """``sh train.sh 0,1 ...`` goes through torchrun with 2 processes (each prints the help here and exits)."""
    def helps(devices):
        done = subprocess.run(["sh", "train.sh", devices, "Config_Demo", "--help"], cwd=ROOT, capture_output=True,
                              text=True, check=False, timeout=PATIENCE, env=dict(os.environ, PYTHONPATH=ROOT))
        assert done.returncode == 0, done.stderr[-2000:]
        return (done.stdout + done.stderr).count("usage: train_model.py")

    assert helps("0,1") == 2 and helps("0") == 1 and helps("cpu") == 1


def test_meter_sums_have_the_same_keys_on_every_process():
    """A process with an empty shard (or one resuming without the saved sums) still sends every key, in order."""
    from utils.metrics import SegmentationMeter
    from utils.training.engine import _meter_state, _TermMeter

    sent = []

    def record(flat):
        sent.append(list(flat))
        return flat

    full = _TermMeter()
    full.update({"total": torch.tensor(2.0), "ccl": torch.tensor(1.0)}, 2)
    _meter_state(full, SegmentationMeter(strict=False, dice="validation"), record)
    _meter_state(_TermMeter(), SegmentationMeter(strict=False, dice="validation"), record)
    assert sent[0] == sent[1]


def _batchnorm_shard(rank, world, init_file, queue):
    import torch.distributed as dist

    from utils.training.distributed import DistributedBatchNorm2d

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    x = (10 + 0.05 * torch.randn(4, 3, 5, 5)).requires_grad_(True)
    norm = DistributedBatchNorm2d(3).train()
    out = norm(x[2 * rank:2 * rank + 2].to(torch.bfloat16))
    (out.float() * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()
    # As numpy arrays, pickled by value: a tensor would travel as a shared-memory handle that the reader opens
    # after this process may have exited (FileNotFoundError in the resource sharer, seen under load).
    queue.put((rank, out.float().detach().numpy(), norm.running_var.numpy().copy(),
               x.grad[2 * rank:2 * rank + 2].numpy().copy()))
    dist.destroy_process_group()


def test_distributed_batchnorm_matches_one_batchnorm_even_in_bf16(tmp_path):
    """Mean 10, std 0.05, bf16 inputs over 2 processes: the statistics are those of one BatchNorm over the batch."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_batchnorm_shard, args=(r, 2, str(tmp_path / "init"), queue)) for r in (0, 1)]
    for worker in workers:
        worker.start()
    received = (queue.get(timeout=PATIENCE) for _ in workers)
    parts = {rank: [torch.from_numpy(a) for a in rest] for rank, *rest in received}
    for worker in workers:
        worker.join(timeout=PATIENCE)
    torch.manual_seed(0)
    x = (10 + 0.05 * torch.randn(4, 3, 5, 5)).requires_grad_(True)
    reference = torch.nn.BatchNorm2d(3).train()
    out = reference(x.to(torch.bfloat16).float())
    (out * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()
    merged = torch.cat([parts[0][0], parts[1][0]])
    assert merged.std() > 0.5  # normalised, not collapsed by a zero variance
    assert torch.allclose(merged, out.detach(), atol=0.05)
    assert torch.allclose(parts[0][1], reference.running_var, rtol=0.05)
    assert torch.allclose(torch.cat([parts[0][2], parts[1][2]]), x.grad, atol=0.05)


def test_a_peer_with_modules_its_forward_never_calls_trains_on_two_processes(data_root, tmp_path):
    """LViT keeps modules of its authors' code that no forward uses (their checkpoints hold them): DDP must not wait
    for their gradients."""
    settings = SETTINGS + ["model=lvit", "base_channel=8", "epochs=1", f"output_root={tmp_path}",
                           f"train_dataset={data_root}/Train_Folder", f"val_dataset={data_root}/Val_Folder",
                           f"test_dataset={data_root}/Test_Folder"]
    done = _run(["--set", *settings], 2)
    session = tmp_path / "Demo" / "LViT" / done.stdout.strip().splitlines()[-1]
    assert read_checkpoint(str(session / "models" / "best_model-LViT.pth.tar"))["model"] == "LViT"
    assert [e["epoch"] for e in read_epochs(str(session))] == [1]

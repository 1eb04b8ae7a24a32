"""python -m tools.benchmark: every figure it reports, in each of its modes."""

import copy
import json
import os
import subprocess
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nets import build_model
from nets.text_encoder import CLIPTextEncoder
from tests.tiny import NEEDS_CXX, model_with_batchnorm_statistics, tiny_config
from tests.tiny import batch as tiny_batch
from tools import bench_epoch, bench_memory, benchmark
from tools.bench_convs import convolution_layers, format_convolution_layers, reference_convolution_rate
from utils.data.demo import make_demo_dataset
from utils.training.checkpoint import checkpoint_payload, compact_state_dict, save_checkpoint
from utils.training.schedulers import build_optimizer

TINY_SETTINGS = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1",
                 "text_embed_dim=32", "rec_trans_num_layers1=1", "demo_data=False"]


def test_benchmark_command_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["-c", "Config_Demo", "--set", *TINY_SETTINGS, "--device", "cpu", "--batch_sizes", "1",
                           "2", "--train_batch", "2", "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["environment"]["torch"] == torch.__version__ and result["environment"]["threads"] >= 1
    assert result["model"]["params_in_memory"] > result["model"]["params_trainable"] > 0
    assert result["model"]["flops_per_image"] > 0
    assert [(r["precision"], r["batch"]) for r in result["inference"]] == [("fp32", 1), ("fp32", 2), ("bf16", 1),
                                                                           ("bf16", 2)]
    assert all(r["s_per_image"] > 0 for r in result["inference"])
    assert [r["amp"] for r in result["training"]] == [False, True]
    checkpoints = result["checkpoints"]
    assert checkpoints["latest_mib"] > checkpoints["latest_compact_mib"] > checkpoints["best_mib"] > 0
    assert result["memory"]["peak_rss_mib"] > 0
    assert "s/image" in printed and "peak memory" in printed


@NEEDS_CXX
def test_benchmark_times_the_compiled_and_text_cached_predictors(capsys):
    assert benchmark.main(["-c", "Config_Demo", "--set", *TINY_SETTINGS, "--device", "cpu", "--batch_sizes", "1",
                           "--precision", "fp32", "--compile", "--text_cache", "--train_batch", "0", "--no_memory",
                           "--repeats", "1", "--warmup", "0"]) == 0
    printed = capsys.readouterr().out
    assert "(torch.compile; compiled in" in printed and "(text features cached)" in printed
    assert printed.count("inference fp32 batch   1") == 3


def test_benchmark_checkpoint_sizes_follow_training(tmp_path):
    """With a CLIP file in the config, the benchmark's latest files leave the frozen tower out, as training does."""
    config = tiny_config()
    model = build_model(config)
    optimizer = build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    state = (model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=False))
    tower = sum(t.numel() * t.element_size() for n, t in compact_state_dict(model).items() if n.startswith("clip."))
    sizes = {}
    for clip in (None, "ViT-B-32.pt"):
        (tmp_path / str(clip)).mkdir()
        sizes[clip] = bench_memory.checkpoint_sizes(state, str(tmp_path / str(clip)), clip)
    assert sizes[None]["best_mib"] == pytest.approx(sizes["ViT-B-32.pt"]["best_mib"], abs=0.01)
    for name in ("latest_mib", "latest_compact_mib"):
        saved = (sizes[None][name] - sizes["ViT-B-32.pt"][name]) * 2**20
        assert saved == pytest.approx(tower, rel=0.05), name


def test_benchmark_times_the_training_loader(tmp_path, capsys):
    root = make_demo_dataset(tmp_path / "Demo", n_train=12, n_val=2, n_test=2, img_size=48, seed=2)
    data = [f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder", f"test_dataset={root}/Test_Folder",
            "img_size=32", "batch_size=2"]
    out = tmp_path / "loader.json"
    assert benchmark.main(["-c", "Config_Demo", "--set", *data, "--device", "cpu", "--loader", "--loader_workers",
                           "0", "1", "--loader_batches", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["loader"]
    assert [(r["workers"], r["images"], r["pin_memory"]) for r in rows] == [(0, 4, False), (1, 4, False)]
    assert all(r["images_per_s"] > 0 for r in rows) and "1 worker(s):" in capsys.readouterr().out
    assert benchmark.main(["-c", "Config_Demo", "--set", *data, "--device", "cpu", "--loader", "--loader_workers", "0",
                           "--loader_batches", "5"]) == 2
    assert "has 6 batches of 2; --loader_batches 5 with up to 0 worker(s) needs 7" in capsys.readouterr().err


def test_benchmark_agreement_on_a_test_split(tmp_path, capsys):
    root = make_demo_dataset(tmp_path / "Demo", n_train=2, n_val=2, n_test=3, img_size=48, seed=2)
    config = tiny_config()
    path = str(tmp_path / "model.pth.tar")
    save_checkpoint(checkpoint_payload(model_with_batchnorm_statistics(config), config, 0, True,
                                       {"total": 0.0, "dice": 0.0}), path)
    out = tmp_path / "agreement.json"
    assert benchmark.main(["-c", "Config_Demo", "--set", f"test_dataset={root}/Test_Folder", "--device", "cpu",
                           "--precision", "bf16", "--agreement", path, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 3 and result["pixels"] == 3 * 32 * 32
    assert 0.5 < result["pixel_agreement"]["bf16"] <= 1.0
    assert set(result["dice"]) == {"fp32", "bf16"}
    assert benchmark.main(["-c", "Config_Demo", "--precision", "fp32", "--agreement", path]) == 2
    assert "give --precision bf16" in capsys.readouterr().err


def test_the_epoch_breakdown_adds_up_and_finds_a_slow_part(tmp_path, capsys, monkeypatch):
    """One epoch on a generated set: the training loop's parts add up to its wall time, and a text tower made
    slower by a known 0.05 s per call shows at least that much under "text tower", not elsewhere."""
    data = make_demo_dataset(tmp_path / "Demo", n_train=6, n_val=2, n_test=2, img_size=64, seed=2)
    settings = [*TINY_SETTINGS, "batch_size=2", "num_workers=0", f"train_dataset={data}/Train_Folder",
                f"val_dataset={data}/Val_Folder", f"test_dataset={data}/Test_Folder"]
    forward = CLIPTextEncoder.forward
    calls = []

    def slow(self, tokens, mask):
        calls.append(tokens.shape[0])
        time.sleep(0.05)
        return forward(self, tokens, mask)

    monkeypatch.setattr(CLIPTextEncoder, "forward", slow)
    out = tmp_path / "epoch.json"
    assert benchmark.main(["-c", "Config_Demo", "--set", *settings, "--device", "cpu", "--epoch", "--json",
                           str(out)]) == 0
    result = json.loads(out.read_text())["epoch"]
    parts, printed = result["parts"], capsys.readouterr().out
    assert list(parts) == list(bench_epoch.PARTS) and all(part in printed for part in bench_epoch.PARTS)
    assert result["images"] == 6 and result["batches"] == 3
    loop = sum(parts[p] for p in ("data", "text tower", "reconstruction", "optimizer", "image path"))
    assert loop == pytest.approx(result["train_s"], rel=1e-6)
    assert parts["text tower"] >= 3 * 0.05  # one call per training batch, each slowed by 0.05 s
    assert parts["image path"] < result["train_s"] - 3 * 0.05
    assert parts["validation"] > 0.05 and parts["validation, shuffled reports"] > 0.05 and parts["data"] > 0


def test_the_gpu_epoch_script_makes_a_subset_and_times_each_row(tmp_path):
    """tools/gpu_epoch.sh, run on the CPU at a tiny size (DEVICE and SETTINGS): the subset keeps N training pairs
    and fewer of the others, with the tables, and every row's breakdown is written."""
    data = make_demo_dataset(tmp_path / "Demo", n_train=10, n_val=4, n_test=2, img_size=64, seed=4)
    subset, out = tmp_path / "subset", tmp_path / "out"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(["sh", "tools/gpu_epoch.sh", "--subset", str(data), str(subset), "8"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for split, count in (("Train_Folder", 8), ("Val_Folder", 3), ("Test_Folder", 2)):  # N, 3N/8, up to 16
        assert len(list((subset / split / "img").iterdir())) == len(list((subset / split / "labelcol").iterdir()))
        assert len(list((subset / split / "img").iterdir())) == count
    assert (subset / "Train_Folder" / "Train_Val_text.xlsx").is_file()
    again = subprocess.run(["sh", "tools/gpu_epoch.sh", "--subset", str(data), str(subset)], cwd=root,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr
    env = dict(os.environ, DEVICE="cpu", CONFIG="Config_Demo",
               SETTINGS=" ".join([*TINY_SETTINGS, "batch_size=2", "num_workers=0"]))
    done = subprocess.run(["sh", "tools/gpu_epoch.sh", str(subset), str(out)], cwd=root, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = ("fp32", "amp", "amp_channels_last", "amp_channels_last_workers4")
    assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{row}.json" for row in rows)
    assert json.loads((out / "fp32.json").read_text())["epoch"]["images"] == 8
    assert json.loads((out / "fp32.json").read_text())["epoch"]["operators"]["convolution_gflop_per_step"] > 0
    assert "operators" not in json.loads((out / "amp.json").read_text())["epoch"]  # the fp32 row profiles


def test_the_epoch_breakdown_of_a_network_without_a_text_tower(tmp_path):
    data = make_demo_dataset(tmp_path / "Demo", n_train=4, n_val=2, n_test=2, img_size=48, seed=3)
    settings = [*TINY_SETTINGS, "batch_size=2", "num_workers=0", "model=unet", f"train_dataset={data}/Train_Folder",
                f"val_dataset={data}/Val_Folder", f"test_dataset={data}/Test_Folder"]
    out = tmp_path / "epoch.json"
    assert benchmark.main(["-c", "Config_Demo", "--set", *settings, "--device", "cpu", "--epoch", "--json",
                           str(out)]) == 0
    result = json.loads(out.read_text())["epoch"]
    assert result["parts"]["text tower"] == 0 and result["parts"]["image path"] > 0
    assert "operators" not in result  # only with --ops


def test_the_epoch_breakdown_lists_the_operators_of_a_step_with_the_convolutions_share(tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "Demo", n_train=4, n_val=2, n_test=2, img_size=48, seed=3)
    settings = [*TINY_SETTINGS, "batch_size=2", "num_workers=0", f"train_dataset={data}/Train_Folder",
                f"val_dataset={data}/Val_Folder", f"test_dataset={data}/Test_Folder"]
    out = tmp_path / "epoch.json"
    assert benchmark.main(["-c", "Config_Demo", "--set", *settings, "--device", "cpu", "--epoch", "--ops", "2",
                           "--json", str(out)]) == 0
    operators = json.loads(out.read_text())["epoch"]["operators"]
    times = [ms for _, ms in operators["top"]]
    assert operators["steps"] == 2 and times == sorted(times, reverse=True) and len(times) == 12
    assert 0 < operators["convolution_ms_per_step"] < operators["ms_per_step"]
    names = [name for name, _ in operators["top"]]
    assert "aten::convolution_backward" in names and sum(times) <= operators["ms_per_step"] + 1e-6
    # FLOPs of one step: the convolutions' part, forward and backward, of the whole step's; a rate to set them against.
    assert 0 < operators["convolution_gflop_per_step"] < operators["gflop_per_step"]
    assert operators["reference_convolution_gflops"] > 0
    printed = capsys.readouterr().out
    assert "of which convolutions" in printed and "aten::convolution_backward" in printed
    assert "GFLOP per step" in printed and "a plain 3x3 convolution" in printed


def test_the_convolution_flops_of_a_step_are_those_of_its_convolutions_forward_and_backward():
    """A network of one 3x3 convolution (no gradient for its input): FlopCounterMode's count is 2 per multiply-add
    forward and again for the weight gradient; the reference rate is a positive GFLOP/s."""
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    with FlopCounterMode(display=False) as counter:
        conv(x).sum().backward()
    macs = 2 * 4 * 8 * 8 * 3 * 9
    counted = sum(n for op, n in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
    assert counted == 2 * macs * 2
    assert reference_convolution_rate(torch.device("cpu"), amp=False, repeats=2) > 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_each_convolution_layer_is_timed_alone_with_the_flops_it_computes(channels_last):
    config = tiny_config()
    torch.manual_seed(0)
    model = build_model(config)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images, tokens, mask, labels = tiny_batch(config)
    data = {"image": images, "label": labels, "text_token": tokens, "text_mask": mask}
    state, stream = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    rows = convolution_layers(model, data, torch.device("cpu"), amp=False, repeats=1)
    # Every convolution the forward runs, once (conv_sig is built but never run), slowest first.
    ran = {name for name, module in model.named_modules()
           if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)) and "conv_sig" not in name}
    assert sorted(row["name"] for row in rows) == sorted(ran)
    assert [row["ms"] for row in rows] == sorted((row["ms"] for row in rows), reverse=True)
    assert all(row["ms"] > 0 and row["gflops"] > 0 for row in rows)
    by_name = {row["name"]: row for row in rows}
    b, c, size = images.shape[0], config.base_channel, config.img_size
    first = by_name["inc.conv"]  # the image needs no gradient: forward and weight gradient only
    assert first["input"] == [b, 3, size, size] and not first["input_grad"]
    assert first["gflop"] == pytest.approx(2 * 2 * (b * c * size * size) * 3 * 9 / 1e9)
    deeper = by_name["down1.nConvs.0.conv"]  # and the input gradient
    assert deeper["input_grad"] and deeper["channels_last"] == channels_last
    assert deeper["gflop"] == pytest.approx(3 * 2 * (b * 2 * c * (size // 2) ** 2) * c * 9 / 1e9)
    # The model and the random stream are as they were.
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), stream)
    assert "down1.nConvs.0.conv" in "\n".join(format_convolution_layers(rows, top=len(rows)))


def test_benchmark_of_a_network_without_a_text_tower(tmp_path):
    out = tmp_path / "bench.json"
    assert benchmark.main(["-c", "Config_Demo", "--set", *TINY_SETTINGS, "model=unet", "--device", "cpu",
                           "--batch_sizes", "1", "--train_batch", "2", "--repeats", "1", "--warmup", "0", "--json",
                           str(out)]) == 0
    model = json.loads(out.read_text())["model"]
    assert model["params_text_tower"] == 0 and model["params_trainable"] > 0 and model["flops_per_image"] > 0

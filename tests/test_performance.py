"""The fast paths keep what the model computes: folded BatchNorm, the Predictor, compact checkpoints, mmap loading,
mixed precision that still learns, and the benchmark command itself."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from nets import build_model
from nets.unet import ConvBatchNorm
from tests.tiny import NEEDS_CXX, REPORTS, batch, tiny_config, write_clip_file
from tools import benchmark
from utils import memory
from utils.data.demo import make_demo_dataset
from utils.inference import predictor as inference
from utils.inference.predictor import Predictor, autocast_for, fold_batchnorm
from utils.memory import tune_cpu_allocator
from utils.training.checkpoint import (
    build_model_from_checkpoint,
    checkpoint_payload,
    compact_optimizer_state,
    compact_state_dict,
    estimated_checkpoint_bytes,
    frozen_sha256,
    save_checkpoint,
)
from utils.training.engine import train_step
from utils.training.losses import RecLMISCriterion
from utils.training.schedulers import build_optimizer

inference_pad = inference._pad_batch
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SETTINGS = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1",
                 "clip_embed_dim=32", "rec_trans_num_layers1=1", "demo_data=False"]


def _model_with_batchnorm_statistics(config, seed=0):
    """A tiny model whose BatchNorms hold non-trivial running statistics and affine (as after training)."""
    torch.manual_seed(seed)
    model = build_model(config)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


def test_fold_batchnorm_known_answer():
    block = ConvBatchNorm(1, 1).eval()
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.weight[0, 0, 1, 1] = 2.0  # the conv doubles each pixel
        block.conv.bias.fill_(1.0)
        block.norm.running_mean.fill_(3.0)
        block.norm.running_var.fill_(4.0 - block.norm.eps)  # sqrt(var + eps) = 2
        block.norm.weight.fill_(0.5)
        block.norm.bias.fill_(0.25)
    x = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]]]])
    # relu(((2x + 1) - 3) / 2 * 0.5 + 0.25) = relu(0.5 x - 0.25)
    expected = torch.relu(0.5 * x - 0.25)
    assert fold_batchnorm(block) == 1
    assert isinstance(block.norm, torch.nn.Identity)
    assert torch.allclose(block(x), expected)
    assert torch.allclose(block.conv.weight[0, 0, 1, 1], torch.tensor(0.5))


def test_fold_batchnorm_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(ConvBatchNorm(1, 1).train())


def test_predictor_fp32_gives_the_masks_of_the_eval_forward():
    config = tiny_config()
    model = _model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config)
    with torch.no_grad():
        reference = model(images, tokens, mask, return_weights=True)
    for channels_last in (True, False):
        predictor = Predictor(copy.deepcopy(model), torch.device("cpu"), channels_last=channels_last)
        out = predictor.outputs(images, tokens, mask, return_weights=True)
        assert torch.allclose(out["logits"], reference["logits"], atol=1e-5, rtol=1e-5)
        assert torch.equal(out["logits"] > 0, reference["logits"] > 0)
        assert torch.allclose(out["word_weights"], reference["word_weights"], atol=1e-6)
        assert "text_rec" not in out  # the auxiliary branch does not run
        assert torch.equal(predictor(images, tokens, mask), out["logits"])


def test_predictor_bf16_runs_on_cpu_and_returns_fp32():
    config = tiny_config()
    model = _model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config)
    with torch.no_grad():
        reference = model(images, tokens, mask)["logits"]
    logits = Predictor(copy.deepcopy(model), torch.device("cpu"), "bf16")(images, tokens, mask)
    assert logits.dtype == torch.float32 and logits.shape == reference.shape
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max() + 1e-3


@pytest.mark.parametrize("timings, chosen", [({"fp32": 0.2, "bf16": 0.1}, "bf16"),
                                             ({"fp32": 0.1, "bf16": 0.3}, "fp32")])
def test_auto_precision_keeps_the_faster_one_on_this_machine(timings, chosen, monkeypatch, caplog):
    config = tiny_config()
    model = _model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config)
    predictor = Predictor(copy.deepcopy(model), torch.device("cpu"), "auto")
    monkeypatch.setattr(predictor, "time_precision", lambda precision, *args: timings[precision])
    with caplog.at_level("INFO"):
        logits = predictor(images, tokens, mask)
    assert predictor.precision == chosen and f"using {chosen}" in caplog.text
    assert "fp32 " in caplog.text and "bf16 " in caplog.text
    expected = Predictor(copy.deepcopy(model), torch.device("cpu"), chosen)(images, tokens, mask)
    assert torch.equal(logits, expected)


def test_auto_precision_times_for_real_and_refuses_compile():
    config = tiny_config()
    model = _model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config)
    predictor = Predictor(copy.deepcopy(model), torch.device("cpu"), "auto")
    assert predictor.candidate_precisions() == ["fp32", "bf16"]
    predictor(images, tokens, mask)
    assert predictor.precision in ("fp32", "bf16")
    with pytest.raises(ValueError, match="auto"):
        Predictor(copy.deepcopy(model), torch.device("cpu"), "auto", compile=True)


@NEEDS_CXX
def test_compiled_predictor_gives_the_eager_masks_and_pads_a_short_batch(monkeypatch):
    config = tiny_config()
    model = _model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config, reports=[REPORTS[0], REPORTS[1], REPORTS[0]])
    eager = Predictor(copy.deepcopy(model), torch.device("cpu"))(images, tokens, mask)
    compiled = Predictor(copy.deepcopy(model), torch.device("cpu"), compile=True, cache_text=8)
    logits = compiled(images, tokens, mask)
    assert torch.allclose(logits, eager, atol=1e-5, rtol=1e-5) and torch.equal(logits > 0, eager > 0)
    padded = []
    monkeypatch.setattr(inference, "_pad_batch", lambda t, size: padded.append(size) or inference_pad(t, size))
    short = compiled(images[1:], tokens[1:], mask[1:])  # the last, smaller batch of a data set
    assert padded == [3, 3, 3, 3] and short.shape[0] == 2  # images, tokens, mask and the cached text features
    assert torch.allclose(short, eager[1:], atol=1e-5, rtol=1e-5)
    # The cache saw the 2 real rows only (both known), not the padding.
    assert (compiled.text_cache.misses, compiled.text_cache.hits) == (2, 3)
    single = compiled(images[:1], tokens[:1], mask[:1])  # 3 is more than twice 1: compiled anew, not padded
    assert len(padded) == 4 and compiled._compiled_sizes == [3, 1]
    assert torch.allclose(single, eager[:1], atol=1e-5, rtol=1e-5)


def test_compiled_predictor_pads_only_up_to_twice_the_batch():
    predictor = Predictor(build_model(tiny_config()), torch.device("cpu"), compile=True)
    assert [predictor._compiled_size(b) for b in (3, 2, 1, 2, 7, 4)] == [3, 3, 1, 3, 7, 7]
    assert predictor._compiled_sizes == [3, 1, 7]


@pytest.mark.parametrize("options", [{"cache_text": 8}, pytest.param({"compile": True}, marks=NEEDS_CXX)],
                         ids=["text_cache", "compile"])
def test_fast_paths_check_their_inputs_first(options):
    config = tiny_config()
    predictor = Predictor(build_model(config), torch.device("cpu"), **options)
    images, tokens, mask, _ = batch(config)
    predictor(images, tokens, mask)  # compiled for 3: a short batch would be padded, hiding a mismatch
    with pytest.raises(ValueError, match="text_tokens must be"):
        predictor(images[:2], tokens[:1], mask[:1])
    with pytest.raises(ValueError, match="text_tokens must be"):
        predictor(images[:2], tokens, mask)
    with pytest.raises(ValueError, match="integer token ids"):
        predictor(images, tokens.float(), mask)
    with pytest.raises(ValueError, match="text_mask .* must have the shape"):
        predictor(images, tokens, mask[:, :5])


def test_a_failed_compilation_says_to_run_without_compile():
    config = tiny_config()
    predictor = Predictor(build_model(config), torch.device("cpu"), compile=True)

    def broken_backend(graph, inputs):
        raise OSError("no C++ compiler")

    predictor.compiled = torch.compile(predictor.model, backend=broken_backend)
    images, tokens, mask, _ = batch(config)
    with pytest.raises(RuntimeError, match=r"torch.compile failed on cpu .*run without --compile"):
        predictor(images, tokens, mask)


def test_text_cache_at_batch_1_gives_the_same_bits_and_counts_reports():
    config = tiny_config()
    model = _model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config, reports=[REPORTS[0], REPORTS[1], REPORTS[0], REPORTS[0]])
    plain = Predictor(copy.deepcopy(model), torch.device("cpu"))
    cached = Predictor(copy.deepcopy(model), torch.device("cpu"), cache_text=8)
    for i in range(4):
        one = (images[i:i + 1], tokens[i:i + 1], mask[i:i + 1])
        assert torch.equal(cached(*one), plain(*one)), i
    assert (cached.text_cache.misses, cached.text_cache.hits) == (2, 2)
    # A batch: new reports are computed together (once each), so only float rounding may differ.
    fresh = Predictor(copy.deepcopy(model), torch.device("cpu"), cache_text=8)
    logits = fresh(images, tokens, mask)
    reference = plain(images, tokens, mask)
    assert torch.allclose(logits, reference, atol=1e-5) and torch.equal(logits > 0, reference > 0)
    assert (fresh.text_cache.misses, fresh.text_cache.hits) == (2, 2)


def test_text_cache_drops_the_least_recently_used_report():
    config = tiny_config()
    model = build_model(config).eval()
    _, tokens, mask, _ = batch(config)
    cache = inference.TextFeatureCache(capacity=2)
    with torch.inference_mode():
        for i in (0, 1, 0, 2, 1):  # 2 evicts 1 (0 was used more recently), so 1 is computed again
            features = cache(model, tokens[i:i + 1], mask[i:i + 1])
            assert torch.equal(features, model.encode_text(tokens[i:i + 1], mask[i:i + 1]))
    assert (cache.misses, cache.hits, len(cache.entries)) == (4, 1, 2)
    with torch.inference_mode():  # the same ids as int32 are another key
        cache(model, tokens[1:2].int(), mask[1:2])
    assert cache.misses == 5
    with pytest.raises(ValueError, match="at least 1 report"):
        inference.TextFeatureCache(0)
    images = torch.rand(1, 3, config.img_size, config.img_size)
    with pytest.raises(ValueError, match="text_clip .* must be"):
        model(images, tokens[:1], mask[:1], text_clip=torch.zeros(1, 3, 32))


def test_reduced_precision_choices_are_checked():
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        autocast_for(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_for(torch.device("cpu"), "int8")


def test_compact_state_dict_halves_only_exact_frozen_tensors(tmp_path):
    config = tiny_config()
    model = build_model(config)
    with torch.no_grad():
        for param in model.clip.parameters():
            param.copy_(param.half().float())  # as OpenAI's fp16 release
    model.clip.ln_final.weight.data[0] = 1.0 + 2**-20  # one frozen tensor that fp16 cannot hold
    state = compact_state_dict(model)
    assert state["clip.token_embedding.weight"].dtype == torch.float16
    assert state["clip.ln_final.weight"].dtype == torch.float32
    assert state["inc.conv.weight"].dtype == torch.float32  # trainable
    assert state["inc.norm.running_var"].dtype == torch.float32  # buffer

    path = str(tmp_path / "best.pth.tar")
    save_checkpoint(checkpoint_payload(model, config, 0, True, {"total": 0.0, "dice": 0.0}), path)
    loaded = build_model_from_checkpoint(path)[0]
    for name, tensor in model.state_dict().items():
        assert loaded.state_dict()[name].dtype == tensor.dtype, name
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_best_checkpoint_leaves_out_the_training_state():
    config = tiny_config()
    model = build_model(config)
    val = {"total": 1.0, "dice": 0.5}
    best = checkpoint_payload(model, config, 3, True, val)
    latest = checkpoint_payload(model, config, 3, False, val, {"optimizer": {"state": {}}})
    assert "optimizer" not in best and best["best_model"] and best["config"]["img_size"] == 32
    assert "optimizer" in latest and not latest["best_model"]


def test_latest_checkpoint_leaves_out_the_tower_that_clip_weights_rebuilds(tmp_path):
    config = tiny_config(clip_weights=write_clip_file(tmp_path / "clip.pt"))
    model = _model_with_batchnorm_statistics(config)
    val = {"total": 1.0, "dice": 0.5}
    latest = checkpoint_payload(model, config, 3, False, val, {"optimizer": {"state": {}}}, frozen_sha256(model))
    best = checkpoint_payload(model, config, 3, True, val)
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen and not set(frozen) & set(latest["state_dict"]) and set(frozen) <= set(best["state_dict"])
    assert latest["frozen_omitted"]["names"] == frozen and "frozen_omitted" not in best
    path = str(tmp_path / "latest.pth.tar")
    save_checkpoint(latest, path)
    # Loading it for inference rebuilds the tower from the CLIP file and checks it against the digest.
    loaded = build_model_from_checkpoint(path)[0]
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_a_latest_checkpoint_whose_clip_file_changed_or_went_is_refused(tmp_path):
    clip = write_clip_file(tmp_path / "clip.pt")
    config = tiny_config(clip_weights=clip)
    model = build_model(config)
    path = str(tmp_path / "latest.pth.tar")
    save_checkpoint(checkpoint_payload(model, config, 0, False, {"total": 0.0, "dice": 0.0}, {},
                                       frozen_sha256(model)), path)
    original = open(clip, "rb").read()
    write_clip_file(clip, seed=1)
    with pytest.raises(ValueError, match=r"clip.pt: another tower \(sha256 differs\)\. Put back that file"):
        build_model_from_checkpoint(path)
    os.remove(clip)
    with pytest.raises(FileNotFoundError, match="leaves out the frozen CLIP text tower.*missing.*best checkpoint"):
        build_model_from_checkpoint(path)
    # An unreadable file where the run's was does not stop the search: the caller's config names the right one.
    with open(clip, "wb") as handle:
        handle.write(b"not a torch file")
    elsewhere = tmp_path / "kept.pt"
    elsewhere.write_bytes(original)
    with pytest.raises(ValueError, match="clip.pt: unreadable"):
        build_model_from_checkpoint(path)
    loaded = build_model_from_checkpoint(path, tiny_config(clip_weights=str(elsewhere)))[0]
    assert torch.equal(loaded.clip.ln_final.weight, model.clip.ln_final.weight)
    open(clip, "wb").close()  # an empty file (an interrupted copy) is skipped the same way
    with pytest.raises(ValueError, match="clip.pt: unreadable"):
        build_model_from_checkpoint(path)
    assert build_model_from_checkpoint(path, tiny_config(clip_weights=str(elsewhere)))[0] is not None
    with pytest.raises(ValueError, match="random text tower"):
        checkpoint_payload(build_model(tiny_config()), tiny_config(), 0, False, {"total": 0.0, "dice": 0.0}, {},
                           "digest")


def test_a_latest_checkpoint_finds_its_clip_file_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(clip_weights=write_clip_file("clip.pt"))  # relative, as nets/ViT-B-32.pt is
    model = build_model(config)
    path = str(tmp_path / "latest.pth.tar")
    save_checkpoint(checkpoint_payload(model, config, 0, False, {"total": 0.0, "dice": 0.0}, {},
                                       frozen_sha256(model)), path)
    monkeypatch.chdir(tmp_path.parent)  # the recorded absolute path finds it
    assert torch.equal(build_model_from_checkpoint(path)[0].clip.ln_final.weight, model.clip.ln_final.weight)
    moved = tmp_path / "moved.pt"
    os.rename(tmp_path / "clip.pt", moved)  # the caller's config names where it went
    loaded = build_model_from_checkpoint(path, tiny_config(clip_weights=str(moved)))[0]
    assert torch.equal(loaded.clip.token_embedding.weight, model.clip.token_embedding.weight)
    # A model without a frozen tower leaves nothing out, so needs no CLIP file.
    trainable = tiny_config(clip_weights=str(moved), frozen_clip=False)
    payload = checkpoint_payload(build_model(trainable), trainable, 0, False, {"total": 0.0, "dice": 0.0}, {},
                                 "digest")
    assert "frozen_omitted" not in payload and "clip.ln_final.weight" in payload["state_dict"]


def test_compact_resume_stores_adam_moments_in_bf16(tmp_path):
    config = tiny_config()
    model = build_model(config)
    optimizer = build_optimizer(config, model)
    step = benchmark.dummy_batch(config, 2, model.clip.shape.vocab_size)
    for _ in range(2):
        train_step(model, RecLMISCriterion(config), step, optimizer, torch.device("cpu"))
    exact = optimizer.state_dict()
    compact = compact_optimizer_state(exact)
    some = next(iter(exact["state"]))
    assert compact["state"][some]["exp_avg"].dtype == torch.bfloat16
    assert compact["state"][some]["exp_avg_sq"].dtype == torch.bfloat16
    assert torch.equal(compact["state"][some]["step"], exact["state"][some]["step"])
    assert exact["state"][some]["exp_avg"].dtype == torch.float32  # the live state is untouched
    files = {}
    for name, state in (("exact", exact), ("compact", compact)):
        files[name] = tmp_path / f"{name}.pt"
        torch.save(state, files[name])
    assert os.path.getsize(files["compact"]) < 0.6 * os.path.getsize(files["exact"])
    # Loading casts the moments back to fp32, rounded to bf16.
    resumed = build_optimizer(config, model)
    resumed.load_state_dict(torch.load(files["compact"], weights_only=True))
    param = optimizer.param_groups[0]["params"][some]
    moment = resumed.state[resumed.param_groups[0]["params"][some]]["exp_avg"]
    assert moment.dtype == torch.float32
    assert torch.equal(moment, optimizer.state[param]["exp_avg"].bfloat16().float())


def test_estimated_checkpoint_space_follows_what_the_latest_file_holds(tmp_path):
    model = build_model(tiny_config())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(t.numel() * t.element_size() for n, t in compact_state_dict(model).items() if n.startswith("clip."))
    full = estimated_checkpoint_bytes(model)
    assert full - estimated_checkpoint_bytes(model, omit_frozen=True) == 2 * frozen
    assert full - estimated_checkpoint_bytes(model, compact_resume=True) == 2 * 4 * trainable


def _resident_file_kib() -> int:
    with open("/proc/self/status") as handle:
        return sum(int(line.split()[1]) for line in handle if line.startswith(("RssFile:", "RssShmem:")))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_released_file_pages_leave_memory_and_read_back_the_same(tmp_path):
    path = tmp_path / "big.pt"
    values = torch.arange(16 * 2**20, dtype=torch.float16)  # 32 MiB
    torch.save({"small": values[:8].clone(), "t": values}, path)
    loaded = torch.load(path, mmap=True, weights_only=True)
    assert torch.equal(loaded["t"], values)  # every page read
    pages = memory._unwritten_file_mappings(str(path))
    assert pages
    before = _resident_file_kib()
    assert memory._release_file_pages(loaded["t"], pages)
    assert before - _resident_file_kib() > 24 * 1024
    assert torch.equal(loaded["t"], values)  # read again from the file
    # A view spanning far more than its small storage: only the storage counts, and it fills no whole page.
    before = _resident_file_kib()
    assert not memory._release_file_pages(loaded["small"][:1].expand(2**22), pages)
    assert abs(_resident_file_kib() - before) < 1024
    assert torch.equal(loaded["small"], values[:8])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_memory_outside_the_file_is_never_released(tmp_path):
    path = tmp_path / "small.pt"
    torch.save({"t": torch.zeros(4)}, path)
    loaded = torch.load(path, mmap=True, weights_only=True)
    heap = torch.full((2**22,), 3.0)  # 16 MiB of ordinary memory
    assert not memory._release_file_pages(heap, memory._unwritten_file_mappings(str(path)))
    assert bool((heap == 3.0).all()) and torch.equal(loaded["t"], torch.zeros(4))
    assert not memory._release_file_pages(heap, [])


def test_a_file_from_a_machine_of_the_other_byte_order_is_not_released(tmp_path, monkeypatch):
    """torch swaps such a file's bytes in its mapped pages: dropping them would bring the unswapped bytes back."""
    path = tmp_path / "ckpt.pt"
    torch.save({"t": torch.zeros(4)}, path)
    torch.load(path, mmap=True, weights_only=True)
    other = "big" if sys.byteorder == "little" else "little"
    monkeypatch.setattr(memory.sys, "byteorder", other)
    assert memory._unwritten_file_mappings(str(path)) == []


def test_loading_hands_back_only_the_converted_pages_of_the_file(tmp_path, monkeypatch):
    config = tiny_config()
    model = _model_with_batchnorm_statistics(config)
    path = str(tmp_path / "best.pth.tar")
    save_checkpoint(checkpoint_payload(model, config, 0, True, {"total": 0.0, "dice": 0.0}), path)
    released = []
    monkeypatch.setattr(memory, "_release_file_pages", lambda tensor, pages: released.append(tensor.dtype) or True)
    build_model_from_checkpoint(path)
    halves = [t for t in compact_state_dict(model).values() if t.dtype == torch.float16]
    assert released == [torch.float16] * len(halves) and halves


def test_a_legacy_format_checkpoint_still_loads(tmp_path):
    config = tiny_config(clip_heads=4)  # not CLIP's width / 64: the saved config must decide
    model = build_model(config).eval()
    path = tmp_path / "legacy.pth.tar"
    torch.save({"state_dict": model.state_dict(), "config": config.to_dict()}, path,
               _use_new_zipfile_serialization=False)
    loaded = build_model_from_checkpoint(str(path))[0]
    images, tokens, mask, _ = batch(config)
    with torch.no_grad():
        assert torch.equal(loaded(images, tokens, mask)["logits"], model(images, tokens, mask)["logits"])


def test_mixed_precision_training_still_learns():
    """bf16 autocast on the CPU (fp16 + GradScaler on CUDA): a short run on one batch lowers the segmentation loss
    about as far as the same run in fp32."""
    config = tiny_config(learning_rate=3e-3)
    images, tokens, mask, labels = batch(config)
    data = {"image": images, "label": labels.float(), "text_token": tokens, "text_mask": mask,
            "name": ["a", "b", "c"]}
    curves = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model(config).train()
        criterion = RecLMISCriterion(config)
        optimizer = build_optimizer(config, model)
        curves[amp] = [float(train_step(model, criterion, data, optimizer, torch.device("cpu"), amp=amp,
                                        index=step)[1]["seg"].detach()) for step in range(40)]
    fp32, mixed = curves[False], curves[True]
    assert mixed[-1] < 0.8 * mixed[0], mixed
    assert abs(mixed[-1] - fp32[-1]) < 0.1 * fp32[0], (fp32[-1], mixed[-1])


def test_cpu_allocator_tuning_applies_on_glibc():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert tune_cpu_allocator() is True


def test_tokenizer_does_not_import_the_open_clip_package():
    code = ("import sys; from utils.data.tokenizer import ReportTokenizer; "
            "t = ReportTokenizer(18)('No infection.'); assert t.tokens[0, 0] == 49406; "
            "print('open_clip' in sys.modules, 'torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["False", "False"]


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
        sizes[clip] = benchmark.checkpoint_sizes(state, str(tmp_path / str(clip)), clip)
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
    save_checkpoint(checkpoint_payload(_model_with_batchnorm_statistics(config), config, 0, True,
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

"""Checkpoints: what they hold, compact storage of the frozen tower, leaving it out, rebuilding a model from a file."""

import os

import pytest
import torch

from nets import build_model
from tests.tiny import batch, model_with_batchnorm_statistics, tiny_config, write_clip_file
from tools import bench_timing
from utils.checkpoints import build_model_from_checkpoint, frozen_sha256
from utils.training.checkpoint import (
    checkpoint_payload,
    compact_optimizer_state,
    compact_state_dict,
    estimated_checkpoint_bytes,
    save_checkpoint,
)
from utils.training.engine import train_step
from utils.training.losses import RecLMISCriterion
from utils.training.schedulers import build_optimizer


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
    model = model_with_batchnorm_statistics(config)
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
    again = build_model_from_checkpoint(path, tiny_config(clip_weights=str(elsewhere)))[0]
    assert torch.equal(again.clip.transformer.resblocks[0].attn.in_proj_weight,
                       model.clip.transformer.resblocks[0].attn.in_proj_weight)  # the tower, from the kept file
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
    trainable = tiny_config(clip_weights=str(moved), freeze_text_tower=False)
    payload = checkpoint_payload(build_model(trainable), trainable, 0, False, {"total": 0.0, "dice": 0.0}, {},
                                 "digest")
    assert "frozen_omitted" not in payload and "clip.ln_final.weight" in payload["state_dict"]


def test_compact_resume_stores_adam_moments_in_bf16(tmp_path):
    config = tiny_config()
    model = build_model(config)
    optimizer = build_optimizer(config, model)
    step = bench_timing.dummy_batch(config, 2, model.clip.shape.vocab_size)
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

"""Checkpoints: the authors' format loads with no missing key, bad files are refused with clear messages."""

import pytest
import torch

from nets import build_model
from nets.weights import nudge_weights, save_authors_format
from tests.tiny import batch, tiny_config
from utils.checkpoints import build_model_from_checkpoint


def _trained_model(config):
    torch.manual_seed(0)
    model = build_model(config).train()
    images, tokens, mask, _ = batch(config)
    model(images, tokens, mask)  # BatchNorm running statistics leave their initial values
    return model.eval()


@pytest.mark.parametrize("data_parallel", [False, True])
def test_authors_checkpoint_round_trips_without_clip_file(tmp_path, data_parallel):
    config = tiny_config(clip_width=64, clip_heads=1, text_embed_dim=64)
    model = _trained_model(config)
    vision = {"clip.visual.conv1.weight": torch.zeros(8, 3, 4, 4), "clip.visual.proj": torch.zeros(8, 64)}
    path = tmp_path / "best_model-RecLMIS.pth.tar"
    save_authors_format(model, str(path), data_parallel=data_parallel, extra=vision)
    # The config asks for a CLIP file that does not exist and another tower width: both come from the checkpoint.
    asked = tiny_config(clip_weights=str(tmp_path / "ViT-B-32.pt"))
    loaded, checkpoint = build_model_from_checkpoint(str(path), asked)
    assert checkpoint["model"] == "RecLMIS" and not loaded.training
    assert loaded.clip.shape.width == 64
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    images, tokens, mask, _ = batch(config)
    with torch.no_grad():
        assert torch.equal(loaded(images, tokens, mask)["logits"], model(images, tokens, mask)["logits"])


def test_our_checkpoint_rebuilds_from_its_saved_config(tmp_path):
    config = tiny_config(img_size=48, base_channel=6)
    model = _trained_model(config)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict(), "config": config.to_dict()}, path)
    loaded, _ = build_model_from_checkpoint(str(path))
    assert loaded.config.img_size == 48 and loaded.config.base_channel == 6




@pytest.mark.parametrize("steps", [1, -2])
def test_nudge_moves_each_trainable_weight_by_whole_float_steps_and_leaves_the_frozen_tower(steps):
    torch.manual_seed(0)
    model = build_model(tiny_config())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    nudge_weights(model, steps)
    direction = float("inf") if steps > 0 else float("-inf")
    moved = 0
    for name, param in model.named_parameters():
        expected = before[name]
        if param.requires_grad:
            for _ in range(abs(steps)):
                expected = torch.nextafter(expected, torch.full_like(expected, direction))
            moved += 1
            assert not torch.equal(param, before[name])
        assert torch.equal(param, expected), name
    assert moved and any(not p.requires_grad for p in model.parameters())
    nudge_weights(model, -steps)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())

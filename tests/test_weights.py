"""Checkpoints: the authors' format loads with no missing key, bad files are refused with clear messages."""

import pytest
import torch

from nets import build_model
from nets.weights import build_model_from_checkpoint, read_checkpoint, save_authors_format
from tests.tiny import batch, tiny_config


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: a stand-in for malicious code in a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _trained_model(config):
    torch.manual_seed(0)
    model = build_model(config).train()
    images, tokens, mask, _ = batch(config)
    model(images, tokens, mask)  # BatchNorm running statistics leave their initial values
    return model.eval()


@pytest.mark.parametrize("data_parallel", [False, True])
def test_authors_checkpoint_round_trips_without_clip_file(tmp_path, data_parallel):
    config = tiny_config(clip_width=64, clip_heads=1, clip_embed_dim=64)
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


def test_checkpoint_from_another_config_lists_the_mismatched_tensors(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_authors_format(_trained_model(tiny_config(base_channel=6)), str(path))
    with pytest.raises(ValueError) as error:
        build_model_from_checkpoint(str(path), tiny_config(base_channel=4, rec_trans_num_layers1=2))
    message = str(error.value)
    assert str(path) in message
    assert f"inc.conv.weight: {path} [6, 3, 3, 3] vs model [4, 3, 3, 3]" in message
    assert "rec_img_trans1.decoder1.decoder_layers.1.fc1.weight" in message  # missing from the file


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "payload": _Payload(str(marker))}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_missing_and_non_torch_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        read_checkpoint(str(junk))

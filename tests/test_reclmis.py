"""The RecLMIS network: shapes, gradients, determinism, inference path, state-dict layout, bad input."""

import os

import pytest
import torch

from nets import build_model
from nets.weights import read_state_dict_tsv
from tests.tiny import batch, tiny_config
from utils.config import Config
from utils.training.losses import RecLMISCriterion

# Every tensor name and shape of the authors' model, its vision tower left out (as the authors' code builds it).
TSV = os.path.join(os.path.dirname(__file__), "data", "reclmis_state_dict.tsv")


def _is_unused(name: str) -> bool:
    """Parameters the authors' model holds but never uses (docs/QUIRKS.md, A9): they get no gradient by design."""
    return "pixModule.conv_sig" in name or ("decoder1.decoder_layers" in name and "encoder_attn" in name)


@pytest.mark.parametrize("img_size,base_channel,token_len", [(32, 4, 18), (48, 8, 10), (64, 2, 12)])
def test_output_shapes_and_dtypes(img_size, base_channel, token_len):
    config = tiny_config(img_size=img_size, base_channel=base_channel, token_len=token_len)
    model = build_model(config)
    images, tokens, mask, _ = batch(config)
    out = model(images, tokens, mask)
    grid = img_size // 16
    b, d = images.shape[0], config.text_embed_dim
    expected = {"logits": (b, 1, img_size, img_size), "word_weights": (b, token_len), "patch_weights": (b, grid**2),
                "text_feat": (b, token_len, d), "img_feat": (b, grid**2, d), "text_rec": (b, token_len, d),
                "text_target": (b, token_len, d), "img_rec": (b, grid**2, d), "img_target": (b, grid**2, d)}
    for key, shape in expected.items():
        assert tuple(out[key].shape) == shape, key
        assert out[key].dtype == torch.float32, key
    assert out["logit_scale"].shape == ()
    # Weights of interest are distributions, exactly zero on padded tokens.
    torch.testing.assert_close(out["word_weights"].sum(-1), torch.ones(b))
    assert torch.all(out["word_weights"][mask == 0] == 0)


def test_eval_returns_only_logits_unless_asked():
    config = tiny_config()
    model = build_model(config).eval()
    images, tokens, mask, _ = batch(config)
    assert set(model(images, tokens, mask)) == {"logits"}
    assert set(model(images, tokens, mask, return_weights=True)) == {"logits", "word_weights", "patch_weights"}


def test_eval_logits_equal_train_path_logits():
    config = tiny_config()
    torch.manual_seed(0)
    model = build_model(config)
    images, tokens, mask, _ = batch(config)
    model.train()
    model(images, tokens, mask)  # moves the BatchNorm statistics away from their initial values
    model.eval()
    with torch.no_grad():
        plain = model(images, tokens, mask)["logits"]
        with_aux = model(images, tokens, mask, return_aux=True, return_weights=True)
    assert "text_rec" in with_aux
    assert torch.equal(plain, with_aux["logits"])


def test_backward_reaches_trained_parameters_and_not_the_frozen_tower():
    config = tiny_config()
    model = build_model(config).train()
    images, tokens, mask, masks = batch(config)
    RecLMISCriterion(config)(model(images, tokens, mask), masks)["total"].backward()
    for name, param in model.named_parameters():
        if name.startswith("clip."):
            assert not param.requires_grad and param.grad is None, name
        elif _is_unused(name):
            assert param.grad is None, name
        else:
            assert param.grad is not None, f"{name} got no gradient"
            if name not in ("mlp_woi.2.bias", "mlp_visual.2.bias"):  # a shift before a softmax has zero gradient
                assert torch.any(param.grad != 0), f"{name} got an all-zero gradient"


def test_frozen_tower_stays_in_eval_mode_and_switch_makes_it_trainable():
    model = build_model(tiny_config()).train()
    assert model.training and not model.clip.training
    trainable = build_model(tiny_config(freeze_text_tower=False)).train()
    assert trainable.clip.training
    config = tiny_config(freeze_text_tower=False)
    images, tokens, mask, masks = batch(config)
    RecLMISCriterion(config)(trainable(images, tokens, mask), masks)["total"].backward()
    assert trainable.clip.transformer.resblocks[0].attn.in_proj_weight.grad is not None


def test_same_seed_gives_same_losses_and_other_seed_differs():
    config = tiny_config()
    images, tokens, mask, masks = batch(config)

    def losses(seed):
        torch.manual_seed(0)
        model = build_model(config).train()
        torch.manual_seed(seed)
        return {k: v.item() for k, v in RecLMISCriterion(config)(model(images, tokens, mask), masks).items()}

    first, second, other = losses(1), losses(1), losses(2)
    assert first == second
    assert first["img_rec"] != other["img_rec"]  # masking and dropout draw from torch's RNG


def test_state_dict_matches_the_authors_layout():
    model = build_model(Config().replace(clip_weights=None))
    reference = read_state_dict_tsv(TSV)
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert ours == {name: shape for name, (shape, _) in reference.items()}
    params = dict(model.named_parameters())
    for name, (_, kind) in reference.items():
        if kind == "buffer":
            assert name not in params, name
        else:
            assert params[name].requires_grad == (kind == "True"), name
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 69_440_255  # docs/QUIRKS.md, A8: QaTa


def test_reconstruction_depth_and_widths_follow_the_config():
    model = build_model(tiny_config(rec_trans_num_layers1=3, base_channel=6))
    assert len(model.rec_img_trans1.decoder2.decoder_layers) == 3
    assert model.inc.conv.out_channels == 6 and model.down4.nConvs[1].conv.out_channels == 32
    assert model.interact.embeddings.position_embeddings.shape == (1, 4, 32)


def test_causal_image_mask_switch():
    faithful = build_model(tiny_config())
    fixed = build_model(tiny_config(fix_img_causal_mask=True))
    assert faithful.rec_img_trans1.decoder2.causal and faithful.rec_text_trans1.decoder1.causal
    assert not fixed.rec_img_trans1.decoder2.causal and not fixed.rec_text_trans1.decoder1.causal
    assert fixed.rec_img_trans1.decoder1.causal and fixed.rec_text_trans1.decoder2.causal  # text stays causal


@pytest.mark.parametrize("bad,fragment", [
    ("image_size", "[3, 3, 48, 48]"),
    ("channels", "[3, 1, 32, 32]"),
    ("token_batch", "[2, 18]"),
    ("mask_shape", "[3, 17]"),
    ("too_long", "80 tokens"),
])
def test_bad_shapes_raise_value_error_naming_them(bad, fragment):
    config = tiny_config()
    model = build_model(config)
    images, tokens, mask, _ = batch(config)
    if bad == "image_size":
        images = torch.rand(3, 3, 48, 48)
    elif bad == "channels":
        images = images[:, :1]
    elif bad == "token_batch":
        tokens, mask = tokens[:2], mask[:2]
    elif bad == "mask_shape":
        mask = mask[:, :17]
    elif bad == "too_long":
        tokens = torch.zeros(3, 80, dtype=torch.long)
        mask = torch.ones_like(tokens)
    with pytest.raises(ValueError) as error:
        model(images, tokens, mask)
    assert fragment in str(error.value)


def test_config_rejects_sizes_that_cannot_work():
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_config(img_size=40)
    with pytest.raises(ValueError, match="context length"):
        build_model(tiny_config(token_len=90))
    with pytest.raises(ValueError, match="divisible"):
        build_model(tiny_config(interact_heads=5))

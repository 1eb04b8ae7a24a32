"""The options beyond the authors: text guidance at decoder stages and the residual around the interaction."""

import pytest
import torch

from nets import build_model
from nets.text_guide import TextGuide
from tests.tiny import batch, tiny_config


def _guide(seed=0, channels=6, dim=8):
    torch.manual_seed(seed)
    guide = TextGuide(channels, dim, num_heads=2)
    x = torch.randn(2, channels, 5, 7)
    text = torch.randn(2, 4, dim)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    return guide, x, text, mask


def test_a_new_guide_is_the_identity_and_learns():
    guide, x, text, mask = _guide()
    out = guide(x, text, mask)
    assert out.shape == x.shape and torch.equal(out, x)  # zero-initialised FiLM: starts as the identity
    out.square().sum().backward()
    assert guide.film.weight.grad.abs().sum() > 0  # ... and gets a gradient from the first step


def test_guide_reads_the_words_but_not_the_padding():
    guide, x, text, mask = _guide()
    torch.nn.init.normal_(guide.film.weight, std=0.5)
    out = guide(x, text, mask)
    other_words = text.clone()
    other_words[:, 0] += 1.0  # a valid token of both rows
    assert not torch.allclose(guide(x, other_words, mask), out)
    padding_changed = text.clone()
    padding_changed[0, 3] += 5.0  # padded in row 0
    padding_changed[1, 2:] -= 5.0  # padded in row 1
    torch.testing.assert_close(guide(x, padding_changed, mask), out)


def test_guide_queries_know_where_each_pixel_is():
    coords = TextGuide.coordinates(torch.zeros(1, 3, 3, 5))
    assert coords.shape == (1, 2, 3, 5)
    assert coords[0, 0, 0, 0] == -1 and coords[0, 0, -1, 0] == 1  # y: top -1, bottom +1
    assert coords[0, 1, 0, 0] == -1 and coords[0, 1, 0, -1] == 1  # x: left -1, right +1


def test_faithful_model_keeps_the_authors_tensors_and_options_only_add_their_own():
    faithful = build_model(tiny_config()).state_dict()
    residual = build_model(tiny_config(interact_residual=True)).state_dict()
    guided = build_model(tiny_config(text_guide="up3,up2")).state_dict()
    assert residual.keys() == faithful.keys()
    added = set(guided) - set(faithful)
    assert set(faithful) <= set(guided) and added
    assert {name.split(".")[1] for name in added} == {"up3", "up2"}
    assert all(name.startswith("text_guides.") for name in added)
    # A faithful checkpoint loads into a faithful model, strictly.
    build_model(tiny_config()).load_state_dict(faithful)


@pytest.mark.parametrize("changes", [dict(text_guide="up4,up3,up2,up1"), dict(variant="improved")])
def test_guided_stages_keep_shapes_and_let_the_report_change_the_logits(changes):
    config = tiny_config(**changes)
    torch.manual_seed(0)
    model = build_model(config)
    for guide in model.text_guides.values():  # past the identity start, as after some training
        torch.nn.init.normal_(guide.film.weight, std=0.3)
    model.eval()
    images, tokens, mask, _ = batch(config)
    out = model(images, tokens, mask, return_aux=True)
    assert out["logits"].shape == (3, 1, config.img_size, config.img_size)
    swapped = model(images, tokens.roll(1, 0), mask.roll(1, 0))["logits"]
    assert (swapped - out["logits"]).abs().max() > 1e-3  # the faithful model at init: about 3e-8
    out["logits"].sum().backward()
    for name, parameter in model.named_parameters():
        if name.startswith("text_guides."):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_residual_adds_the_bottleneck_to_the_interacted_patches():
    torch.manual_seed(0)
    plain = build_model(tiny_config()).eval()
    residual = build_model(tiny_config(interact_residual=True)).eval()
    residual.load_state_dict(plain.state_dict())
    images, tokens, mask, _ = batch(tiny_config())
    seen = {}
    plain.up4.register_forward_pre_hook(lambda m, args: seen.__setitem__("plain", args[0]))
    residual.up4.register_forward_pre_hook(lambda m, args: seen.__setitem__("residual", args[0]))
    residual.down4.register_forward_hook(lambda m, args, out: seen.__setitem__("e4", out))
    with torch.no_grad():
        plain(images, tokens, mask)
        residual(images, tokens, mask)
    torch.testing.assert_close(seen["residual"], seen["plain"] + seen["e4"])

"""The CLIP text tower: agreement with open_clip's implementation, the padding mask, loading weights."""

import open_clip
import pytest
import torch

from nets.text_encoder import (
    CLIPTextEncoder,
    TextTowerShape,
    build_text_encoder,
    load_clip_text_state,
)
from utils.data.tokenizer import ReportTokenizer

SHAPE = TextTowerShape(width=64, layers=2, heads=1, embed_dim=48, context_length=77, vocab_size=49408)
REPORTS = ["Bilateral pulmonary infection, two infected areas.", "No infection."]


@pytest.fixture(scope="module")
def reference_clip():
    """open_clip's CLIP (text tower of SHAPE, tiny vision tower), random weights: an independent implementation."""
    torch.manual_seed(0)
    text_cfg = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=2)
    vision_cfg = open_clip.CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32)
    model = open_clip.CLIP(embed_dim=48, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True)
    return model.eval()


def _text_state(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith("visual.") and k != "attn_mask"}


def test_hidden_states_match_open_clip_on_real_tokens(reference_clip):
    ours = CLIPTextEncoder(SHAPE).eval()
    ours.load_state_dict(_text_state(reference_clip))
    tok = ReportTokenizer(77, pad_short_reports=False)(REPORTS)
    with torch.no_grad():
        hidden = ours(tok.tokens, tok.text_mask)
        x = reference_clip.token_embedding(tok.tokens) + reference_clip.positional_embedding
        x = reference_clip.transformer(x, attn_mask=reference_clip.attn_mask)
        expected = reference_clip.ln_final(x) @ reference_clip.text_projection
        pooled = reference_clip.encode_text(tok.tokens)
    real = tok.text_mask.bool()
    # The causal mask already hides later (padded) keys from real tokens: there the two must agree.
    torch.testing.assert_close(hidden[real], expected[real], atol=1e-5, rtol=1e-4)
    eot = hidden[torch.arange(2), tok.tokens.argmax(-1)]
    torch.testing.assert_close(eot, pooled, atol=1e-5, rtol=1e-4)
    # At padded positions the authors' key-padding mask changes the output.
    assert not torch.allclose(hidden[~real], expected[~real], atol=1e-3)


def test_padded_keys_are_hidden_from_every_query():
    torch.manual_seed(0)
    encoder = CLIPTextEncoder(SHAPE).eval()
    tok = ReportTokenizer(18)(["No infection."])
    changed = tok.tokens.clone()
    changed[tok.text_mask == 0] = 1234  # other ids at padded positions, same mask
    with torch.no_grad():
        a, b = encoder(tok.tokens, tok.text_mask), encoder(changed, tok.text_mask)
    real = tok.text_mask[0].bool()
    torch.testing.assert_close(a[0, real], b[0, real])


def test_loads_a_plain_state_dict_and_reads_the_shape_from_it(tmp_path, reference_clip):
    path = tmp_path / "clip_text.pt"
    torch.save(reference_clip.state_dict(), path)  # vision tower included: it is dropped
    encoder = build_text_encoder(str(path), TextTowerShape())
    assert encoder.shape == TextTowerShape(width=64, layers=2, heads=1, embed_dim=48)
    torch.testing.assert_close(encoder.text_projection, reference_clip.text_projection)


# OpenAI's released CLIP files are TorchScript archives; torch.jit.trace, deprecated since, is how to write one here.
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_loads_a_torchscript_archive(tmp_path):
    torch.manual_seed(1)
    source = CLIPTextEncoder(SHAPE).eval()
    tok = ReportTokenizer(18)(REPORTS)
    traced = torch.jit.trace(source, (tok.tokens, tok.text_mask), check_trace=False)
    path = tmp_path / "archive.pt"
    traced.save(str(path))
    state = load_clip_text_state(str(path))
    encoder = build_text_encoder(str(path), TextTowerShape())
    torch.testing.assert_close(state["token_embedding.weight"], source.token_embedding.weight)
    with torch.no_grad():
        torch.testing.assert_close(encoder(tok.tokens, tok.text_mask), source(tok.tokens, tok.text_mask))


def test_a_file_without_a_text_tower_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="no CLIP text tower"):
        load_clip_text_state(str(path))

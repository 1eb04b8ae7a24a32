"""The CLIP text tower from every form it is published in, each matching its source library's own forward.

Random tiny models are built with transformers and open_clip (test dependencies), saved in each form, loaded into
our tower, and compared with the source library on the same tokens. Our tower also hides padded keys (the authors'
mask); the source libraries' causal mask already hides later keys from every real token, so the comparison is on
the real tokens' positions (start, words, end), where both compute the same thing.
"""

import json

import open_clip
import pytest
import torch
import transformers
from safetensors.torch import save_file

from nets.text_encoder import build_text_encoder, load_clip_text_state
from utils.data.tokenizer import ReportTokenizer

WIDTH, EMBED = 64, 48  # one head of 64, as CLIP's width / 64 rule reads it off the tensors
REPORTS = ["Bilateral pulmonary infection, two infected areas, upper left lung.", "No infection."]


def _tokens():
    tok = ReportTokenizer(77, pad_short_reports=False)(REPORTS)
    return tok.tokens, tok.text_mask


def _text_config(**changes):
    values = dict(vocab_size=49408, hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2,
                  num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu")
    values.update(changes)
    return values


@pytest.fixture(scope="module")
def hf_with_projection():
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(**_text_config(), projection_dim=EMBED)
    return transformers.CLIPTextModelWithProjection(config).eval()


@pytest.fixture(scope="module")
def hf_clip_model():
    torch.manual_seed(1)
    config = transformers.CLIPConfig(text_config=_text_config(), projection_dim=EMBED,
                                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                        num_attention_heads=1, image_size=32, patch_size=16))
    return transformers.CLIPModel(config).eval()


def _hf_features(text_model, projection, tokens, mask):
    with torch.no_grad():
        hidden = text_model(input_ids=tokens, attention_mask=mask).last_hidden_state
        return projection(hidden)


def _ours(path, tokens, mask):
    encoder = build_text_encoder(str(path), None).eval()
    with torch.no_grad():
        return encoder(tokens, mask), encoder


def _assert_same_on_real_tokens(ours, theirs, mask):
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max() <= 1e-5


@pytest.mark.parametrize("form", ["folder", "model.safetensors", "pytorch_model.bin"])
def test_transformers_text_model_with_projection(hf_with_projection, tmp_path, form):
    hf_with_projection.save_pretrained(tmp_path / "hf")
    if form == "pytorch_model.bin":
        (tmp_path / "hf" / "model.safetensors").unlink()
        torch.save(hf_with_projection.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    path = tmp_path / "hf" if form == "folder" else tmp_path / "hf" / form
    tokens, mask = _tokens()
    ours, encoder = _ours(path, tokens, mask)
    theirs = _hf_features(hf_with_projection.text_model, hf_with_projection.text_projection, tokens, mask)
    _assert_same_on_real_tokens(ours, theirs, mask)
    assert encoder.shape.width == WIDTH and encoder.shape.embed_dim == EMBED and encoder.shape.layers == 2
    assert float(encoder.logit_scale.detach()) == pytest.approx(2.6592, abs=1e-4)  # not in the file: CLIP's start


def test_transformers_clip_model_folder(hf_clip_model, tmp_path):
    hf_clip_model.save_pretrained(tmp_path / "clip")
    tokens, mask = _tokens()
    ours, encoder = _ours(tmp_path / "clip", tokens, mask)
    theirs = _hf_features(hf_clip_model.text_model, hf_clip_model.text_projection, tokens, mask)
    _assert_same_on_real_tokens(ours, theirs, mask)
    assert float(encoder.logit_scale.detach()) == pytest.approx(float(hf_clip_model.logit_scale.detach()))
    assert not any(k.startswith(("visual", "vision")) for k in load_clip_text_state(str(tmp_path / "clip")))


@pytest.fixture(scope="module")
def open_clip_model():
    torch.manual_seed(2)
    text_cfg = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=WIDTH, heads=1, layers=2)
    vision_cfg = open_clip.CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32)
    return open_clip.CLIP(embed_dim=EMBED, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True).eval()


def _open_clip_features(model, tokens):
    with torch.no_grad():
        x = model.token_embedding(tokens) + model.positional_embedding
        x = model.transformer(x, attn_mask=model.attn_mask)
        return model.ln_final(x) @ model.text_projection


@pytest.mark.parametrize("form", ["checkpoint.pt", "wrapped.bin", "module.pt", "text_only.safetensors",
                                  "open_clip_model.safetensors"])
def test_state_dicts_in_openais_names(open_clip_model, tmp_path, form):
    state = dict(open_clip_model.state_dict())
    if form == "checkpoint.pt":  # open_clip's own training checkpoint: {"epoch", "name", "state_dict", ...}
        torch.save({"epoch": 1, "name": "ViT-B-32", "state_dict": state}, tmp_path / form)
    elif form == "wrapped.bin":
        torch.save({"model": state}, tmp_path / form)
    elif form == "module.pt":  # saved from DataParallel
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / form)
    elif form == "text_only.safetensors":
        save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("visual.")}, tmp_path / form)
    else:  # as the hub's open_clip folder holds it
        (tmp_path / "oc").mkdir()
        save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "oc" / form)
        form = "oc"
    tokens, mask = _tokens()
    ours, _ = _ours(tmp_path / form, tokens, mask)
    _assert_same_on_real_tokens(ours, _open_clip_features(open_clip_model, tokens), mask)


def test_a_bert_file_is_refused_with_what_was_found_and_expected(tmp_path):
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(10, 4),
               "bert.encoder.layer.0.attention.self.query.weight": torch.zeros(4, 4)}, tmp_path / "bert.safetensors")
    with pytest.raises(ValueError, match="holds no CLIP text tower: found bert.embeddings.*expected OpenAI's names"):
        load_clip_text_state(str(tmp_path / "bert.safetensors"))


def test_other_clip_variants_are_refused(hf_with_projection, tmp_path):
    hf_with_projection.save_pretrained(tmp_path / "gelu")
    config = json.loads((tmp_path / "gelu" / "config.json").read_text())
    config["hidden_act"] = "gelu"
    (tmp_path / "gelu" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hidden_act='gelu'.*quick_gelu"):
        load_clip_text_state(str(tmp_path / "gelu"))
    without_projection = transformers.CLIPTextModel(transformers.CLIPTextConfig(**_text_config()))
    without_projection.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="without its projection"):
        load_clip_text_state(str(tmp_path / "plain"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder without CLIP weights"):
        load_clip_text_state(str(tmp_path / "empty"))


def test_heads_that_break_clips_width_rule_are_refused(tmp_path):
    model = transformers.CLIPTextModelWithProjection(
        transformers.CLIPTextConfig(**_text_config(num_attention_heads=4), projection_dim=EMBED))
    model.save_pretrained(tmp_path / "heads")
    with pytest.raises(ValueError, match="4 attention heads.*width 64 / 64 = 1"):
        load_clip_text_state(str(tmp_path / "heads"))

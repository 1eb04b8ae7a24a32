"""tools/get_weights: fetch from a (fake, local) hub cache, check, print the setting; offline without the files it
fails at once, saying where to get them by hand."""

import time

import pytest
import transformers

from nets.text_encoder import TextTowerShape, build_text_encoder
from tools import get_weights

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_cache(root, model=None):
    """huggingface_hub's cache layout for openai/clip-vit-base-patch32, holding ``model`` (a tiny CLIP)."""
    repo = root / "models--openai--clip-vit-base-patch32"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    if model is not None:
        model.save_pretrained(snapshot)
    return root


def _tiny_clip():
    config = transformers.CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                         num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                                         projection_dim=48)
    return transformers.CLIPTextModelWithProjection(config)


TINY = TextTowerShape(width=64, layers=2, heads=1, embed_dim=48)


def test_fetches_checks_and_prints_the_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(get_weights.WEIGHTS, "clip-vit-b32", (*get_weights.WEIGHTS["clip-vit-b32"][:2], TINY))
    cache = _fake_hub_cache(tmp_path / "hub", _tiny_clip())
    out = tmp_path / "nets" / "clip"
    assert get_weights.main(["clip-vit-b32", "--to", str(out), "--cache_dir", str(cache), "--offline"]) == 0
    printed = capsys.readouterr().out
    assert f"use it with: --set clip_weights={out}" in printed and "width 64, 2 layers" in printed
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert build_text_encoder(str(out), None).shape == TINY


def test_a_file_of_another_size_is_refused(tmp_path, capsys):
    cache = _fake_hub_cache(tmp_path / "hub", _tiny_clip())
    assert get_weights.main(["clip-vit-b32", "--to", str(tmp_path / "out"), "--cache_dir", str(cache),
                             "--offline"]) == 2
    assert "not clip-vit-b32's TextTowerShape(width=512" in capsys.readouterr().err


@pytest.mark.parametrize("how", [["--offline"], []])
def test_offline_without_the_files_fails_at_once_with_the_manual_sources(tmp_path, capsys, monkeypatch, how):
    if not how:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.time()
    assert get_weights.main(["clip-vit-b32", "--to", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "empty"),
                             *how]) == 2
    err = capsys.readouterr().err
    assert time.time() - started < 10
    assert "not in the hub's local cache" in err and "openai/clip-vit-base-patch32" in err and "ViT-B-32.pt" in err
    assert not (tmp_path / "out").exists()

"""Parameter counts and FLOPs: the authors' numbers at the QaTa config (docs/QUIRKS.md, A8), and the command."""

import json

from nets import build_model
from tools.summary import main, summarize
from utils.config import load_config


def test_qata_counts_match_the_authors_model():
    summary = summarize(build_model(load_config("Config_QaTa", ["clip_weights=None"])))
    assert summary["inference_trainable"] == 18_443_005
    assert summary["text_tower"] == 63_428_097
    assert summary["trainable"] == 69_440_255
    assert summary["total"] == 220_717_568 - 87_849_216  # the authors' total less the unused vision tower
    assert 48.5e9 < summary["flops_inference"] < 49.3e9  # docs/QUIRKS.md, A8: 48.9 GFLOPs
    assert summary["flops_full"] > summary["flops_inference"]
    on_path = {m["name"] for m in summary["modules"] if m["inference"]}
    assert on_path == {"clip", "inc", "down1", "down2", "down3", "down4", "text_module4", "interact",
                       "up4", "up3", "up2", "up1", "outc"}


def test_command_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "summary.json"
    assert main(["-c", "Config_MoNuSeg", "--set", "img_size=32", "base_channel=4", "clip_width=32",
                 "clip_layers=1", "clip_heads=1", "text_embed_dim=32", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert f"{data['trainable']:,}" in printed and "GFLOPs" in printed
    assert data["total"] == data["trainable"] + data["frozen"]

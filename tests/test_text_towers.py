"""The text-tower registry: a new tower is one module and one registry entry. A tiny bag-of-words tower,
registered here, trains, resumes, tests and predicts through the commands with no other change."""

import math

import cv2
import pytest
import torch
from torch import nn

import test as test_cli
import train_model
from nets import build_model
from nets.text_encoder import TextTowerShape
from nets.text_towers import TEXT_TOWERS, TextTowerKind, register_text_tower, text_tower_kind
from tests.tiny import REPORTS, tiny_config
from utils.checkpoints import BEST_NAME, build_model_from_checkpoint
from utils.data.demo import make_demo_dataset
from utils.data.tokenizer import TOWER_TOKENIZERS, ReportTokenizer, build_tokenizer


class BagOfWords(nn.Module):
    """Each token's own embedding, nothing more: the smallest tower with the interface RecLMIS reads."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.shape = TextTowerShape(width=embed_dim, layers=1, heads=1, embed_dim=embed_dim)
        self.embedding = nn.Embedding(self.shape.vocab_size, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))

    def freeze(self, frozen: bool) -> None:
        self.requires_grad_(not frozen)

    def forward(self, tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens) * text_mask[..., None]


BAG = TextTowerKind(name="bag", tokenizer="clip_bpe", build=lambda config: BagOfWords(config.text_embed_dim),
                    rebuild=lambda config, state, saved: (config, BagOfWords(config.text_embed_dim)),
                    describe=lambda config: "a bag of words (tests)")


@pytest.fixture
def bag():
    register_text_tower(BAG)
    yield BAG
    TEXT_TOWERS.pop("bag")
    TOWER_TOKENIZERS.pop("bag")


def test_a_registered_tower_is_built_and_tokenised_for(bag):
    config = tiny_config(text_encoder="bag", text_embed_dim=16)
    model = build_model(config)
    assert isinstance(model.text_tower, BagOfWords) and model.text_tower is model.clip
    assert isinstance(build_tokenizer(config), ReportTokenizer)
    tokens = build_tokenizer(config)(REPORTS)
    out = model(torch.rand(3, 3, 32, 32), tokens.tokens, tokens.text_mask)
    assert out["logits"].shape == (3, 1, 32, 32)
    assert not any(p.requires_grad for p in model.text_tower.parameters())  # freeze_text_tower, the default


def test_the_registry_refuses_a_second_kind_of_the_same_name_and_names_the_kinds(bag):
    with pytest.raises(ValueError, match="registered already"):
        register_text_tower(TextTowerKind(name="bag", tokenizer="clip_bpe", build=None, rebuild=None,
                                          describe=None))
    with pytest.raises(ValueError, match=r"text_encoder must be one of \['bag', 'clip', 'hf'\], got 'sack'"):
        text_tower_kind("sack")
    with pytest.raises(ValueError, match="no tokenizer kind 'morse'"):
        register_text_tower(TextTowerKind(name="sack", tokenizer="morse", build=None, rebuild=None, describe=None))
    assert "sack" not in TEXT_TOWERS and "sack" not in TOWER_TOKENIZERS  # a refused kind leaves no trace


def test_a_registered_tower_trains_resumes_tests_and_predicts(bag, tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "Demo", n_train=4, n_val=2, n_test=2, img_size=64, seed=3)
    settings = ["text_encoder=bag", "text_embed_dim=16", "img_size=32", "base_channel=4", "rec_trans_num_layers1=1",
                "batch_size=2", "num_workers=0", "tensorboard_images=0", "demo_data=False",
                f"train_dataset={data}/Train_Folder", f"val_dataset={data}/Val_Folder",
                f"test_dataset={data}/Test_Folder", f"output_root={tmp_path / 'runs'}"]
    assert train_model.main(["-c", "Config_Demo", "--set", "epochs=1", *settings]) == 0
    session = capsys.readouterr().out.strip().splitlines()[-1]
    assert train_model.main(["-c", "Config_Demo", "--resume", session, "--set", f"output_root={tmp_path / 'runs'}",
                             "epochs=2"]) == 0
    log = capsys.readouterr().err
    assert "text tower a bag of words (tests)" in log and "Epoch 2/2" in log
    session_dir = tmp_path / "runs" / "Demo" / "RecLMIS" / session
    model, _ = build_model_from_checkpoint(str(session_dir / "models" / BEST_NAME))
    assert isinstance(model.text_tower, BagOfWords)
    assert test_cli.main(["-c", "Config_Demo", "--set", *settings, "-t", session]) == 0
    assert "dice_pred" in capsys.readouterr().out
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), cv2.imread(str(next((data / "Test_Folder" / "img").iterdir()))))
    assert test_cli.main(["predict", "--checkpoint", str(session_dir / "models" / BEST_NAME), "--image", str(image),
                          "--text", "Opacity in the lower left lung.", "--out", str(tmp_path / "out" / "scan")]) == 0
    assert (tmp_path / "out" / "scan_mask.png").is_file()

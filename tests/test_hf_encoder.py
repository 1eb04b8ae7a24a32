"""text_encoder="hf": a BERT-family encoder from transformers with its own tokenizer, projected to the model's
width. Tested with a tiny random BERT and a tiny vocabulary written here (transformers is a test dependency)."""

import json
import sys

import pytest
import torch

import test as test_cli
import train_model
from nets import build_model
from nets.hf_encoder import HFTextEncoder, build_hf_text_encoder
from tests.tiny import REPORTS, tiny_config
from utils.checkpoints import build_model_from_checkpoint, frozen_names
from utils.config import Config
from utils.data.demo import make_demo_dataset
from utils.data.tokenizer import HFReportTokenizer, build_tokenizer, tokenize_reports
from utils.inference import commands
from utils.training.checkpoint import checkpoint_payload, save_checkpoint

transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "bilateral", "unilateral", "pulmonary", "infection", "infected",
         "area", "##s", "one", "two", "three", "upper", "middle", "lower", "left", "right", "lung", "and", "no", ",",
         ".", "eof", "xxx"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A 1-layer BERT of width 24 and its WordPiece tokenizer, saved as transformers saves them."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))  # the vocabulary file: transformers 4 and 5
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=24, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=48, max_position_embeddings=40)
    transformers.BertModel(config).save_pretrained(folder)
    return str(folder)


def hf_config(folder: str, **changes) -> Config:
    return tiny_config(text_encoder="hf", hf_text_model=folder, token_len=12, **changes)


def test_tokens_are_cls_pieces_sep_then_padding(tiny_bert):
    tokenizer = HFReportTokenizer(tiny_bert, token_len=8, pad_short_reports=False)
    out = tokenizer(["No infection.", "Bilateral pulmonary infection, two infected areas, upper left lung."])
    cls, sep = tokenizer.sot_token_id, tokenizer.eot_token_id
    ids = [WORDS.index(w) for w in ("no", "infection", ".")]
    assert out.tokens[0].tolist() == [cls, *ids, sep, 0, 0, 0]
    assert out.text_mask[0].tolist() == [1] * 5 + [0] * 3
    assert out.tokens[1, -1] == sep and out.text_mask[1].all() and out.truncated.tolist() == [False, True]
    assert tokenizer.token_strings(out.tokens[0]) == ["no", "infection", "."]
    assert tokenizer.token_strings(out.tokens[1])[:5] == ["bilateral", "pulmonary", "infection", ",", "two"]


def test_the_authors_padding_applies_and_figures_leave_it_out(tiny_bert):
    tokenizer = HFReportTokenizer(tiny_bert, token_len=16, pad_short_reports=True)
    tokens = tokenizer(["No infection."]).tokens[0]
    assert tokenizer.token_strings(tokens)[3:5] == ["eof", "xxx"]
    assert tokenizer.report_token_strings(tokens, "No infection.") == ["no", "infection", "."]
    assert tokenizer.token_strings(tokenizer(["Area areas"]).tokens[0])[:5] == ["area", "area", "s", "eof", "xxx"]


def test_build_tokenizer_and_the_split_tokens_follow_the_config(tiny_bert):
    config = hf_config(tiny_bert)
    assert isinstance(build_tokenizer(config), HFReportTokenizer)
    assert build_tokenizer(config) is build_tokenizer(config)  # one per setting
    split = tokenize_reports(REPORTS, config)
    assert split.tokens.shape == (3, 12) and split.tokens[:, 0].eq(build_tokenizer(config).sot_token_id).all()
    assert split.words_cut.tolist() == [True, True, False]  # 16 and 12 pieces with [CLS] and [SEP] do not fit 12


def test_features_are_the_encoders_own_then_the_projection(tiny_bert):
    tower = build_hf_text_encoder(tiny_bert, embed_dim=16)
    reference = transformers.AutoModel.from_pretrained(tiny_bert).eval()
    tower.eval()
    tokens = HFReportTokenizer(tiny_bert, 12)(REPORTS)
    with torch.no_grad():
        hidden = reference(input_ids=tokens.tokens, attention_mask=tokens.text_mask).last_hidden_state
        expected = hidden @ tower.proj.weight.t() + tower.proj.bias
        assert (tower(tokens.tokens, tokens.text_mask) - expected).abs().max() <= 1e-6
    assert tower.shape.embed_dim == 16 and tower.shape.context_length == 40 and tower.shape.vocab_size == len(WORDS)


def test_frozen_encoder_trainable_projection_in_the_model(tiny_bert):
    model = build_model(hf_config(tiny_bert))
    assert isinstance(model.clip, HFTextEncoder)
    frozen = frozen_names(model)
    assert frozen and all(name.startswith(("clip.model.", "clip.logit_scale")) for name in frozen)
    assert "clip.proj.weight" not in frozen
    model.train()
    assert not model.clip.model.training  # a frozen tower stays in eval mode
    tokens = build_tokenizer(model.config)(REPORTS)
    out = model(torch.rand(3, 3, 32, 32), tokens.tokens, tokens.text_mask)
    (out["logits"].sum() + out["text_rec"].sum()).backward()
    assert model.clip.proj.weight.grad is not None and model.clip.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.clip.model.parameters())
    trainable = build_model(hf_config(tiny_bert, freeze_text_tower=False))
    assert not frozen_names(trainable)


def test_a_checkpoint_rebuilds_its_hf_model(tiny_bert, tmp_path):
    config = hf_config(tiny_bert)
    torch.manual_seed(1)
    model = build_model(config).eval()
    path = str(tmp_path / "best.pth.tar")
    save_checkpoint(checkpoint_payload(model, config, 0, True, {"total": 0.0, "dice": 0.0}), path)
    loaded = build_model_from_checkpoint(path)[0]
    tokens = build_tokenizer(config)(REPORTS)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images, tokens.tokens, tokens.text_mask)["logits"],
                           model(images, tokens.tokens, tokens.text_mask)["logits"])


def test_config_errors_name_the_field(tiny_bert, tmp_path, capsys):
    """The tower and the tokenizer each check their own choice; the training command before any folder."""
    for config, said in ((tiny_config(text_encoder="bert"), r"text_encoder must be one of \['clip', 'hf'"),
                         (tiny_config(text_encoder="hf"), "text_encoder='hf' needs hf_text_model")):
        with pytest.raises(ValueError, match=said):
            build_model(config)
        with pytest.raises(ValueError, match=said):
            build_tokenizer(config)
    for setting, said in (("text_encoder=bert", "text_encoder must be one of"),
                          ("text_encoder=hf", "text_encoder='hf' needs hf_text_model")):
        assert train_model.main(["-c", "Config_Demo", "--set", setting, f"output_root={tmp_path / 'runs'}"]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(FileNotFoundError, match="hf_text_model=.*nowhere"):
        build_model(hf_config(str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="tokenizer of hf_text_model"):
        HFReportTokenizer(str(tmp_path / "nowhere"), 12)


def test_without_transformers_the_tower_and_tokenizer_name_the_extra(tiny_bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    for build in (lambda: build_model(hf_config(tiny_bert)), lambda: HFReportTokenizer(tiny_bert, 12)):
        with pytest.raises(ImportError, match=r"needs transformers: pip install -r requirements-hf\.txt"):
            build()


def test_train_test_and_text_ablation_end_to_end(tiny_bert, tmp_path, capsys):
    root = make_demo_dataset(tmp_path / "Demo", n_train=8, n_val=4, n_test=4, img_size=32, seed=3)
    settings = ["text_encoder='hf'", f"hf_text_model={tiny_bert}", "token_len=12", "img_size=32", "base_channel=4",
                "text_embed_dim=32", "rec_trans_num_layers1=1", "batch_size=4", "num_workers=0", "epochs=1",
                "demo_data=False", f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder",
                f"test_dataset={root}/Test_Folder", f"output_root={tmp_path / 'runs'}"]
    assert train_model.main(["-c", "Config_Demo", "--set", *settings, "--no_progress"]) == 0
    session = next((tmp_path / "runs" / "Demo" / "RecLMIS").iterdir())
    saved = json.loads((session / "config.json").read_text())
    assert saved["text_encoder"] == "hf" and saved["hf_text_model"] == tiny_bert
    assert test_cli.main(["-c", "Config_Demo", "--set", *settings, "-t", str(session), "--text_ablation",
                          "--no_progress", "--device", "cpu"]) == 0
    ablation = json.loads((session / commands.ABLATION_NAME).read_text())
    assert {"true", "shuffled", "empty"} <= set(ablation) and ablation["true"]["images"] == 4

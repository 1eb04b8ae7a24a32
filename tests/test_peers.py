"""The peers (nets/unet_baseline.py, nets/lvit.py, nets/guidedecoder.py) against their authors' code, and the model
registry.

The reference files in tests/data were written from the peers' own code by ``python -m tools.peer_reference``: the
names, shapes and trainability of every tensor of their LViT, U-Net and GuideDecoder, and their output probabilities
on weights filled by ``nets.weights.fill_for_parity`` and seeded inputs. Ours must have the same tensors (the text
tower aside, and GuideDecoder's two projection heads, which its segmentation never uses) and, on the same weights,
the same output.
"""

import os

import numpy as np
import pytest
import torch

from nets import build_model
from nets.lvit import LViT
from nets.models import MODELS, ModelKind, model_kind, register_model
from nets.unet_baseline import UNet
from nets.weights import fill_for_parity, read_state_dict_tsv, state_dict_rows
from tests.tiny import batch, tiny_config, write_clip_file
from tools.peer_reference import TEXT_WIDTH, TOKENS, parity_inputs
from utils.checkpoints import build_model_from_checkpoint

PEERS = ["unet", "lvit", "guidedecoder"]

DATA = os.path.join(os.path.dirname(__file__), "data")


def their_size(name: str):
    """Our network at the peers' fixed sizes: 224 px, width 64, their token counts of width 768 (a random CLIP
    tower of that output width stands in for their BERT, whose features the parity run passes directly)."""
    return build_model(tiny_config(model=name, img_size=224, base_channel=64, token_len=TOKENS[name],
                                   text_embed_dim=TEXT_WIDTH, clip_width=32, clip_layers=1, clip_heads=1))


def load_reference(name: str) -> dict:
    """The reference run of ``name`` (tests/data/<name>_reference.npz): its seed and output probabilities."""
    with np.load(os.path.join(DATA, f"{name}_reference.npz"), allow_pickle=False) as saved:
        return {"seed": int(saved["seed"]), "probabilities": torch.from_numpy(saved["probabilities"])}


def theirs_without_what_we_leave_out(name):
    rows = read_state_dict_tsv(os.path.join(DATA, f"{name}_state_dict.tsv"))
    return {k: v for k, v in rows.items() if ".project_head." not in k}  # GuideDecoder's, unused by segmentation


@pytest.mark.parametrize("name", PEERS)
def test_state_dict_is_theirs(name):
    ours = {k: v for k, v in state_dict_rows(their_size(name)).items() if not k.startswith("clip.")}
    assert ours == theirs_without_what_we_leave_out(name)


def test_only_guidedecoders_projection_heads_are_left_out():
    rows = read_state_dict_tsv(os.path.join(DATA, "guidedecoder_state_dict.tsv"))
    left_out = {k.split(".project_head.")[0] for k in set(rows) - set(theirs_without_what_we_leave_out("guidedecoder"))}
    assert left_out == {"encoder", "text_encoder"}
    for name in ("unet", "lvit"):
        whole = read_state_dict_tsv(os.path.join(DATA, f"{name}_state_dict.tsv"))
        assert theirs_without_what_we_leave_out(name) == whole


@pytest.mark.parametrize("name", PEERS)
def test_output_on_the_same_weights_is_theirs(name):
    reference = load_reference(name)
    model = their_size(name)
    fill_for_parity(model, reference["seed"], skip_prefixes=("clip.",))
    images, text = parity_inputs(name)
    tokens = torch.ones(images.shape[0], TOKENS[name], dtype=torch.long)
    with torch.no_grad():
        logits = model.eval()(images, tokens, torch.ones_like(tokens), text_clip=text)["logits"]
    expected = reference["probabilities"].float()
    assert expected.std() > 0.02  # a reference that is not constant
    torch.testing.assert_close(torch.sigmoid(logits), expected, atol=2e-3, rtol=0)


def test_a_changed_weight_changes_the_output():
    """The parity test can fail: one filled tensor changed moves the U-Net's output off the reference."""
    reference = load_reference("unet")
    model = their_size("unet")
    fill_for_parity(model, reference["seed"])
    with torch.no_grad():
        model.up1.nConvs[0].conv.weight.mul_(1.5)
        images, _ = parity_inputs("unet")
        tokens = torch.ones(images.shape[0], TOKENS["unet"], dtype=torch.long)
        probs = torch.sigmoid(model.eval()(images, tokens, torch.ones_like(tokens))["logits"])
    assert (probs - reference["probabilities"].float()).abs().max() > 0.01


@pytest.mark.parametrize("name,size,width", [("unet", 32, 4), ("unet", 48, 6), ("lvit", 32, 8), ("lvit", 64, 16),
                                             ("guidedecoder", 32, 4), ("guidedecoder", 48, 4)])
def test_builds_and_runs_at_more_than_one_size(name, size, width):
    config = tiny_config(model=name, img_size=size, base_channel=width)
    images, tokens, mask, _ = batch(config)
    model = build_model(config)
    out = model(images, tokens, mask)
    assert set(out) == {"logits"} and out["logits"].shape == (3, 1, size, size)
    out["logits"].mean().backward()
    missing = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    if name == "unet":
        assert not missing
    elif name == "guidedecoder":  # only ConvNeXt's final norm, which feeds their (left out) projection head
        assert {n.rsplit(".", 1)[0] for n in missing} == {"encoder.model.layernorm"}
    else:  # the report's path and every ViT block learn; what their forward never calls does not
        learning = ("text_module", "downVit.CTBN3.", "Encoder_blocks", "reconstruct", "downVit.embeddings", "outc")
        assert not {n for n in missing if any(part in n for part in learning)}
        assert {n.split(".")[0] for n in missing} >= {"pix_module1", "upVit3"}


def test_lvit_and_guidedecoder_read_the_report_and_the_unet_does_not():
    for name, reads in (("lvit", True), ("guidedecoder", True), ("unet", False)):
        config = tiny_config(model=name, base_channel=8)
        torch.manual_seed(0)
        model = build_model(config).eval()
        images, tokens, mask, _ = batch(config)
        other = torch.roll(tokens, 1, dims=0), torch.roll(mask, 1, dims=0)
        with torch.no_grad():
            same = torch.equal(model(images, tokens, mask)["logits"], model(images, *other)["logits"])
        assert same != reads, name


def test_lvit_keeps_a_frozen_tower_in_eval_mode():
    model = build_model(tiny_config(model="lvit", base_channel=8)).train()
    assert not model.text_tower.training
    assert not any(p.requires_grad for p in model.text_tower.parameters())


def test_lvit_refuses_a_width_its_heads_cannot_split():
    with pytest.raises(ValueError, match="base_channel to be a multiple of 8"):
        LViT(tiny_config(model="lvit", base_channel=4))


def test_unet_refuses_a_text_tower():
    with pytest.raises(ValueError, match="takes no text tower"):
        UNet(tiny_config(model="unet"), text_tower=torch.nn.Identity())


def test_registry_names_the_models_and_refuses_a_clash():
    assert {"reclmis", "unet", "lvit", "guidedecoder"} <= set(MODELS)
    with pytest.raises(ValueError, match="model must be one of .*'lvit'.*got 'vnet'"):
        model_kind("vnet")
    with pytest.raises(ValueError, match="registered already"):
        register_model(ModelKind(name="unet2", folder="UNet", build=UNet))
    assert "unet2" not in MODELS


def _their_file(model, path, keep=lambda name: not name.startswith("clip."), rename=None, extra=None):
    """``model``'s weights written as the peer's own code writes a checkpoint: no config, its tower left out (or
    renamed), DataParallel's ``module.`` prefix."""
    state = {f"module.{rename(n) if rename else n}": t for n, t in model.state_dict().items() if keep(n)}
    state.update(extra or {})
    torch.save({"epoch": 3, "model": "theirs", "state_dict": state}, path)
    return str(path)


def test_an_lvit_checkpoint_of_their_code_loads_with_the_tower_from_the_config(tmp_path):
    config = tiny_config(model="lvit", base_channel=8, clip_weights=write_clip_file(tmp_path / "tower.pt"),
                         text_embed_dim=32)
    torch.manual_seed(3)
    trained = build_model(config).eval()
    loaded, _ = build_model_from_checkpoint(_their_file(trained, tmp_path / "lvit.pth.tar"), config)
    images, tokens, mask, _ = batch(config)
    with torch.no_grad():
        assert torch.equal(loaded(images, tokens, mask)["logits"], trained(images, tokens, mask)["logits"])


def test_a_guidedecoder_checkpoint_of_their_code_loads_its_bert_into_the_hf_tower(tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "bert"
    (folder).mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "left", "lung"]) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    transformers.BertModel(transformers.BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32,
                                                   max_position_embeddings=16)).save_pretrained(folder)
    config = tiny_config(model="guidedecoder", text_encoder="hf", hf_text_model=str(folder), text_embed_dim=16,
                         token_len=8)
    torch.manual_seed(4)
    trained = build_model(config).eval()
    with torch.no_grad():  # their network has no projection after BERT: ours, the identity
        trained.text_tower.proj.weight.copy_(torch.eye(16))
        trained.text_tower.proj.bias.zero_()
        trained.text_tower.model.embeddings.word_embeddings.weight.mul_(3)  # a BERT unlike the folder's
    heads = {"module.encoder.project_head.weight": torch.zeros(768, 768),  # theirs, unused by the mask
             "module.text_encoder.project_head.0.weight": torch.zeros(768, 768),
             "module.text_encoder.model.cls.predictions.bias": torch.zeros(7),  # CXR-BERT's own heads
             "module.text_encoder.model.cls_projection_head.dense_to_hidden.weight": torch.zeros(16, 16)}
    in_file = lambda n: n.startswith("clip.model.") and not n.startswith("clip.model.pooler.")  # noqa: E731
    path = _their_file(trained, tmp_path / "gd.pth.tar", keep=lambda n: not n.startswith("clip.") or in_file(n),
                       rename=lambda n: n.replace("clip.model.", "text_encoder.model.bert."), extra=heads)
    loaded, _ = build_model_from_checkpoint(path, config)
    tokens = torch.tensor([[2, 5, 6, 3, 0, 0, 0, 0]] * 2)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images, tokens, tokens > 0)["logits"], trained(images, tokens, tokens > 0)["logits"])
    with pytest.raises(ValueError, match="set text_embed_dim=16"):
        build_model_from_checkpoint(path, config.replace(text_embed_dim=8))

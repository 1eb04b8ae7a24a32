"""tools.authors_epoch: their step beside ours, on a stand-in for the authors' checkout written here (their code is
not part of this repository). The stand-in keeps what the tool relies on: ``nets/RecLMIS.py`` importing its siblings
relatively and loading ``nets/ViT-B-32.pt`` beside itself, fairseq imported inside the forward, a ``.cuda()`` call,
a bare ``except`` that turns the auxiliary losses off, and ``utils.py`` with ``WeightedDiceBCE``."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.tiny import tiny_config, write_clip_file
from tools import authors_epoch
from tools.peer_reference import checkout_commit

RECLMIS = '''
import os
import torch
from torch import nn
from .module_clip import CLIP


class RecLMIS(nn.Module):
    def __init__(self, global_config, config, n_channels=3, n_classes=1):
        super().__init__()
        self.loss_weight = global_config.loss_weight
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ViT-B-32.pt")
        state = torch.load(path, map_location="cpu")
        self.clip = CLIP(*state["token_embedding.weight"].shape)
        self.clip.load_state_dict(state, strict=False)
        for param in self.clip.parameters():
            param.requires_grad = False
        self.conv = nn.Conv2d(n_channels, n_classes, 3, padding=1)
        self.base_channel = config.base_channel
        self.aux = True

    def forward(self, images, masks, text_token, text_mask):
        x = self.conv(images.float())
        losses = {}
        if self.aux:
            try:
                from fairseq import utils
                words = utils.softmax(self.clip.token_embedding(text_token).sum(-1), dim=-1)
                keep = torch.ones(1).cuda()
                losses = {"loss_ccl": (words * keep).sum() * x.mean(), "loss_text_rec": x.mean() ** 2,
                          "loss_img_rec": x.std()}
            except:
                self.aux = False
        return torch.sigmoid(x), losses
'''

MODULE_CLIP = '''
from torch import nn


class CLIP(nn.Module):
    def __init__(self, *shapes):
        super().__init__()
        self.token_embedding = nn.Embedding(*(shapes if len(shapes) == 2 else (49408, 2)))
'''

UTILS = '''
from torch import nn


class WeightedDiceBCE(nn.Module):
    def __init__(self, dice_weight=1, BCE_weight=1):
        super().__init__()
        self.bce = nn.BCELoss()

    def forward(self, inputs, targets):
        return self.bce(inputs.squeeze(1), targets)
'''


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "RecLMIS"
    (root / "nets").mkdir(parents=True)
    (root / "nets" / "RecLMIS.py").write_text(textwrap.dedent(RECLMIS))
    (root / "nets" / "module_clip.py").write_text(textwrap.dedent(MODULE_CLIP))
    (root / "utils.py").write_text(textwrap.dedent(UTILS))
    return root


@pytest.fixture
def clean_modules():
    """Their modules and the fairseq stand-in leave ``sys.modules`` after each test."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith((authors_epoch.PACKAGE, "fairseq")):
            del sys.modules[name]


@pytest.fixture
def small_size(monkeypatch):
    monkeypatch.setattr(authors_epoch, "AUTHORS_SIZE", {"img_size": 32, "base_channel": 4})


@pytest.fixture
def tiny_qata(qata_set, monkeypatch):
    """The tool's config: a tiny RecLMIS on a generated QaTa-layout set, whatever -c and --set say."""
    config = tiny_config(**{k: getattr(qata_set, k) for k in ("train_dataset", "val_dataset", "test_dataset",
                                                              "task_name", "batch_size", "num_workers")})
    monkeypatch.setattr(authors_epoch, "load_config", lambda name, overrides: config)
    return config


def _listing(root):
    return sorted((path, os.path.getsize(os.path.join(path, name)))
                  for path, _, names in os.walk(root) for name in names)


def test_both_step_alternately_on_the_same_batches_and_their_checkout_is_not_written(
        checkout, tiny_qata, tmp_path, small_size, clean_modules, monkeypatch, capsys):
    before = _listing(checkout)
    cuda = torch.Tensor.cuda
    seen = {"authors": [], "ours": []}
    original_call = authors_epoch.AuthorsStep.__call__
    original_step = authors_epoch.train_step

    def their_call(self, batch):
        seen["authors"].append(list(batch["name"]))
        return original_call(self, batch)

    def our_step(model, criterion, batch, *args, **kwargs):
        seen["ours"].append(list(batch["name"]))
        return original_step(model, criterion, batch, *args, **kwargs)

    monkeypatch.setattr(authors_epoch.AuthorsStep, "__call__", their_call)
    monkeypatch.setattr(authors_epoch, "train_step", our_step)
    out = tmp_path / "times.json"
    code = authors_epoch.main(["--authors", str(checkout), "--device", "cpu", "--batches", "1", "--warmup", "1",
                               "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "authors'" in printed and "ours / authors' per step" in printed and "fairseq stand-in" in printed
    result = json.loads(out.read_text())
    assert len(result["authors"]) == len(result["ours"]) == 1
    assert result["clip_random"] and result["fairseq_stand_in"]
    assert seen["authors"] == seen["ours"] and len(seen["ours"]) == 2  # a warm-up and a timed step, same batches
    assert _listing(checkout) == before
    assert torch.Tensor.cuda is cuda  # the CPU run's .cuda() stand-in is gone after it
    assert "fairseq" in sys.modules  # the stand-in, removed by clean_modules


def test_their_step_trains_their_network_with_all_four_losses(checkout, tmp_path, small_size, clean_modules):
    authors_epoch.fairseq_stand_in()
    authors = authors_epoch.load_authors(str(checkout), str(tmp_path))
    config = tiny_config()
    step = authors_epoch.AuthorsStep(authors, config, torch.device("cpu"))
    before = step.model.conv.weight.detach().clone()
    images = torch.rand(2, 3, 32, 32)
    batch = {"image": images, "label": (images[:, 0] > 0.5).float(), "text_token": torch.randint(1, 99, (2, 18)),
             "text_mask": torch.ones(2, 18)}
    step(batch)
    step.check_branch()
    assert step.loss_names == ["loss_ccl", "loss_criterion", "loss_img_rec", "loss_text_rec"]
    assert not torch.equal(step.model.conv.weight, before)
    assert step.weights == {"loss_criterion": 5.0, "loss_ccl": 0.2, "loss_text_rec": 1.0, "loss_img_rec": 1.0}


def test_a_hidden_error_in_their_branch_stops_the_tool(checkout, tmp_path, small_size, clean_modules):
    # No fairseq and no stand-in: their bare except turns the branch off, which would time a cheaper step.
    sys.modules["fairseq"] = None  # makes "from fairseq import utils" raise ImportError
    authors = authors_epoch.load_authors(str(checkout), str(tmp_path))
    step = authors_epoch.AuthorsStep(authors, tiny_config(), torch.device("cpu"))
    images = torch.rand(2, 3, 32, 32)
    step({"image": images, "label": (images[:, 0] > 0.5).float(), "text_token": torch.randint(1, 99, (2, 18)),
          "text_mask": torch.ones(2, 18)})
    with pytest.raises(RuntimeError, match="auxiliary branch did not run"):
        step.check_branch()


def test_other_sizes_wrong_checkouts_and_a_missing_clip_file_are_refused(checkout, tmp_path, clean_modules, capsys):
    assert authors_epoch.main(["--authors", str(checkout), "--set", "img_size=112"]) == 2
    assert "runs only at" in capsys.readouterr().err
    assert authors_epoch.main(["--authors", str(tmp_path), "--device", "cpu"]) == 2
    assert "give a checkout of github ShawnHuang497/RecLMIS" in capsys.readouterr().err
    assert authors_epoch.main(["--authors", str(checkout), "--device", "cpu", "--clip", str(tmp_path / "x.pt")]) == 2
    assert "--clip" in capsys.readouterr().err


def test_a_given_clip_file_is_linked_not_copied_or_written(checkout, tmp_path, clean_modules):
    clip = tmp_path / "ViT-B-32.pt"
    torch.save({"token_embedding.weight": torch.zeros(49408, 2)}, clip)
    work = tmp_path / "work"
    work.mkdir()
    authors = authors_epoch.load_authors(str(checkout), str(work), clip=str(clip))
    assert not authors.clip_random
    assert os.path.realpath(work / "nets" / "ViT-B-32.pt") == str(clip)


def test_a_given_clip_file_feeds_both_text_towers(checkout, tiny_qata, tmp_path, small_size, clean_modules,
                                                  monkeypatch):
    clip = write_clip_file(tmp_path / "clip.pt")
    built = []
    original = authors_epoch.build_model

    def build(config):
        built.append(config.clip_weights)
        return original(config)

    monkeypatch.setattr(authors_epoch, "build_model", build)
    out = tmp_path / "times.json"
    assert authors_epoch.main(["--authors", str(checkout), "--device", "cpu", "--batches", "1", "--warmup", "0",
                               "--clip", clip, "--json", str(out)]) == 0
    assert built == [clip] and not json.loads(out.read_text())["clip_random"]


def test_a_split_too_small_for_the_warm_up_is_an_error_not_a_traceback(checkout, tiny_qata, small_size, clean_modules,
                                                                        capsys):
    assert authors_epoch.main(["--authors", str(checkout), "--device", "cpu", "--warmup", "50"]) == 2
    assert "no batch after 50 warm-up steps" in capsys.readouterr().err


def test_the_commit_recorded_is_the_checkouts_own_or_unknown(tmp_path):
    """A copy of their code without its .git, inside another repository, must not report that repository's commit."""
    repo = tmp_path / "their code"
    (repo / "nets").mkdir(parents=True)
    (repo / "nets" / "RecLMIS.py").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for command in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(git + command, check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert checkout_commit(str(repo)) == head
    assert checkout_commit(str(repo / "nets")) == "unknown"
    assert checkout_commit(str(tmp_path)) == "unknown"

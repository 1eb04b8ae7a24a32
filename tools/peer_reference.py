"""Write the peers' reference files from their own code: the tensors of their models, and their output on seeded
weights and inputs, which tests/test_peers.py checks our networks against without their code.

    python -m tools.peer_reference [--lvit LVIT_CHECKOUT] [--guidedecoder GUIDEDECODER_CHECKOUT] [--out tests/data]

LVIT_CHECKOUT is a checkout of github HUANGLIZI/LViT (its ``nets/`` is imported from there; it needs timm);
GUIDEDECODER_CHECKOUT one of github Junelin2333/LanGuideMedSeg-MICCAI2023 (its ``utils/model.py`` and
``utils/layers.py``; they need monai, einops and transformers, none of which this project needs). For each network
(LViT and its U-Net at 224 px, width 64, 10 token features of width 768; GuideDecoder at 224 px with 24 of width
768), this writes ``<name>_state_dict.tsv`` (every tensor: name, shape, trainable) and ``<name>_reference.npz``: the
network in eval mode, its weights filled by :func:`nets.weights.fill_for_parity`, run on a seeded image batch and
seeded token features, the output probabilities stored in fp16 with the seeds and shapes.

GuideDecoder builds its encoders with ``AutoModel.from_pretrained``, which would download them: here ConvNeXt-Tiny is
built from transformers' default ``ConvNextConfig`` (that of facebook/convnext-tiny-224), and CXR-BERT is replaced by
a stand-in with no weights that returns the seeded token features as every hidden state. Their
``text_encoder.model`` (CXR-BERT itself) is therefore not in the tsv: it is a transformers model, the hf text tower
here.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import torch

from nets.weights import fill_for_parity, write_state_dict_tsv

SEED = 0
IMG_SIZE = 224
TEXT_WIDTH = 768  # BERT-base's width (LViT's BERT, GuideDecoder's CXR-BERT)
TOKENS = {"lvit": 10, "unet": 10, "guidedecoder": 24}  # LViT reads 10 token embeddings, GuideDecoder 24 tokens


def parity_inputs(name: str, batch: int = 2):
    """The seeded image batch ``[B, 3, 224, 224]`` and token features ``[B, TOKENS[name], 768]`` (None for the
    U-Net) of the reference runs."""
    generator = torch.Generator().manual_seed(SEED + 1)
    images = torch.randn(batch, 3, IMG_SIZE, IMG_SIZE, generator=generator)
    text = torch.randn(batch, TOKENS[name], TEXT_WIDTH, generator=generator) if name != "unet" else None
    return images, text


def package_from_folder(name: str, folder: str, first: str):
    """Make ``folder`` importable as the package ``name`` (their folders are called nets and utils, like ours, and
    have no ``__init__.py``)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, first),
                                                  submodule_search_locations=[folder])
    sys.modules[name] = importlib.util.module_from_spec(spec)


def _lvit_networks(checkout: str):
    """Their LViT and U-Net, from ``checkout/nets``: ``{name: (network, call(images, text) -> probabilities)}``."""
    package_from_folder("lvit_reference", os.path.join(os.path.abspath(checkout), "nets"), "LViT.py")
    lvit = importlib.import_module("lvit_reference.LViT").LViT(SimpleNamespace(base_channel=64), n_channels=3,
                                                                n_classes=1)
    unet = importlib.import_module("lvit_reference.UNet").UNet(n_channels=3, n_classes=1)
    return {"lvit": (lvit, lvit), "unet": (unet, lambda images, text: unet(images))}


class _FixedText(torch.nn.Module):
    """CXR-BERT's stand-in: every hidden state is ``features``, the token features of the reference run."""

    features = None

    def forward(self, input_ids, attention_mask, **_):
        return {"hidden_states": (self.features,) * 3}


def _guidedecoder_network(checkout: str):
    """Their LanGuideMedSeg, from ``checkout/utils``, with ConvNeXt-Tiny built from its default config and
    :class:`_FixedText` for CXR-BERT: ``{"guidedecoder": (network, call(images, text) -> probabilities)}``."""
    import transformers  # their code needs it; this tool is the only place that runs their code

    def from_pretrained(name, *args, **kwargs):
        return transformers.ConvNextModel(transformers.ConvNextConfig()) if "convnext" in name else _FixedText()

    package_from_folder("guidedecoder_reference", os.path.join(os.path.abspath(checkout), "utils"), "model.py")
    original = transformers.AutoModel.from_pretrained
    transformers.AutoModel.from_pretrained = from_pretrained
    try:
        network = importlib.import_module("guidedecoder_reference.model").LanGuideMedSeg(
            "cxr-bert", "convnext-tiny", project_dim=768)
    finally:
        transformers.AutoModel.from_pretrained = original

    def call(images, text):
        network.text_encoder.model.features = text
        ids = torch.ones(text.shape[:2], dtype=torch.long)
        return network([images, {"input_ids": ids, "attention_mask": ids}])

    return {"guidedecoder": (network, call)}


def checkout_commit(checkout: str) -> str:
    """The commit a git checkout is at, or ``unknown`` (no git, or ``checkout`` is not the top of a git checkout: a
    copy without its ``.git`` inside another repository must not report that repository's commit)."""
    try:
        top, commit = subprocess.run(["git", "-C", checkout, "rev-parse", "--show-toplevel", "HEAD"],
                                     capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError, ValueError):
        return "unknown"
    return commit if os.path.realpath(top) == os.path.realpath(checkout) else "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the peers' reference tensors and outputs from their code.")
    parser.add_argument("--lvit", help="a checkout of github HUANGLIZI/LViT")
    parser.add_argument("--guidedecoder", help="a checkout of github Junelin2333/LanGuideMedSeg-MICCAI2023")
    parser.add_argument("--out", default=os.path.join("tests", "data"), help="where the files go")
    args = parser.parse_args(argv)
    networks = {}
    if args.lvit:
        networks.update({name: (net, f"github HUANGLIZI/LViT at {checkout_commit(args.lvit)}")
                         for name, net in _lvit_networks(args.lvit).items()})
    if args.guidedecoder:
        source = f"github Junelin2333/LanGuideMedSeg-MICCAI2023 at {checkout_commit(args.guidedecoder)}"
        networks.update({name: (net, source) for name, net in _guidedecoder_network(args.guidedecoder).items()})
    if not networks:
        parser.error("give --lvit, --guidedecoder or both")
    os.makedirs(args.out, exist_ok=True)
    for name, ((network, call), source) in networks.items():
        tsv = os.path.join(args.out, f"{name}_state_dict.tsv")
        write_state_dict_tsv(network, tsv, f"{name} from {source}")
        fill_for_parity(network, SEED)
        images, text = parity_inputs(name)
        network.eval()
        with torch.no_grad():
            probs = call(images, text)
        path = os.path.join(args.out, f"{name}_reference.npz")
        np.savez_compressed(path, source=np.array(source), seed=SEED, img_size=IMG_SIZE, tokens=TOKENS[name],
                            text_width=TEXT_WIDTH, date=np.array(datetime.date.today().isoformat()),
                            probabilities=probs.half().numpy())
        print(f"{name}: {tsv}, {path} ({sum(p.numel() for p in network.parameters()):,} parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Parameter counts and FLOPs of a RecLMIS model.

Command: ``python -m tools.summary [-c Config_QaTa] [--set key=value ...] [--json out.json]``. It builds the model
at the config's size with a random text tower (the counts do not depend on the weights) and prints, per
top-level module, the parameters and whether the inference path runs it, then the totals and the FLOPs of one
image. FLOPs are counted by ``torch.utils.flop_counter`` (matrix products and convolutions, 2 FLOPs per
multiply-accumulate); MACs (multiply-accumulates, half the FLOPs) are printed beside them, because the paper's
24.1 G and its peers' tables are MACs as ``thop`` counts them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nets import build_model
from nets.models import model_kind
from utils.cli import add_config_flags
from utils.config import load_config


def _count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def vocab_size(model: nn.Module) -> int:
    """The vocabulary of ``model``'s text tower (the config's CLIP vocabulary for a network without one)."""
    return model.text_tower.shape.vocab_size if model.text_tower is not None else model.config.clip_vocab_size


def _dummy_inputs(model: nn.Module, batch: int):
    cfg = model.config
    images = torch.rand(batch, cfg.n_channels, cfg.img_size, cfg.img_size)
    tokens = torch.zeros(batch, cfg.token_len, dtype=torch.long)
    vocab = vocab_size(model)
    tokens[:, 0] = vocab - 2  # start token, then words, then the end token
    tokens[:, 1:-1] = 1000
    tokens[:, -1] = vocab - 1
    return images, tokens, torch.ones_like(tokens)


def summarize(model: nn.Module, batch: int = 1) -> Dict:
    """Counts for ``model`` (any network of the registry, :mod:`nets.models`) at its config's input size.

    Returns:
        dict with ``modules`` (name, params, trainable, on the inference path) and the totals: ``total``,
        ``trainable``, ``frozen``, ``text_tower``, ``inference_trainable`` (trainable parameters of the modules the
        inference path runs), ``inference_used`` (those of them that reach the logits; excludes the dead
        ``conv_sig``), ``flops_inference`` and ``flops_full`` (with the auxiliary branch), and the same as MACs
        (``macs_inference``, ``macs_full``, half the FLOPs), per ``batch`` images.
    """
    was_training = model.training
    model.eval()
    ran: List[str] = []
    hooks = [child.register_forward_hook(lambda *_, name=name: ran.append(name))
             for name, child in model.named_children()]
    images, tokens, mask = _dummy_inputs(model, batch)
    try:
        with FlopCounterMode(display=False) as counter:
            logits = model(images, tokens, mask)["logits"]
        flops_inference = counter.get_total_flops()
        for hook in hooks:
            hook.remove()
        model.zero_grad(set_to_none=True)
        logits.sum().backward()
        used = sum(p.numel() for p in model.parameters() if p.grad is not None)
        model.zero_grad(set_to_none=True)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images, tokens, mask, return_aux=True)
        flops_full = counter.get_total_flops()
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    modules = [{"name": name, "params": _count(child), "trainable": _count(child, True), "inference": name in ran}
               for name, child in model.named_children()]
    return {
        "modules": modules,
        "total": _count(model),
        "trainable": _count(model, True),
        "frozen": _count(model) - _count(model, True),
        "text_tower": _count(model.text_tower) if model.text_tower is not None else 0,
        "inference_trainable": sum(m["trainable"] for m in modules if m["inference"]),
        "inference_used": used,
        "flops_inference": flops_inference,
        "flops_full": flops_full,
        "macs_inference": flops_inference // 2,  # the counter counts 2 FLOPs per multiply-accumulate
        "macs_full": flops_full // 2,
        "batch": batch,
    }


def format_summary(summary: Dict, title: str = "") -> str:
    rows = [f"{'module':<18}{'params':>14}{'trainable':>14}  inference path"]
    for m in summary["modules"]:
        rows.append(f"{m['name']:<18}{m['params']:>14,}{m['trainable']:>14,}  {'yes' if m['inference'] else '-'}")
    per = f"per {summary['batch']} image(s)"
    rows += [
        "",
        f"{'total held in memory':<44}{summary['total']:>16,}",
        f"{'trainable':<44}{summary['trainable']:>16,}",
        f"{'frozen (the text tower)':<44}{summary['frozen']:>16,}",
        f"{'trainable on the inference path':<44}{summary['inference_trainable']:>16,}",
        f"{'  of which reach the logits':<44}{summary['inference_used']:>16,}",
        f"{'text tower (run at inference)':<44}{summary['text_tower']:>16,}",
        f"{'GFLOPs, inference path, ' + per:<44}{summary['flops_inference'] / 1e9:>16.2f}",
        f"{'GFLOPs, with the auxiliary branch, ' + per:<44}{summary['flops_full'] / 1e9:>16.2f}",
        f"{'GMACs, inference path, ' + per:<44}{summary['macs_inference'] / 1e9:>16.2f}",
        f"{'GMACs, with the auxiliary branch, ' + per:<44}{summary['macs_full'] / 1e9:>16.2f}",
        "(matrix products and convolutions; 1 MAC = 1 multiply-accumulate = 2 FLOPs. The paper's 24.1 G and its",
        " peers' tables count MACs, as thop does: compare them with the GMACs)",
    ]
    return "\n".join(([title] if title else []) + rows)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.summary", description=__doc__.split("\n\n")[0])
    add_config_flags(parser, device=False)
    parser.add_argument("--batch", type=int, default=1, help="images per forward for the FLOP count")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set).replace(clip_weights=None)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        parser.error(str(error))
    torch.manual_seed(0)
    summary = summarize(build_model(config), batch=args.batch)
    print(format_summary(summary, f"{model_kind(config.model).folder}, {args.config}: img_size {config.img_size}, "
                                  f"base_channel "
                                  f"{config.base_channel}, token_len {config.token_len}, "
                                  f"reconstruction layers {config.rec_trans_num_layers1}"))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

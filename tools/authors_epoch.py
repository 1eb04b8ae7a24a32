"""The authors' own training step beside ours, on the same batches: ``python -m tools.authors_epoch``.

    python -m tools.authors_epoch --authors CHECKOUT [-c Config_QaTa] [--set KEY=VALUE ...] [--device cuda]
                                  [--batches N] [--clip FILE] [--json PATH]

CHECKOUT is a checkout of github ShawnHuang497/RecLMIS. Both networks train on the same batches of the config's
training loader (augmented as ours trains), alternating batch by batch: a step of theirs (their model, their
``WeightedDiceBCE`` at their weight 0.5/0.5, the config's loss weights under their names, Adam on what requires a
gradient), then a step of ours (``train_model.py``'s step). A step is timed from the batch on the host to the end of
the optimizer step, the copy to the device included. The first ``--warmup`` steps of each are not counted; the
table gives the median seconds per step, images per second, and what one epoch of the config's training split
costs at that rate (loading, validation and checkpoints aside). What their code needs, and how it is met without
changing it:

- their network is fixed at 224 px and base width 64 (its bottleneck is 14x14 by 512 channels): other sizes are
  refused;
- their modules import timm and einops, and their loss module OpenCV, scikit-learn and pandas, none of which this
  project needs: install them beside it to run this tool;
- fairseq, whose softmax their attention imports inside its forward: when fairseq is not installed, a stand-in with
  an fp32 softmax is put in its place (without one, their code silently drops three of its four losses);
- their CLIP file beside their model (``nets/ViT-B-32.pt``): ``--clip FILE`` (OpenAI's ViT-B/32, then our tower
  loads it too), else one of its shapes with random weights (ours random too; it costs the same time); their
  ``nets/`` is copied to a temporary folder for this, so their checkout is never written;
- on the CPU, their ``.cuda()`` calls (in their masking) leave the tensor where it is.

After the first step the tool checks that their auxiliary branch ran: their bare ``except`` turns it off for good on
any error, which would time a cheaper step. ``tools/gpu_epoch.sh`` runs this tool on a lent GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import types
from typing import Dict, List

import torch
import torch.nn.functional as F

from Load_Dataset import build_dataloaders
from nets import build_model
from tools.peer_reference import checkout_commit, package_from_folder
from utils.cli import add_config_flags
from utils.config import Config, load_config
from utils.misc import get_device, to_device
from utils.timing import seconds_of
from utils.training.engine import train_step
from utils.training.losses import build_criterion
from utils.training.schedulers import build_optimizer

AUTHORS_SIZE = {"img_size": 224, "base_channel": 64}
CLIP_FILE = "ViT-B-32.pt"
# OpenAI's ViT-B/32, in the order of their CLIP constructor's arguments.
CLIP_SHAPES = (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
PACKAGE = "authors_reclmis"


def check_size(config: Config) -> None:
    """Refuse a config the authors' network cannot run (it is built for one size only)."""
    wrong = {key: getattr(config, key) for key, value in AUTHORS_SIZE.items() if getattr(config, key) != value}
    if wrong:
        raise ValueError(f"the authors' network runs only at {AUTHORS_SIZE} (a 14x14 bottleneck of 512 channels); "
                         f"this config has {wrong}: use Config_QaTa or set those values")


def _fp32_softmax(x: torch.Tensor, dim: int, onnx_trace: bool = False) -> torch.Tensor:
    return F.softmax(x, dim=dim, dtype=torch.float32)


def fairseq_stand_in() -> bool:
    """Put a module ``fairseq.utils`` with an fp32 ``softmax`` in ``sys.modules`` unless fairseq is installed;
    True when the stand-in is used."""
    if "fairseq" in sys.modules or importlib.util.find_spec("fairseq") is not None:
        return False
    package, utils = types.ModuleType("fairseq"), types.ModuleType("fairseq.utils")
    utils.softmax = _fp32_softmax
    package.utils = utils
    sys.modules.update({"fairseq": package, "fairseq.utils": utils})
    return True


@contextlib.contextmanager
def cuda_calls_stay(device: torch.device):
    """On the CPU, ``Tensor.cuda()`` returns the tensor itself while the block runs (their masking calls it)."""
    if device.type == "cuda":
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def load_authors(checkout: str, workdir: str, clip: str = None) -> types.SimpleNamespace:
    """Their network and loss modules, imported from a copy of ``checkout/nets`` in ``workdir`` (with the CLIP file
    their network loads: ``clip`` linked there, or random weights of its shapes written there) and from
    ``checkout/utils.py``. Returns ``SimpleNamespace(model=<their module RecLMIS.py>, losses=<their utils.py>,
    clip_random=bool)``."""
    nets = os.path.join(os.path.abspath(checkout), "nets")
    losses_file = os.path.join(os.path.abspath(checkout), "utils.py")
    if not (os.path.isfile(os.path.join(nets, "RecLMIS.py")) and os.path.isfile(losses_file)):
        raise FileNotFoundError(f"{checkout}: no nets/RecLMIS.py and utils.py; give a checkout of github "
                                "ShawnHuang497/RecLMIS")
    copy = os.path.join(workdir, "nets")
    shutil.copytree(nets, copy, ignore=shutil.ignore_patterns(CLIP_FILE, "__pycache__"))
    package_from_folder(PACKAGE, copy, "RecLMIS.py")
    model = importlib.import_module(f"{PACKAGE}.RecLMIS")
    if clip:
        if not os.path.isfile(clip):
            raise FileNotFoundError(f"--clip {clip}: no such file (OpenAI's ViT-B-32.pt)")
        os.symlink(os.path.abspath(clip), os.path.join(copy, CLIP_FILE))
    else:
        weights = importlib.import_module(f"{PACKAGE}.module_clip").CLIP(*CLIP_SHAPES).state_dict()
        torch.save(weights, os.path.join(copy, CLIP_FILE))
    spec = importlib.util.spec_from_file_location(f"{PACKAGE}_losses", losses_file)
    losses = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(losses)
    return types.SimpleNamespace(model=model, losses=losses, clip_random=not clip)


def their_configs(config: Config):
    """The two config objects their network takes: the global one (loss weights under their names) and the model's
    (their ``get_ViT_config`` fields, from ours)."""
    weights = {"loss_criterion": config.loss_weight_seg, "loss_ccl": config.loss_weight_ccl,
               "loss_text_rec": config.loss_weight_text_rec, "loss_img_rec": config.loss_weight_img_rec}
    model = types.SimpleNamespace(
        base_channel=config.base_channel, clip_backbone="ViT-B/32", text_mask_rate=config.text_mask_rate,
        img_mask_rate=config.img_mask_rate, pool_mode="max_pool", rec_trans_num_layers1=config.rec_trans_num_layers1,
        mask_mode=config.mask_mode, frozen_clip=True, mask_mode_dist_random=config.mask_mode_dist_random,
        dropout=config.dropout, dropout_value=config.dropout_value)
    return types.SimpleNamespace(loss_weight=weights), model


class AuthorsStep:
    """One training step of the authors' code, as their ``train_one_epoch`` takes it: their network returns the
    sigmoid map and a dict of auxiliary losses; the total is their weighted sum of the means."""

    def __init__(self, authors: types.SimpleNamespace, config: Config, device: torch.device):
        global_config, model_config = their_configs(config)
        self.weights = global_config.loss_weight
        self.device = device
        self.model = authors.model.RecLMIS(global_config, model_config, n_channels=config.n_channels,
                                           n_classes=config.n_labels).to(device).train()
        self.criterion = authors.losses.WeightedDiceBCE(dice_weight=0.5, BCE_weight=0.5)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.learning_rate)
        self.loss_names: List[str] = []

    def __call__(self, batch: dict) -> None:
        images, masks, tokens, mask = to_device(batch, self.device)  # copied as our step copies its batch
        with cuda_calls_stay(self.device):
            preds, losses = self.model(images, masks, tokens, mask)
        losses["loss_criterion"] = self.criterion(preds, masks.float())
        total = sum(self.weights[name] * value.mean() for name, value in losses.items())
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        self.loss_names = sorted(losses)

    def check_branch(self) -> None:
        """Stop when their auxiliary branch did not run (their bare ``except`` caught an error)."""
        if not self.model.aux or set(self.loss_names) != set(self.weights):
            raise RuntimeError(f"the authors' auxiliary branch did not run (their losses: {self.loss_names}); "
                               "their code turned it off after an error it hides. Check that fairseq or the "
                               "stand-in is importable and their dependencies are installed.")


def compare_steps(config: Config, device: torch.device, authors: types.SimpleNamespace, batches: int,
                  warmup: int = 2) -> Dict:
    """Alternate their step and ours on ``batches`` batches of the training loader (after ``warmup`` of each,
    uncounted). Returns ``{"authors": [s, ...], "ours": [s, ...], "batch_size", "train_images"}``."""
    check_size(config)
    torch.manual_seed(config.seed)
    loader = build_dataloaders(config, ("train",), device=device)["train"]
    loader.sampler.set_epoch(0)
    loader.dataset.set_epoch_seed(config.seed)
    theirs = AuthorsStep(authors, config, device)
    model = build_model(config).to(device).train()
    criterion, optimizer = build_criterion(config), build_optimizer(config, model)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")  # as the Trainer's
    times = {"authors": [], "ours": []}
    for index, batch in enumerate(loader):
        if index >= warmup + batches:
            break
        their_s = seconds_of(functools.partial(theirs, batch), device)
        if index == 0:
            theirs.check_branch()
        our_s = seconds_of(functools.partial(train_step, model, criterion, batch, optimizer, device, amp=config.amp,
                                             scaler=scaler),
                           device)
        if index >= warmup:
            times["authors"].append(their_s)
            times["ours"].append(our_s)
    if not times["ours"]:
        raise ValueError(f"the training split gave no batch after {warmup} warm-up steps; use a larger split")
    return {**times, "batch_size": config.batch_size, "train_images": len(loader.dataset)}


def format_comparison(result: Dict) -> str:
    """The comparison as a table: median seconds per step, images per second, an epoch's steps, the ratio."""
    batch, images = result["batch_size"], result["train_images"]
    steps = -(-images // batch)
    medians = {who: statistics.median(result[who]) for who in ("authors", "ours")}
    lines = [f"training steps at batch {batch} ({len(result['ours'])} timed steps each, alternating); an epoch of "
             f"{images} training images is {steps} steps",
             f"{'code':<10}{'s per step':>12}{'images/s':>10}{'epoch steps (s)':>17}"]
    for who, name in (("authors", "authors'"), ("ours", "ours")):
        lines.append(f"{name:<10}{medians[who]:>12.4f}{batch / medians[who]:>10.1f}{steps * medians[who]:>17.1f}")
    lines.append(f"ours / authors' per step: {medians['ours'] / medians['authors']:.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Time the authors' training step beside ours on the same batches.")
    parser.add_argument("--authors", required=True, metavar="CHECKOUT", help="checkout of ShawnHuang497/RecLMIS")
    add_config_flags(parser)
    parser.add_argument("--batches", type=int, default=20, help="timed steps of each (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted first steps of each (default 2)")
    parser.add_argument("--clip", metavar="FILE", help="OpenAI's ViT-B-32.pt for both networks' text towers "
                        "(default: random weights of its shapes for both)")
    parser.add_argument("--json", metavar="PATH", help="also write the times as JSON")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set).replace(clip_weights=args.clip)  # both towers alike
        check_size(config)
        device = get_device(args.device or config.device)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stand_in = fairseq_stand_in()
    with tempfile.TemporaryDirectory(prefix="authors_epoch_") as workdir:
        try:
            authors = load_authors(args.authors, workdir, args.clip)
        except (FileNotFoundError, ImportError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        try:
            result = compare_steps(config, device, authors, args.batches, args.warmup)
        except ValueError as error:  # a split too small for the warm-up, or a data set error
            print(f"error: {error}", file=sys.stderr)
            return 2
    result.update(device=str(device), config=args.config, settings=list(args.set),
                  authors_commit=checkout_commit(args.authors), fairseq_stand_in=stand_in,
                  clip_random=authors.clip_random, torch=torch.__version__)
    print(format_comparison(result))
    print(f"(their code at {result['authors_commit']}; fairseq {'stand-in' if stand_in else 'installed'}; "
          f"CLIP {'random weights' if authors.clip_random else args.clip}; {device})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

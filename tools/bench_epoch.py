"""Where one training epoch's time goes: ``python -m tools.benchmark -c Config_QaTa_CPU --epoch``.

One epoch of the config on its own data, as ``train_model.py`` runs it (the same loaders, model, losses, optimizer
and validation passes, in a throw-away session folder), timed part by part:

- ``data``: waiting for the training loader's next batch (reading, decoding, resizing, augmenting, tokenising, and
  collating; with ``num_workers`` 0 all of it in this process);
- ``text tower``: the frozen text tower's forward passes (forward hooks; a frozen tower has no backward);
- ``reconstruction``: the auxiliary branch (words/patches-of-interest heads, conditioned masking, both
  reconstruction transformers, the contrastive and reconstruction losses), forward and backward. A backward pass
  cannot be cut by module, so this part is measured apart: the same batches are stepped again, after the epoch, on
  copies of the model with the branch on and off, alternating, and the difference of their medians is taken for
  every batch of the epoch;
- ``optimizer``: ``optimizer.step()``;
- ``image path``: the rest of the training steps (U-Net, interaction and decoder, forward and backward, the
  segmentation loss);
- ``validation`` and ``validation, shuffled reports``: the two validation passes of an epoch.

The parts of the training loop are taken from one timed pass and add up to its wall time; the validation passes
are timed on their own. Timings are wall-clock seconds on this machine, with whatever else runs beside.
"""

from __future__ import annotations

import copy
import functools
import statistics
import tempfile
import time
from typing import Dict, List, Optional

import torch
from torch import profiler
from torch.utils.flop_counter import FlopCounterMode

from tools.bench_convs import (
    REFERENCE_CONVOLUTION,
    convolution_layers,
    format_convolution_layers,
    reference_convolution_rate,
)
from utils.config import Config
from utils.timing import seconds_of, sync
from utils.training.engine import evaluate, evaluate_dice, train_step
from utils.training.losses import RecLMISCriterion
from utils.training.trainer import Trainer

PARTS = ("data", "text tower", "reconstruction", "optimizer", "image path", "validation",
         "validation, shuffled reports")


class _ModuleClock:
    """Wall time spent in a module's forward passes, from a pre-hook and a hook (0 for no module: a network
    without a text tower)."""

    def __init__(self, module: Optional[torch.nn.Module], device: torch.device):
        self.seconds = 0.0
        self._device = device
        self._started = 0.0
        self._handles = [] if module is None else [module.register_forward_pre_hook(self._start),
                                                   module.register_forward_hook(self._stop)]

    def _start(self, module, inputs) -> None:
        sync(self._device)
        self._started = time.perf_counter()

    def _stop(self, module, inputs, output) -> None:
        sync(self._device)
        self.seconds += time.perf_counter() - self._started

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class _TimedOptimizer:
    """An optimizer whose ``step`` is timed; everything else goes to the optimizer it wraps."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device):
        self.optimizer = optimizer
        self.device = device
        self.seconds = 0.0

    def step(self, *args, **kwargs):
        result = None

        def run():
            nonlocal result
            result = self.optimizer.step(*args, **kwargs)

        self.seconds += seconds_of(run, self.device)
        return result

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


def _branch_seconds(trainer: Trainer, batches: List[dict], repeats: int) -> float:
    """Median seconds a training step spends in the auxiliary branch, on ``batches``: steps with the branch and
    without it (the segmentation loss alone), on copies of the model, alternating so a change of load falls on
    both."""
    config = trainer.config
    with_branch = copy.deepcopy(trainer.raw_model).train()
    without = copy.deepcopy(trainer.raw_model).train()
    seg_only = config.replace(loss_weight_ccl=0.0, loss_weight_text_rec=0.0, loss_weight_img_rec=0.0)
    runs = [(with_branch, RecLMISCriterion(config), True), (without, RecLMISCriterion(seg_only), False)]
    optimizers = [torch.optim.Adam(model.parameters(), lr=config.learning_rate) for model, _, _ in runs]
    times = {True: [], False: []}
    with torch.random.fork_rng(devices=[]):
        for round_ in range(repeats + 1):  # the first round warms up
            for (model, criterion, aux), optimizer in zip(runs, optimizers):
                step = functools.partial(train_step, model, criterion, optimizer=optimizer, device=trainer.device,
                                         amp=config.amp, return_aux=aux)
                seconds = sum(seconds_of(functools.partial(step, batch), trainer.device) for batch in batches)
                if round_:
                    times[aux].append(seconds / len(batches))
    return max(0.0, statistics.median(times[True]) - statistics.median(times[False]))


def operator_profile(trainer: Trainer, batches: List[dict], steps: int, top: int = 12) -> Dict:
    """Profile ``steps`` training steps (cycling over ``batches``) with torch.profiler after one untimed step: each
    operator's own time (its callees' excluded; device time on CUDA), per step.

    Then one more step under torch's FlopCounterMode counts its floating-point operations (2 per multiply-add), and
    each convolution layer is timed alone (:func:`tools.bench_convs.convolution_layers`).

    Returns:
        ``{"steps", "ms_per_step", "convolution_ms_per_step", "top": [[operator, ms per step], ...],
        "gflop_per_step", "convolution_gflop_per_step", "reference_convolution_gflops", "layers"}``, the
        convolutions being every operator whose name contains ``convolution`` (forward and backward), the reference
        :func:`tools.bench_convs.reference_convolution_rate`, the layers those of
        :func:`tools.bench_convs.convolution_layers`.
    """
    cuda = trainer.device.type == "cuda"
    activities = [profiler.ProfilerActivity.CPU] + ([profiler.ProfilerActivity.CUDA] if cuda else [])
    step = functools.partial(train_step, trainer.model, trainer.criterion, optimizer=trainer.optimizer,
                             device=trainer.device, amp=trainer.amp, scaler=trainer.scaler)
    trainer.raw_model.train()
    step(batches[0])
    with profiler.profile(activities=activities) as recorded:
        for index in range(steps):
            step(batches[index % len(batches)])
        sync(trainer.device)
    own = {}
    for event in recorded.key_averages():
        value = event.self_device_time_total if cuda else event.self_cpu_time_total
        own[event.key] = own.get(event.key, 0.0) + value / 1000.0 / steps  # microseconds -> ms per step
    ranked = sorted(own.items(), key=lambda item: -item[1])
    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    counts = counter.get_flop_counts()["Global"]
    return {"steps": steps, "ms_per_step": sum(own.values()),
            "convolution_ms_per_step": sum(ms for name, ms in own.items() if "convolution" in name),
            "top": [[name, ms] for name, ms in ranked[:top]],
            "gflop_per_step": counter.get_total_flops() / 1e9,
            "convolution_gflop_per_step": sum(n for op, n in counts.items() if "convolution" in str(op)) / 1e9,
            "reference_convolution_gflops": reference_convolution_rate(trainer.device, trainer.amp),
            "layers": convolution_layers(trainer.raw_model, batches[0], trainer.device, trainer.amp)}


def epoch_breakdown(config: Config, device: torch.device, branch_batches: int = 4, repeats: int = 3,
                    profile_steps: int = 0) -> Dict:
    """Run and time one training epoch of ``config`` (with its validation) on ``device``; with ``profile_steps``,
    then profile that many more training steps (:func:`operator_profile`).

    Returns:
        ``{"parts": {part: seconds}, "train_s", "images", "batches", "branch_s_per_step", "decode_fill_s"}``
        (the once-per-run fill of the decoded-image cache, outside the epoch), and ``"operators"`` with
        ``profile_steps``; the parts of :data:`PARTS`, the training loop's adding up to ``train_s``.
    """
    config = config.replace(epochs=1, tensorboard_images=0, val_text_check_every=max(config.val_text_check_every, 1))
    with tempfile.TemporaryDirectory(prefix="bench_epoch_") as session:
        torch.manual_seed(config.seed)
        trainer = Trainer(config, session, device, progress=False)
        fill_s = sum(trainer.loaders[split].dataset.decoded.fill_seconds for split in ("train", "val"))
        loader = trainer.loaders["train"]
        loader.sampler.set_epoch(0)
        loader.dataset.set_epoch_seed(config.seed)
        loader.generator.manual_seed(config.seed)
        text_clock = _ModuleClock(trainer.raw_model.text_tower, device)
        optimizer = _TimedOptimizer(trainer.optimizer, device)
        data_s, kept, images = 0.0, [], 0
        trainer.raw_model.train()
        iterator = iter(loader)
        started = time.perf_counter()
        while True:
            waited = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            data_s += time.perf_counter() - waited
            train_step(trainer.model, trainer.criterion, batch, optimizer, device, amp=trainer.amp,
                       scaler=trainer.scaler)
            images += batch["image"].shape[0]
            if len(kept) < branch_batches:
                kept.append(batch)
        sync(device)
        train_s = time.perf_counter() - started
        text_s = text_clock.seconds
        batches = len(loader)
        branch_per_step = _branch_seconds(trainer, kept, repeats) if kept else 0.0
        branch_s = branch_per_step * batches
        val_s = seconds_of(lambda: evaluate(trainer.raw_model, trainer.val_criterion, trainer.loaders["val"], device,
                                            amp=trainer.amp, progress=False), device)
        shuffled_s = seconds_of(lambda: evaluate_dice(trainer.raw_model, trainer.loaders["val_shuffled"], device,
                                                      amp=trainer.amp, progress=False), device)
        text_clock.remove()
        operators = operator_profile(trainer, kept, profile_steps) if profile_steps and kept else None
    image_s = train_s - data_s - text_s - branch_s - optimizer.seconds
    parts = {"data": data_s, "text tower": text_s, "reconstruction": branch_s, "optimizer": optimizer.seconds,
             "image path": image_s, "validation": val_s, "validation, shuffled reports": shuffled_s}
    result = {"parts": parts, "train_s": train_s, "images": images, "batches": batches,
              "branch_s_per_step": branch_per_step, "decode_fill_s": fill_s}
    if operators is not None:
        result["operators"] = operators
    return result


def format_breakdown(result: Dict) -> str:
    """The breakdown as a table: seconds and share of the epoch per part."""
    parts = result["parts"]
    total = sum(parts.values())
    lines = [f"one epoch: {result['images']} training images in {result['batches']} batches; training loop "
             f"{result['train_s']:.1f} s, with validation {total:.1f} s",
             f"{'part':<30}{'seconds':>10}{'share':>8}"]
    for part in PARTS:
        lines.append(f"{part:<30}{parts[part]:>10.2f}{100 * parts[part] / total:>7.1f}%")
    lines.append(f"(reconstruction: {result['branch_s_per_step']:.3f} s per step, measured on copies of the model "
                 "with the branch on and off)")
    if result.get("decode_fill_s"):
        lines.append(f"(once per run, before the first epoch: decoding the training and validation images into "
                     f"memory, {result['decode_fill_s']:.2f} s)")
    operators = result.get("operators")
    if operators:
        total, conv = operators["ms_per_step"], operators["convolution_ms_per_step"]
        lines.append(f"operators over {operators['steps']} more training steps (torch.profiler, each operator's own "
                     f"time): {total:.1f} ms per step, of which convolutions {conv:.1f} ms "
                     f"({100 * conv / max(total, 1e-9):.0f}%)")
        lines.extend(f"  {name:<48}{ms:>9.2f} ms" for name, ms in operators["top"])
        conv_gflop = operators["convolution_gflop_per_step"]
        batch, channels, size = REFERENCE_CONVOLUTION
        lines.append(f"convolutions: {conv_gflop:.2f} GFLOP per step of {operators['gflop_per_step']:.2f} (torch's "
                     f"FlopCounterMode, 2 per multiply-add), {1000 * conv_gflop / max(conv, 1e-9):.0f} GFLOP/s in the "
                     f"profile; a plain 3x3 convolution ({channels} channels, {size} px, batch {batch}, "
                     f"channels-last) reaches {operators['reference_convolution_gflops']:.0f} GFLOP/s here")
        lines.extend(format_convolution_layers(operators["layers"]))
    return "\n".join(lines)

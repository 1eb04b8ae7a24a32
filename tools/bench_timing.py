"""Timing helpers of ``python -m tools.benchmark``: the model's counts, inference, training steps, the DataLoader."""

from __future__ import annotations

import copy
import datetime
import functools
import os
import platform
import sys
import time
from typing import List

import torch

from Load_Dataset import build_dataloaders
from nets import build_model
from tools.summary import summarize, vocab_size
from utils.inference.predictor import Predictor
from utils.inference.speed import TEXT_CACHE
from utils.timing import median_seconds, seconds_of
from utils.training.engine import train_step
from utils.training.losses import RecLMISCriterion
from utils.training.schedulers import build_optimizer, build_scheduler

MIB = 1024 * 1024


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def environment(device: torch.device) -> dict:
    return {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device), "device_name": device_name(device), "python": platform.python_version(),
            "command": "python -m tools.benchmark " + " ".join(sys.argv[1:])}


def dummy_batch(config, batch: int, vocab_size: int) -> dict:
    """A batch in the data loader's format: random images and masks, reports of ``token_len`` real tokens."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, vocab_size - 2, (batch, config.token_len), generator=generator)
    tokens[:, 0], tokens[:, -1] = vocab_size - 2, vocab_size - 1
    return {"image": torch.rand(batch, config.n_channels, config.img_size, config.img_size, generator=generator),
            "label": (torch.rand(batch, config.img_size, config.img_size, generator=generator) > 0.5).float(),
            "text_token": tokens, "text_mask": torch.ones_like(tokens),
            "name": [f"random_{i}.png" for i in range(batch)], "text": ["random"] * batch}


def build_random_model(config):
    """The config's model with random weights; the text tower rounded to fp16 values like OpenAI's release."""
    torch.manual_seed(config.seed)
    model = build_model(config.replace(clip_weights=None))
    with torch.no_grad():
        for param in model.text_tower.parameters() if model.text_tower is not None else ():
            param.copy_(param.half().float())
    return model


def model_counts(model) -> dict:
    summary = summarize(copy.deepcopy(model))
    in_memory = sum(t.numel() for t in list(model.parameters()) + list(model.buffers()))
    return {"params_in_memory": in_memory, "params_trainable": summary["trainable"],
            "params_inference_path": summary["inference_used"] + summary["text_tower"],
            "params_text_tower": summary["text_tower"], "flops_per_image": summary["flops_inference"]}


def bench_plain_forward(model, device: torch.device, batch_sizes: List[int], warmup: int, repeats: int) -> List[dict]:
    """The reference: ``model.eval()`` forward under ``no_grad`` with the auxiliary branch on, fp32, as the authors'
    test loop runs it (no folding, default memory format)."""
    plain = copy.deepcopy(model).to(device).eval()
    rows = []
    for batch_size in batch_sizes:
        batch = dummy_batch(model.config, batch_size, vocab_size(model))
        inputs = [batch[key].to(device) for key in ("image", "text_token", "text_mask")]

        def forward(images=inputs[0], tokens=inputs[1], mask=inputs[2]):
            with torch.no_grad():
                return plain(images, tokens, mask, return_aux=True)

        seconds = median_seconds(forward, device, warmup, repeats)
        rows.append({"precision": "fp32", "path": "eval_forward", "batch": batch_size,
                     "s_per_image": seconds / batch_size, "images_per_s": batch_size / seconds})
    return rows


def bench_inference(model, device: torch.device, batch_sizes: List[int], precisions: List[str], warmup: int,
                    repeats: int, *, compile: bool = False, text_cache: bool = False) -> List[dict]:
    """Seconds per image of :class:`Predictor` at each precision and batch size. With ``compile``, also of the
    ``torch.compile``d Predictor, whose first call (the compilation) is timed on its own as ``compile_s``; with
    ``text_cache``, also with the text features cached, every report seen before (the cache's best case)."""
    variants = [("predictor", {})]
    if compile:
        variants.append(("predictor_compiled", {"compile": True}))
    if text_cache:
        variants.append(("predictor_text_cache", {"cache_text": TEXT_CACHE}))
    predictor = Predictor(copy.deepcopy(model), device)
    rows = []
    for precision in precisions:
        for path, options in variants:
            for batch_size in batch_sizes:
                if options.get("compile"):
                    torch._dynamo.reset()  # each batch size compiled afresh: no padding, no recompilation limit
                runner = Predictor(predictor.model, device, precision, **options)
                batch = dummy_batch(model.config, batch_size, vocab_size(model))
                inputs = [batch[key].to(device) for key in ("image", "text_token", "text_mask")]
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                row = {"precision": precision, "path": path, "batch": batch_size}
                if options.get("compile"):
                    row["compile_s"] = seconds_of(functools.partial(runner, *inputs), device)
                seconds = median_seconds(functools.partial(runner, *inputs), device, warmup, repeats)
                row.update({"s_per_image": seconds / batch_size, "images_per_s": batch_size / seconds})
                if device.type == "cuda":
                    row["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
                rows.append(row)
    return rows


def _loader_warmup(workers: int) -> int:
    """Batches to draw before timing: what ``workers`` processes prefetch (DataLoader's default factor 2)."""
    return max(2, 2 * workers)


def bench_loader(config, device: torch.device, workers: List[int], batches: int) -> List[dict]:
    """Images per second out of the config's training DataLoader (read, augment, resize, tokenise; pinned memory
    on CUDA) for each number of worker processes. The batches loaded while the workers start (as many as they
    prefetch, and at least two) are not timed."""
    loader = build_dataloaders(config.replace(num_workers=0), ("train",), device)["train"]  # the data check, once
    needed = batches + _loader_warmup(max(workers))
    if len(loader) < needed:
        raise ValueError(f"the training split has {len(loader)} batches of {loader.batch_size}; --loader_batches "
                         f"{batches} with up to {max(workers)} worker(s) needs {needed}")
    rows = []
    for count in workers:
        loader = build_dataloaders(config.replace(num_workers=count), ("train",), device, check=False)["train"]
        loader.sampler.set_epoch(0)
        loader.dataset.set_epoch_seed(config.seed)
        warmup = _loader_warmup(count)
        iterator = iter(loader)
        for _ in range(warmup):
            next(iterator)
        images = 0
        start = time.perf_counter()
        for _ in range(batches):
            images += next(iterator)["image"].shape[0]
        seconds = time.perf_counter() - start
        del iterator
        rows.append({"workers": count, "batch": loader.batch_size, "images": images, "images_per_s": images / seconds,
                     "pin_memory": loader.pin_memory})
    return rows


def bench_training(model, device: torch.device, batch_size: int, amp_modes: List[bool], warmup: int,
                   repeats: int) -> tuple:
    """Seconds per training step in each mode; returns ``(rows, model, optimizer, scheduler, scaler)`` of the
    last mode for the checkpoint sizes."""
    rows, state = [], None
    batch = dummy_batch(model.config, batch_size, vocab_size(model))
    for amp in amp_modes:
        trained = copy.deepcopy(model).to(device).train()
        criterion = RecLMISCriterion(trained.config)
        optimizer = build_optimizer(trained.config, trained)
        scheduler = build_scheduler(trained.config, optimizer)
        scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = functools.partial(train_step, trained, criterion, batch, optimizer, device, amp=amp, scaler=scaler)
        seconds = median_seconds(step, device, warmup, repeats)
        row = {"amp": amp, "batch": batch_size, "s_per_step": seconds, "images_per_s": batch_size / seconds}
        if device.type == "cuda":
            row["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
        rows.append(row)
        state = (trained, optimizer, scheduler, scaler)
    return rows, state

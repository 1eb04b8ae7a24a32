"""How fast and how big RecLMIS is on this machine.

    python -m tools.benchmark -c Config_QaTa [--device cpu|cuda] [--json out.json]
    python -m tools.benchmark -c Config_QaTa --device cuda --batch_sizes 1 8 32 --precision fp32 bf16 fp16
    python -m tools.benchmark -c Config_Demo --agreement Demo/RecLMIS/<session>/models/best_model-RecLMIS.pth.tar
    python -m tools.benchmark -c Config_Demo --set img_size=224 batch_size=4 --loader

The first form builds the model at the config's real size with random weights (the text tower rounded to fp16
values, as OpenAI released CLIP) and measures, on one device:

- parameters: held in memory (all parameters and buffers), trainable, and on the inference path; FLOPs per image
  of the inference path (multiply and add counted as two: FLOPs, not MACs);
- inference as ``test.py`` runs it (:class:`utils.inference.predictor.Predictor`): seconds per image and images
  per second for each batch size and precision, after warm-up, the median of the repeats (``--compile``: also compiled
  with ``torch.compile``, as ``test.py --compile`` runs it, and the compilation time; ``--text_cache``: also with the
  text features of every report cached);
- a training step as ``train_model.py`` runs it (forward, every loss, backward, Adam step): seconds per step and
  images per second, in fp32 and with mixed precision;
- checkpoint files as training writes them (best, and latest with the optimizer state; the latter also with
  ``compact_resume``), in MiB;
- peak memory of loading the best checkpoint and running inference at batch 1: resident memory of a fresh
  process on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA;
- the torch version, thread count and device name.

``--loader`` instead times the config's training DataLoader (images per second) for several worker counts.

``--agreement CHECKPOINT`` instead runs a trained model over the config's test split in fp32 and in each reduced
``--precision``, and reports the fraction of mask pixels that agree and each one's Dice.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional

import torch

from utils.data.files import DatasetError
from utils.inference.predictor import PRECISIONS, TEXT_CACHE, Predictor, autocast_for
from utils.memory import tune_cpu_allocator
from utils.misc import get_device, rng_state

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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


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
    from nets import build_model

    torch.manual_seed(config.seed)
    model = build_model(config.replace(clip_weights=None))
    with torch.no_grad():
        for param in model.clip.parameters():
            param.copy_(param.half().float())
    return model


def model_counts(model) -> dict:
    from tools.summary import summarize

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
        batch = dummy_batch(model.config, batch_size, model.clip.shape.vocab_size)
        inputs = [batch[key].to(device) for key in ("image", "text_token", "text_mask")]

        def forward(images=inputs[0], tokens=inputs[1], mask=inputs[2]):
            with torch.no_grad():
                return plain(images, tokens, mask, return_aux=True)

        seconds = time_it(forward, device, warmup, repeats)
        rows.append({"precision": "fp32", "path": "eval_forward", "batch": batch_size,
                     "s_per_image": seconds / batch_size, "images_per_s": batch_size / seconds})
    return rows


def bench_inference(model, device: torch.device, batch_sizes: List[int], precisions: List[str], warmup: int,
                    repeats: int, compile: bool = False, text_cache: bool = False) -> List[dict]:
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
                batch = dummy_batch(model.config, batch_size, model.clip.shape.vocab_size)
                inputs = [batch[key].to(device) for key in ("image", "text_token", "text_mask")]
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                row = {"precision": precision, "path": path, "batch": batch_size}
                if options.get("compile"):
                    start = time.perf_counter()
                    runner(*inputs)
                    _sync(device)
                    row["compile_s"] = time.perf_counter() - start
                seconds = time_it(functools.partial(runner, *inputs), device, warmup, repeats)
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
    from Load_Dataset import build_dataloaders

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
    from utils.training.engine import train_step
    from utils.training.losses import RecLMISCriterion
    from utils.training.schedulers import build_optimizer, build_scheduler

    rows, state = [], None
    batch = dummy_batch(model.config, batch_size, model.clip.shape.vocab_size)
    for amp in amp_modes:
        trained = copy.deepcopy(model).to(device).train()
        criterion = RecLMISCriterion(trained.config)
        optimizer = build_optimizer(trained.config, trained)
        scheduler = build_scheduler(trained.config, optimizer)
        scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_it(functools.partial(train_step, trained, criterion, batch, optimizer, device, amp, scaler),
                          device, warmup, repeats)
        row = {"amp": amp, "batch": batch_size, "s_per_step": seconds, "images_per_s": batch_size / seconds}
        if device.type == "cuda":
            row["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
        rows.append(row)
        state = (trained, optimizer, scheduler, scaler)
    return rows, state


def checkpoint_sizes(state, folder: str, clip_weights: Optional[str]) -> dict:
    """Write the best and latest checkpoints as training does, and the latest one as ``compact_resume`` writes it;
    their sizes in MiB and the best one's path. ``clip_weights``: the config's CLIP file; when there is one, the
    latest checkpoints leave the frozen tower out, as in training."""
    from utils.training.checkpoint import (
        BEST_NAME,
        LATEST_NAME,
        checkpoint_payload,
        compact_optimizer_state,
        frozen_sha256,
        save_checkpoint,
    )

    model, optimizer, scheduler, scaler = state
    val = {"total": 0.0, "dice": 0.0}
    config = model.config.replace(clip_weights=clip_weights)
    digest = frozen_sha256(model) if clip_weights is not None else None
    paths = {"best": os.path.join(folder, BEST_NAME), "latest": os.path.join(folder, LATEST_NAME),
             "latest_compact": os.path.join(folder, "compact_" + LATEST_NAME)}
    save_checkpoint(checkpoint_payload(model, config, 0, True, val), paths["best"])
    for name, moments in (("latest", optimizer.state_dict()),
                          ("latest_compact", compact_optimizer_state(optimizer.state_dict()))):
        training_state = {"optimizer": moments, "lr_scheduler": scheduler.state_dict(),
                          "scaler": scaler.state_dict(), "best_dice": 0.0, "best_epoch": 0, "rng": rng_state()}
        save_checkpoint(checkpoint_payload(model, config, 0, False, val, training_state, digest), paths[name])
    return {**{f"{name}_mib": os.path.getsize(path) / MIB for name, path in paths.items()},
            "best_path": paths["best"]}


def peak_resident_mib() -> float:
    """This process's peak resident memory (``VmHWM``; unlike ``ru_maxrss`` it does not count what the parent
    held before ``exec``)."""
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe_memory(checkpoint: str, device: torch.device) -> dict:
    """Load ``checkpoint``, tokenise a report and predict one image; the process's peak memory (run this in a
    fresh process, as :func:`run_probe` does)."""
    from utils.data.tokenizer import ReportTokenizer
    from utils.training.checkpoint import build_model_from_checkpoint

    model = build_model_from_checkpoint(checkpoint)[0]
    predictor = Predictor(model, device)
    reports = ReportTokenizer(model.config.token_len, model.config.pad_short_reports)(
        ["Bilateral pulmonary infection, two infected areas, upper left lung and middle right lung."])
    image = torch.rand(1, model.config.n_channels, model.config.img_size, model.config.img_size)
    predictor(image, reports.tokens, reports.text_mask)
    _sync(device)
    result = {"peak_rss_mib": peak_resident_mib()}
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return result


def run_probe(checkpoint: str, device: torch.device) -> dict:
    command = [sys.executable, "-m", "tools.benchmark", "--probe_memory", checkpoint, "--device", str(device)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(config, checkpoint: str, device: torch.device, precisions: List[str]) -> dict:
    """Mask agreement of each reduced precision with fp32 over the config's test split."""
    from tqdm import tqdm

    from Load_Dataset import build_test_split
    from utils.training.checkpoint import build_model_from_checkpoint
    from utils.training.metrics import SegmentationMeter

    reduced = [p for p in precisions if p != "fp32"]
    if not reduced:
        raise ValueError("--agreement compares reduced precisions with fp32: give --precision bf16 and/or fp16")
    model = build_model_from_checkpoint(checkpoint, config)[0]
    loader = build_test_split(config, model.config, device)[2]
    reference = Predictor(model, device, "fp32")
    runners = {p: Predictor(reference.model, device, p) for p in reduced}
    meters = {p: SegmentationMeter(strict=True, dice="paper") for p in ["fp32", *reduced]}
    equal = dict.fromkeys(reduced, 0)
    pixels = 0
    for batch in tqdm(loader, desc="agreement", dynamic_ncols=True):
        labels = batch["label"].to(device)
        inputs = (batch["image"], batch["text_token"], batch["text_mask"])
        base = reference(*inputs)
        meters["fp32"].update(base, labels)
        pixels += base.numel()
        for precision, runner in runners.items():
            logits = runner(*inputs)
            meters[precision].update(logits, labels)
            equal[precision] += int(((logits > 0) == (base > 0)).sum())
    return {"checkpoint": checkpoint, "images": meters["fp32"].images, "pixels": pixels,
            "dice": {p: meter.compute()["dice"] for p, meter in meters.items()},
            "pixel_agreement": {p: equal[p] / max(pixels, 1) for p in reduced}}


def format_report(result: dict) -> str:
    env, counts = result["environment"], result["model"]
    allocator = "" if env.get("allocator_tuned") else ", glibc allocator untuned"
    lines = [f"RecLMIS benchmark: {result['config']} ({result['img_size']} px) on {env['device_name']}, "
             f"torch {env['torch']}, {env['threads']} threads{allocator}, {env['date']}",
             f"  parameters in memory   {counts['params_in_memory'] / 1e6:9.2f} M",
             f"  trainable              {counts['params_trainable'] / 1e6:9.2f} M",
             f"  inference path         {counts['params_inference_path'] / 1e6:9.2f} M "
             f"(text tower {counts['params_text_tower'] / 1e6:.2f} M)",
             f"  FLOPs per image        {counts['flops_per_image'] / 1e9:9.2f} G (inference path; 2 per MAC)"]
    for row in result["inference"]:
        extra = f"  peak {row['peak_mib']:.0f} MiB" if "peak_mib" in row else ""
        notes = {"eval_forward": " (eval forward + aux branch)",
                 "predictor_compiled": f" (torch.compile; compiled in {row.get('compile_s', 0):.0f} s)",
                 "predictor_text_cache": " (text features cached)"}
        path = notes.get(row["path"], "")
        lines.append(f"  inference {row['precision']:>4} batch {row['batch']:>3}: {row['s_per_image']:.4f} s/image, "
                     f"{row['images_per_s']:8.1f} images/s{extra}{path}")
    for row in result.get("training", []):
        extra = f"  peak {row['peak_mib']:.0f} MiB" if "peak_mib" in row else ""
        mode = "amp " if row["amp"] else "fp32"
        lines.append(f"  training  {mode} batch {row['batch']:>3}: {row['s_per_step']:.3f} s/step, "
                     f"{row['images_per_s']:8.1f} images/s{extra}")
    if "checkpoints" in result:
        ck = result["checkpoints"]
        lines.append(f"  checkpoints: best {ck['best_mib']:.0f} MiB, latest (with optimizer state) "
                     f"{ck['latest_mib']:.0f} MiB, latest with compact_resume {ck['latest_compact_mib']:.0f} MiB")
    if "memory" in result:
        mem = result["memory"]
        cuda = f", CUDA {mem['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in mem else ""
        lines.append(f"  peak memory, load best checkpoint + infer 1 image: resident {mem['peak_rss_mib']:.0f} "
                     f"MiB{cuda}")
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure RecLMIS's speed, memory and size on this machine.")
    parser.add_argument("-c", "--config", default="Config_QaTa", help="config module or file (default Config_QaTa)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8], help="inference batch sizes")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, help="inference precisions (default fp32 "
                        "and bf16; on CUDA also fp16)")
    parser.add_argument("--train_batch", type=int, nargs="+", default=[4],
                        help="training batch sizes (0: skip training)")
    parser.add_argument("--train_modes", nargs="+", choices=["fp32", "amp"], default=["fp32", "amp"],
                        help="training precisions: fp32 and/or amp (bf16 autocast on CPU, fp16 + GradScaler on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (the median is reported)")
    parser.add_argument("--plain", action="store_true", help="also time the plain eval forward with the auxiliary "
                        "branch (the authors' test loop) at each batch size, as a reference")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd Predictor "
                        "(test.py --compile), and its compilation")
    parser.add_argument("--text_cache", action="store_true", help="also time the Predictor with the text features "
                        "of every report cached (test.py's text cache at its best)")
    parser.add_argument("--no_allocator_tuning", action="store_true",
                        help="leave glibc's allocator as it is (see utils.misc.tune_cpu_allocator)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no_memory", action="store_true", help="skip the checkpoint sizes and the memory probe")
    parser.add_argument("--agreement", metavar="CHECKPOINT", help="mask agreement of reduced precisions with fp32 "
                        "on the config's test split, for a trained checkpoint")
    parser.add_argument("--loader", action="store_true", help="instead time the config's training DataLoader "
                        "(images per second) for each of --loader_workers")
    parser.add_argument("--loader_workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (--loader)")
    parser.add_argument("--loader_batches", type=int, default=20, help="batches timed per worker count (--loader)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--probe_memory", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    from utils.config import load_config

    args = parse_args(argv)
    tuned = False if args.no_allocator_tuning else tune_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = get_device(args.device)
        if args.probe_memory:
            print(json.dumps(probe_memory(args.probe_memory, device)))
            return 0
        config = load_config(args.config, args.set)
        precisions = args.precision or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
        for precision in precisions:
            autocast_for(device, precision)
        if args.loader:
            rows = bench_loader(config, device, args.loader_workers, args.loader_batches)
            result = {"environment": {**environment(device), "allocator_tuned": tuned}, "config": args.config,
                      "img_size": config.img_size, "loader": rows}
            text = "\n".join([f"training DataLoader of {args.config} at {config.img_size} px (batch {rows[0]['batch']})"
                              + (", pinned memory" if rows[0]["pin_memory"] else "") + ":"]
                             + [f"  {row['workers']} worker(s): {row['images_per_s']:.1f} images/s" for row in rows])
        elif args.agreement:
            result = {"environment": environment(device), "config": args.config,
                      **agreement(config, args.agreement, device, precisions)}
            text = "\n".join([f"mask agreement with fp32 on the test split of {args.config} "
                              f"({result['images']} images, {result['pixels']} pixels):"]
                             + [f"  {p}: {a * 100:.3f}% of pixels equal" for p, a in result["pixel_agreement"].items()]
                             + [f"  Dice {p}: {d:.4f}" for p, d in result["dice"].items()])
        else:
            model = build_random_model(config)
            result = {"environment": {**environment(device), "allocator_tuned": tuned}, "config": args.config,
                      "img_size": config.img_size, "model": model_counts(model), "inference": []}
            if args.plain:
                result["inference"] += bench_plain_forward(model, device, args.batch_sizes, args.warmup,
                                                           args.repeats)
            result["inference"] += bench_inference(model, device, args.batch_sizes, precisions, args.warmup,
                                                   args.repeats, args.compile, args.text_cache)
            modes = [mode == "amp" for mode in args.train_modes]
            state = None
            result["training"] = []
            for batch_size in [b for b in args.train_batch if b > 0]:
                rows, state = bench_training(model, device, batch_size, modes, args.warmup, args.repeats)
                result["training"] += rows
            if not args.no_memory:
                del model
                with tempfile.TemporaryDirectory() as folder:
                    if state is None:
                        raise ValueError("the checkpoint sizes need a training step: give a --train_batch above 0 "
                                         "or --no_memory")
                    sizes = checkpoint_sizes(state, folder, config.clip_weights)
                    del state
                    result["memory"] = run_probe(sizes.pop("best_path"), device)
                    result["checkpoints"] = sizes
            text = format_report(result)
    except (FileNotFoundError, KeyError, TypeError, ValueError, RuntimeError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

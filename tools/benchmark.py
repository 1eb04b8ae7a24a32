"""How fast and how big RecLMIS is on this machine.

    python -m tools.benchmark -c Config_QaTa [--device cpu|cuda] [--json out.json]
    python -m tools.benchmark -c Config_QaTa --device cuda --batch_sizes 1 8 32 --precision fp32 bf16 fp16
    python -m tools.benchmark -c Config_Demo --agreement Demo/RecLMIS/<session>/models/best_model-RecLMIS.pth.tar
    python -m tools.benchmark -c Config_Demo --set img_size=224 batch_size=4 --loader
    python -m tools.benchmark -c Config_QaTa_CPU --epoch

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

``--epoch`` instead runs one training epoch of the config on its data and prints where its time goes: data
loading, the text tower, the image path, the reconstruction branch, the optimizer step and both validation passes
(:mod:`tools.bench_epoch`); ``--ops STEPS`` adds the operators that take most of a training step, from
torch.profiler, the convolutions' share of it, the step's FLOPs, and each convolution layer timed alone against a
reference convolution's rate (:mod:`tools.bench_convs`).

``--loader`` instead times the config's training DataLoader (images per second) for several worker counts.

``--agreement CHECKPOINT`` instead runs a trained model over the config's test split in fp32 and in each reduced
``--precision``, and reports the fraction of mask pixels that agree and each one's Dice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import List, Optional

import torch
from tqdm import tqdm

from Load_Dataset import build_test_split
from tools.bench_epoch import epoch_breakdown, format_breakdown
from tools.bench_memory import checkpoint_sizes, probe_memory, run_probe
from tools.bench_timing import (
    bench_inference,
    bench_loader,
    bench_plain_forward,
    bench_training,
    build_random_model,
    environment,
    model_counts,
)
from utils.autocast import PRECISIONS, autocast_for
from utils.cli import add_config_flags
from utils.config import load_config
from utils.data.records import DatasetError
from utils.inference.predictor import Predictor
from utils.memory import tune_cpu_allocator
from utils.metrics import SegmentationMeter
from utils.misc import get_device


def agreement(config, checkpoint: str, device: torch.device, precisions: List[str]) -> dict:
    """Mask agreement of each reduced precision with fp32 over the config's test split."""
    reduced = [p for p in precisions if p != "fp32"]
    if not reduced:
        raise ValueError("--agreement compares reduced precisions with fp32: give --precision bf16 and/or fp16")
    reference = Predictor.from_checkpoint(checkpoint, device=device, precision="fp32", config=config, cache_text=0)
    loader = build_test_split(config, reference.config, device)[2]
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
        for row in mem.get("predict_files", []):
            lines.append(f"  predict one {row['side']}x{row['side']} image file, outputs written: resident "
                         f"{row['peak_rss_mib']:.0f} MiB, {row['seconds']:.1f} s")
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure RecLMIS's speed, memory and size on this machine.")
    add_config_flags(parser)
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
                        help="leave glibc's allocator as it is (see utils.memory.tune_cpu_allocator)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no_memory", action="store_true", help="skip the checkpoint sizes and the memory probe")
    parser.add_argument("--agreement", metavar="CHECKPOINT", help="mask agreement of reduced precisions with fp32 "
                        "on the config's test split, for a trained checkpoint")
    parser.add_argument("--epoch", action="store_true", help="instead run one training epoch of the config on its "
                        "data, with its validation, and print where the time goes (tools/bench_epoch.py)")
    parser.add_argument("--ops", type=int, default=0, metavar="STEPS", help="with --epoch: then profile STEPS more "
                        "training steps (torch.profiler) and list the operators that take the most time, with the "
                        "convolutions' share, the step's FLOPs and the slowest convolution layers "
                        "(tools/bench_convs.py)")
    parser.add_argument("--loader", action="store_true", help="instead time the config's training DataLoader "
                        "(images per second) for each of --loader_workers")
    parser.add_argument("--loader_workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (--loader)")
    parser.add_argument("--loader_batches", type=int, default=20, help="batches timed per worker count (--loader)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--predict_sides", type=int, nargs="+", default=[], metavar="N",
                        help="also measure predicting one N x N image file (decode, outputs at full size, files "
                             "written) in a fresh process: peak resident memory and seconds")
    parser.add_argument("--probe_memory", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--probe_side", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    tuned = False if args.no_allocator_tuning else tune_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = get_device(args.device or "auto")
        if args.probe_memory:
            print(json.dumps(probe_memory(args.probe_memory, device, args.probe_side)))
            return 0
        config = load_config(args.config, args.set)
        precisions = args.precision or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
        for precision in precisions:
            autocast_for(device, precision)
        if args.epoch:
            breakdown = epoch_breakdown(config, device, profile_steps=args.ops)
            result = {"environment": {**environment(device), "allocator_tuned": tuned}, "config": args.config,
                      "settings": args.set, "img_size": config.img_size, "epoch": breakdown}
            text = format_breakdown(breakdown)
        elif args.loader:
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
                                                   args.repeats, compile=args.compile, text_cache=args.text_cache)
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
                    best = sizes.pop("best_path")
                    result["memory"] = run_probe(best, device)
                    result["memory"]["predict_files"] = [run_probe(best, device, side) for side in args.predict_sides]
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

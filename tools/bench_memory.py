"""Size and memory helpers of ``python -m tools.benchmark``: checkpoint files as training writes them, and the peak
memory of loading one and predicting an image, measured in a fresh process."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Optional

import cv2
import numpy as np
import torch

from tools.bench_timing import MIB
from utils.checkpoints import BEST_NAME, LATEST_NAME, frozen_sha256
from utils.inference.predictor import Predictor
from utils.misc import rng_state
from utils.timing import sync
from utils.training.checkpoint import checkpoint_payload, compact_optimizer_state, save_checkpoint


def checkpoint_sizes(state, folder: str, clip_weights: Optional[str]) -> dict:
    """Write the best and latest checkpoints as training does, and the latest one as ``compact_resume`` writes it;
    their sizes in MiB and the best one's path. ``clip_weights``: the config's CLIP file; when there is one, the
    latest checkpoints leave the frozen tower out, as in training."""

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


REPORT = "Bilateral pulmonary infection, two infected areas, upper left lung and middle right lung."


def probe_memory(checkpoint: str, device: torch.device, side: int = 0) -> dict:
    """Load ``checkpoint``, tokenise a report and predict one image; the process's peak memory (run this in a
    fresh process, as :func:`run_probe` does). With ``side``, the image is a ``side`` x ``side`` PNG file, predicted
    as ``test.py predict`` does (decoded, outputs at its own size, the three files written); its seconds too."""
    predictor = Predictor.from_checkpoint(checkpoint, device=device, cache_text=0)
    predictor.max_image_pixels = max(predictor.max_image_pixels, side * side)
    config = predictor.config
    if side:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "scan.png")
            picture = np.zeros((side, side), np.uint8)
            cv2.circle(picture, (side // 2, side // 2), side // 3, 200, -1)
            cv2.imwrite(path, picture)
            del picture
            start = time.perf_counter()
            predictor.predict(path, REPORT).save(os.path.join(folder, "scan"))
            return {"side": side, "seconds": time.perf_counter() - start, "peak_rss_mib": peak_resident_mib()}
    reports = predictor.tokenizer([REPORT])
    image = torch.rand(1, config.n_channels, config.img_size, config.img_size)
    predictor(image, reports.tokens, reports.text_mask)
    sync(device)
    result = {"peak_rss_mib": peak_resident_mib()}
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return result


def run_probe(checkpoint: str, device: torch.device, side: int = 0) -> dict:
    """:func:`probe_memory` in a fresh process."""
    command = [sys.executable, "-m", "tools.benchmark", "--probe_memory", checkpoint, "--device", str(device),
               "--probe_side", str(side)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])

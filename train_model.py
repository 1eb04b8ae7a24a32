"""Train RecLMIS.

    python train_model.py -c Config_QaTa [--set key=value ...] [--device cpu|cuda] [--resume SESSION]
    sh train.sh <gpu ids|cpu> <Config> [more args]

Each epoch trains, then validates with no gradient; the best checkpoint is kept on validation Dice (the authors'
rule: strictly greater), the latest every epoch, and training stops after ``early_stopping_patience`` epochs
without a better Dice. Everything goes to ``<output_root>/<task_name>/RecLMIS/session_MM.DD_HHhMM/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import List, Optional

import torch
from torch.utils.tensorboard import SummaryWriter

from Load_Dataset import build_dataloaders
from nets import build_model
from nets.weights import load_weights, read_checkpoint
from utils.checkpoint import (
    BEST_NAME,
    LATEST_NAME,
    check_free_space,
    checkpoint_payload,
    create_session_dir,
    ensure_writable,
    estimated_checkpoint_bytes,
    resolve_session,
    save_checkpoint,
)
from utils.config import Config, load_config, parse_override
from utils.data_files import DatasetError
from utils.engine import NonFiniteLossError, TrainingInterrupted, evaluate, train_one_epoch
from utils.logger import setup_logging
from utils.losses import RecLMISCriterion
from utils.misc import get_device, rng_state, set_rng_state, set_seed, tune_cpu_allocator
from utils.schedulers import build_optimizer, build_scheduler

logger = logging.getLogger("train")

LOGGED_TERMS = ("total", "seg", "dice_loss", "bce", "ccl", "text_rec", "img_rec")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train RecLMIS.")
    parser.add_argument("-c", "--config", default="Config_QaTa", help="config module or file (default Config_QaTa)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (overrides the config's device)")
    parser.add_argument("--resume", metavar="SESSION", help="continue a session (id or folder) from its latest epoch")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars (logs only)")
    return parser.parse_args(argv)


class Trainer:
    """Everything one training run holds; ``run()`` is the epoch loop."""

    def __init__(self, config: Config, session_dir: str, device: torch.device, progress: bool):
        self.config = config
        self.session_dir = session_dir
        self.device = device
        self.progress = progress
        self.loaders = build_dataloaders(config, ("train", "val"), device)
        self.model = build_model(config).to(device)
        self.criterion = RecLMISCriterion(config)
        self.optimizer = build_optimizer(config, self.model)
        self.scheduler = build_scheduler(config, self.optimizer)
        self.amp = config.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        self.start_epoch = 0
        self.best_dice = 0.0
        self.best_epoch = 0
        self.partial = None  # an interrupted epoch to continue: {"epoch", "batches_done", "meters"}
        self.last_val = {"total": float("nan"), "dice": float("nan")}
        self.writer = None

    @property
    def models_dir(self) -> str:
        return os.path.join(self.session_dir, "models")

    def checkpoint(self, epoch: int, val: dict, best: bool, partial: Optional[dict] = None) -> dict:
        """``epoch``: the last finished epoch (0-based; -1 before the first). ``partial``: the epoch in progress,
        for a checkpoint written when training is interrupted between two steps."""
        training_state = None if best else {
            "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "best_dice": self.best_dice, "best_epoch": self.best_epoch,
            "rng": rng_state(), "partial_epoch": partial}
        return checkpoint_payload(self.model, self.config, epoch, best, val, training_state)

    def resume(self) -> None:
        path = os.path.join(self.models_dir, LATEST_NAME)
        state = read_checkpoint(path, map_location="cpu")
        load_weights(self.model, state["state_dict"], source=path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_dice, self.best_epoch = state["best_dice"], state["best_epoch"]
        self.last_val = {"total": state["val_loss"], "dice": state["val_dice"]}
        self.partial = state.get("partial_epoch")
        set_rng_state(state["rng"])
        where = (f"epoch {self.start_epoch + 1} continues after batch {self.partial['batches_done']}"
                 if self.partial else f"epoch {state['epoch'] + 1} done")
        logger.info("resumed from %s: %s, best val Dice %.4f at epoch %d", path, where, self.best_dice,
                    self.best_epoch)

    def log_epoch(self, epoch: int, train: dict, val: dict, lr: float, seconds: float) -> None:
        step = epoch + 1
        for split, values in (("train", train), ("val", val)):
            for key in LOGGED_TERMS + ("dice", "iou"):
                if key in values:
                    self.writer.add_scalar(f"{split}/{key}", values[key], step)
        self.writer.add_scalar("train/lr", lr, step)
        terms = " ".join(f"{k}={train[k]:.4f}" for k in LOGGED_TERMS if k in train)
        logger.info("Epoch %d/%d  train: %s dice=%.4f iou=%.4f | val: loss=%.4f dice=%.4f iou=%.4f | lr=%.3g | %.1fs",
                    step, self.config.epochs, terms, train["dice"], train["iou"], val["total"], val["dice"],
                    val["iou"], lr, seconds)

    def log_images(self, epoch: int) -> None:
        count = self.config.tensorboard_images
        if count <= 0:
            return
        batch = next(iter(self.loaders["val"]))
        images = batch["image"][:count].to(self.device)
        self.model.eval()
        with torch.no_grad():
            probs = torch.sigmoid(self.model(images, batch["text_token"][:count].to(self.device),
                                             batch["text_mask"][:count].to(self.device))["logits"]).cpu()
        rgb = batch["image"][:count].flip(1)  # BGR -> RGB
        gt = batch["label"][:count, None].float().expand(-1, 3, -1, -1)
        pred = (probs > 0.5).float().expand(-1, 3, -1, -1)
        grid = torch.cat([torch.cat([r, g, p], dim=2) for r, g, p in zip(rgb, gt, pred)], dim=1)
        self.writer.add_image("val/input_truth_prediction", grid, epoch + 1)
        self.writer.add_text("val/reports", "  \n".join(f"{i + 1}. {t}" for i, t in enumerate(batch["text"][:count])),
                             epoch + 1)

    def _start_epoch(self, epoch: int):
        """Point the training loader at ``epoch``; returns ``(start_batch, meters)`` of an interrupted epoch."""
        cfg, loader = self.config, self.loaders["train"]
        # Order, augmentation and worker seeds depend on (seed, epoch) only: a resumed run sees the same batches.
        loader.sampler.set_epoch(epoch)
        loader.dataset.set_epoch_seed(cfg.seed + epoch)
        loader.generator.manual_seed(cfg.seed + epoch)
        if not self.partial or self.partial["epoch"] != epoch:
            return 0, None
        start, meters = self.partial["batches_done"], self.partial["meters"]
        loader.sampler.skip(start * cfg.batch_size)
        self.partial = None
        return start, meters

    def _interrupted(self, epoch: int, stopped: TrainingInterrupted, latest: str) -> None:
        partial = {"epoch": epoch, "batches_done": stopped.batches_done, "meters": stopped.meters}
        save_checkpoint(self.checkpoint(epoch - 1, self.last_val, False, partial), latest)
        logger.warning("interrupted in epoch %d after %d batches: saved %s; continue with --resume %s", epoch + 1,
                       stopped.batches_done, latest, os.path.basename(self.session_dir))

    def run(self) -> dict:
        latest = os.path.join(self.models_dir, LATEST_NAME)
        # On resume, events of epochs after the checkpoint (an epoch cut short) are purged, so no step repeats.
        self.writer = SummaryWriter(os.path.join(self.session_dir, "tensorboard_logs"),
                                    purge_step=self.start_epoch + 1 if self.start_epoch else None)
        try:
            with StopOnInterrupt() as stop:
                self._epochs(latest, stop)
        finally:
            self.writer.close()
        return {"best_dice": self.best_dice, "best_epoch": self.best_epoch, "session": self.session_dir}

    def _epochs(self, latest: str, stop: "StopOnInterrupt") -> None:
        cfg = self.config
        for epoch in range(self.start_epoch, cfg.epochs):
            started = time.time()
            lr = self.optimizer.param_groups[0]["lr"]
            start_batch, meters = self._start_epoch(epoch)
            try:
                train = train_one_epoch(self.model, self.criterion, self.loaders["train"], self.optimizer,
                                        self.device, epoch + 1, self.amp, self.scaler, self.progress, start_batch,
                                        meters, stop.requested)
            except TrainingInterrupted as stopped:
                self._interrupted(epoch, stopped, latest)
                raise KeyboardInterrupt from None
            val = evaluate(self.model, self.criterion, self.loaders["val"], self.device, epoch + 1, self.amp,
                           self.progress)
            self.last_val = val
            self.scheduler.step()
            self.log_epoch(epoch, train, val, lr, time.time() - started)
            self.log_images(epoch)
            if val["dice"] > self.best_dice:
                self.best_dice, self.best_epoch = val["dice"], epoch + 1
                save_checkpoint(self.checkpoint(epoch, val, True), os.path.join(self.models_dir, BEST_NAME))
                logger.info("\tbest val Dice so far (%.4f): saved %s", val["dice"], BEST_NAME)
            save_checkpoint(self.checkpoint(epoch, val, False), latest)
            self.writer.flush()
            if stop.requested():
                logger.warning("interrupted after epoch %d: saved %s; continue with --resume %s", epoch + 1, latest,
                               os.path.basename(self.session_dir))
                raise KeyboardInterrupt
            if epoch + 1 - self.best_epoch > cfg.early_stopping_patience:
                logger.info("early stopping: no better val Dice for %d epochs", cfg.early_stopping_patience)
                break


class StopOnInterrupt:
    """While active, the first Ctrl-C (SIGINT) only asks training to stop after the current step (which then
    saves the latest checkpoint); a second one stops at once. Outside the main thread it does nothing."""

    def __init__(self):
        self._requested = False
        self._previous = None

    def requested(self) -> bool:
        return self._requested

    def _handle(self, signum, frame) -> None:
        if self._requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self._requested = True
        logger.warning("Ctrl-C: stopping after this step and saving the latest checkpoint (Ctrl-C again to quit "
                       "at once, without saving)")

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        if args.device:
            config = config.replace(device=args.device)
        device = get_device(config.device)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.resume:
        try:
            session_dir = resolve_session(args.resume, config.output_root, config.task_name)
            saved = read_checkpoint(os.path.join(session_dir, "models", LATEST_NAME))
            # The session's own config, with this command's --set on top (e.g. epochs=... to train longer).
            config = Config.from_dict(saved["config"]).replace(**dict(parse_override(item) for item in args.set))
        except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
            print(f"error: cannot resume: {error}", file=sys.stderr)
            return 2
        del saved
    try:
        if args.resume:
            ensure_writable(os.path.join(session_dir, "models"))
        else:
            session_dir = create_session_dir(config.output_root, config.task_name)
            with open(os.path.join(session_dir, "config.json"), "w") as handle:
                json.dump(config.to_dict(), handle, indent=2)
    except OSError as error:
        print(f"error: cannot write the session under {config.output_root!r}: {error}", file=sys.stderr)
        return 2
    setup_logging(os.path.join(session_dir, os.path.basename(session_dir) + ".log"))
    tune_cpu_allocator()
    logger.info("session %s, config %s, device %s", session_dir, args.config, device)
    set_seed(config.seed, config.deterministic)
    try:
        trainer = Trainer(config, session_dir, device, progress=not args.no_progress)
        check_free_space(trainer.models_dir, estimated_checkpoint_bytes(trainer.model))
        if args.resume:
            trainer.resume()
        result = trainer.run()
    except (DatasetError, OSError, NonFiniteLossError) as error:
        logger.error("error: %s", error.strerror if isinstance(error, OSError) and error.strerror else error)
        return 1
    except KeyboardInterrupt:
        return 130
    logger.info("done: best val Dice %.4f at epoch %d; session %s", result["best_dice"], result["best_epoch"],
                result["session"])
    print(os.path.basename(session_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train RecLMIS.

    python train_model.py -c Config_QaTa [--set key=value ...] [--device cpu|cuda] [--resume SESSION]
    sh train.sh <gpu ids|cpu> <Config> [more args]

Each epoch trains, then validates with no gradient; the best checkpoint is kept on validation Dice (the authors'
rule: strictly greater), the latest every epoch, and training stops after ``early_stopping_patience`` epochs
without a better Dice. Everything goes to ``<output_root>/<task_name>/RecLMIS/session_MM.DD_HHhMM/``.

This entry point is longer than our usual 400 lines on purpose: it is the one place where data, model, losses,
checkpoints, logging, signals and distribution meet (the :class:`Trainer`), and its resume and interrupt handling
is one state machine with the epoch loop it guards; the pieces it wires live in ``utils/``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from typing import List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from Load_Dataset import ReportsSwapped, build_dataloader, build_dataloaders, fit_token_len
from nets import build_model
from nets.weights import load_weights
from utils.checkpoints import BEST_NAME, LATEST_NAME, best_checkpoint_note, check_frozen, frozen_sha256
from utils.config import Config, add_set_flag, load_config, parse_override
from utils.data.records import DatasetError
from utils.data.reports import text_derangement
from utils.inference.figures import column_header, draw_session_curves
from utils.logger import setup_logging
from utils.memory import tune_cpu_allocator
from utils.misc import get_device, rng_state, set_rng_state, set_seed
from utils.sessions import SessionInUseError, SessionLock, append_epoch, create_session_dir, resolve_session
from utils.training.checkpoint import (
    check_free_space,
    checkpoint_payload,
    compact_optimizer_state,
    ensure_writable,
    estimated_checkpoint_bytes,
    remove_stale_temporaries,
    save_checkpoint,
)
from utils.training.distributed import Distributed, convert_sync_batchnorm, gather_with_grad, init_distributed
from utils.training.engine import NonFiniteLossError, TrainingInterrupted, evaluate, evaluate_dice, train_one_epoch
from utils.training.losses import RecLMISCriterion
from utils.training.precision import check_cpu_amp
from utils.training.schedulers import build_optimizer, build_scheduler
from utils.weights_io import is_mappable, read_checkpoint

logger = logging.getLogger("train")

LOGGED_TERMS = ("total", "seg", "dice_loss", "bce", "ccl", "text_rec", "img_rec")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train RecLMIS.")
    parser.add_argument("-c", "--config", default="Config_QaTa", help="config module or file (default Config_QaTa)")
    add_set_flag(parser)
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (overrides the config's device)")
    parser.add_argument("--resume", metavar="SESSION", help="continue a session (id or folder) from its latest epoch")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars (logs only)")
    return parser.parse_args(argv)


class Trainer:
    """Everything one training run holds; ``run()`` is the epoch loop."""

    def __init__(self, config: Config, session_dir: str, device: torch.device, progress: bool,
                 dist: Optional[Distributed] = None):
        self.config = config
        self.session_dir = session_dir
        self.device = device
        self.dist = dist = dist or Distributed()
        self.progress = progress and dist.is_main
        self.loaders = self._build_loaders()
        # raw_model: the RecLMIS itself (checkpoints, evaluation); model: what training calls (DDP when distributed).
        self.raw_model = build_model(config).to(device)
        self.model = self.raw_model
        gather = None
        if dist.enabled:
            if config.sync_bn:
                self.raw_model = convert_sync_batchnorm(self.raw_model, device)
            # find_unused_parameters: conv_sig and parts of the reconstruction decoders get no gradient.
            self.model = DistributedDataParallel(self.raw_model, device_ids=[device.index] if device.type == "cuda"
                                                 else None, find_unused_parameters=True)
            gather = gather_with_grad if config.ccl_gather else None
            if dist.rank > 0:  # dropout and the masking draws: each process its own stream (rank 0 keeps seed's)
                torch.manual_seed(config.seed + dist.rank)
        self.criterion = RecLMISCriterion(config, gather=gather)
        self.val_criterion = RecLMISCriterion(config)
        # A latest checkpoint leaves out a frozen CLIP tower that clip_weights rebuilds (an hf tower stays in it).
        self.frozen_sha256 = frozen_sha256(self.raw_model) if _omits_frozen_tower(config) else None
        self.optimizer = build_optimizer(config, self.raw_model)
        self.scheduler = build_scheduler(config, self.optimizer)
        self.amp = config.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        self.start_epoch = 0
        self.best_dice = 0.0
        self.best_epoch = 0
        self.partial = None  # an interrupted epoch to continue: {"epoch", "batches_done", "meters"}
        self.last_val = {"total": float("nan"), "dice": float("nan")}
        self.writer = None

    def check_amp(self) -> None:
        """With ``amp=True`` on the CPU, where bf16 is faster on some CPUs and slower on others: time a step both
        ways (one process; :func:`utils.training.precision.check_cpu_amp`), or warn (a distributed run, whose
        copies would join the processes' collectives)."""
        if not (self.amp and self.device.type == "cpu"):
            return
        if not self.dist.enabled:
            check_cpu_amp(self.raw_model, self.criterion, next(iter(self.loaders["val"])), self.device)
        elif self.dist.is_main:
            logger.warning("amp=True on the CPU trains in bf16 autocast, which is faster on some CPUs and slower on "
                           "others (docs/PERFORMANCE.md). Time both here before a long run: python -m "
                           "tools.benchmark -c <config> --batch_sizes 1 --train_batch %d", self.config.batch_size)

    def _build_loaders(self) -> dict:
        """Loaders of this process's share (``batch_size / world_size`` per step); in a distributed run, rank 0
        writes the demo set and checks the data while the others wait for its verdict."""
        cfg, dist = self.config, self.dist
        if cfg.batch_size % dist.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} (the global batch) must be a multiple of the "
                             f"{dist.world_size} processes")
        share = cfg.replace(batch_size=cfg.batch_size // dist.world_size)
        loaders = self._checked_loaders(share)
        if cfg.val_text_check_every:  # the validation split with its reports deranged, sharded alike
            val = loaders["val"].dataset
            donor, unchanged = text_derangement(val.reports, cfg.seed)
            if dist.is_main:
                logger.info("val/dice_shuffled: reports deranged over different texts; %d of %d images (%.1f%%) "
                            "could not be given another text", unchanged, len(val), 100 * unchanged / len(val))
            loaders["val_shuffled"] = build_dataloader(share, "val", self.device, ReportsSwapped(val, donor),
                                                       dist.world_size, dist.rank)
        return loaders

    def _checked_loaders(self, share: Config) -> dict:
        dist = self.dist
        if not dist.enabled:
            return build_dataloaders(share, ("train", "val"), self.device)
        loaders, error = None, None
        if dist.is_main:
            try:
                loaders = build_dataloaders(share, ("train", "val"), self.device, dist.world_size, dist.rank)
            except DatasetError as failure:
                error = str(failure)
        error = dist.broadcast(error)
        if error is not None:
            raise DatasetError(error)
        if loaders is None:
            loaders = build_dataloaders(share, ("train", "val"), self.device, dist.world_size, dist.rank, check=False)
        return loaders

    @property
    def models_dir(self) -> str:
        return os.path.join(self.session_dir, "models")

    def checkpoint(self, epoch: int, val: dict, best: bool, partial: Optional[dict] = None,
                   rngs: Optional[list] = None) -> dict:
        """``epoch``: the last finished epoch (0-based; -1 before the first). ``partial``: the epoch in progress,
        for a checkpoint written when training is interrupted between two steps. ``rngs``: every process's RNG
        states (:meth:`Distributed.gather`), rank 0's first."""
        rngs = rngs or [rng_state()]
        if best:
            return checkpoint_payload(self.raw_model, self.config, epoch, best, val)
        optimizer = self.optimizer.state_dict()
        if self.config.compact_resume:
            optimizer = compact_optimizer_state(optimizer)
        training_state = {
            "optimizer": optimizer, "lr_scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "best_dice": self.best_dice, "best_epoch": self.best_epoch,
            "rng": rngs[0], "rng_by_rank": rngs, "partial_epoch": partial}
        # The latest file leaves out the frozen tower when clip_weights can rebuild it (checked on resume).
        return checkpoint_payload(self.raw_model, self.config, epoch, best, val, training_state, self.frozen_sha256)

    def resume(self) -> None:
        path = os.path.join(self.models_dir, LATEST_NAME)
        state = read_checkpoint(path, map_location="cpu")
        tensors = state["state_dict"]
        omitted = state.get("frozen_omitted")
        if omitted:  # the frozen tower: this model's, built from clip_weights, if it is the run's
            check_frozen(self.raw_model, omitted, path, self.frozen_sha256)
            own = self.raw_model.state_dict()
            tensors = {**tensors, **{name: own[name] for name in omitted["names"] if name in own}}
        load_weights(self.raw_model, tensors, source=path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_dice, self.best_epoch = state["best_dice"], state["best_epoch"]
        self.last_val = {"total": state["val_loss"], "dice": state["val_dice"]}
        self.partial = state.get("partial_epoch")
        by_rank = state.get("rng_by_rank") or [state["rng"]]
        if len(by_rank) == self.dist.world_size:
            set_rng_state(by_rank[self.dist.rank])
        else:  # another number of processes than the run had: rank 0 continues, the others start new streams
            set_rng_state(state["rng"])
            if self.dist.rank > 0:
                torch.manual_seed(self.config.seed + 1000 * self.start_epoch + self.dist.rank)
            logger.warning("resuming with %d process(es) where the run had %d: random draws (dropout, masking) "
                           "do not continue exactly", self.dist.world_size, len(by_rank))
        where = (f"epoch {self.start_epoch + 1} continues after batch {self.partial['batches_done']}"
                 if self.partial else f"epoch {state['epoch'] + 1} done")
        logger.info("resumed from %s: %s, best val Dice %.4f at epoch %d", path, where, self.best_dice,
                    self.best_epoch)

    def log_epoch(self, epoch: int, train: dict, val: dict, lr: float, seconds: float) -> None:
        if not self.dist.is_main:
            return
        step = epoch + 1
        for split, values in (("train", train), ("val", val)):
            for key in LOGGED_TERMS + ("dice", "iou", "dice_shuffled", "text_gain"):
                if key in values:
                    self.writer.add_scalar(f"{split}/{key}", values[key], step)
        self.writer.add_scalar("train/lr", lr, step)
        # One structured record per epoch, for the curves and any other reader (the log line is for people).
        # Its keys are the log line's: the validation total is "loss".
        append_epoch(self.session_dir, {"epoch": step, "train": {k: float(v) for k, v in train.items()},
                                        "val": {("loss" if k == "total" else k): float(v) for k, v in val.items()},
                                        "lr": lr, "seconds": seconds})
        terms = " ".join(f"{k}={train[k]:.4f}" for k in LOGGED_TERMS if k in train)
        reading = "".join(f" {k}={val[k]:.4f}" for k in ("dice_shuffled", "text_gain") if k in val)
        logger.info("Epoch %d/%d  train: %s dice=%.4f iou=%.4f | val: loss=%.4f dice=%.4f iou=%.4f%s | lr=%.3g | "
                    "%.1fs", step, self.config.epochs, terms, train["dice"], train["iou"], val["total"], val["dice"],
                    val["iou"], reading, lr, seconds)

    def log_images(self, epoch: int) -> None:
        count = self.config.tensorboard_images
        if count <= 0 or not self.dist.is_main:
            return
        batch = next(iter(self.loaders["val"]))
        images = batch["image"][:count].to(self.device)
        self.raw_model.eval()
        with torch.no_grad():
            probs = torch.sigmoid(self.raw_model(images, batch["text_token"][:count].to(self.device),
                                             batch["text_mask"][:count].to(self.device))["logits"]).cpu()
        rgb = batch["image"][:count].flip(1)  # BGR -> RGB
        gt = batch["label"][:count, None].float().expand(-1, 3, -1, -1)
        pred = (probs > 0.5).float().expand(-1, 3, -1, -1)
        grid = torch.cat([torch.cat([r, g, p], dim=2) for r, g, p in zip(rgb, gt, pred)], dim=1)
        header = torch.from_numpy(column_header(["input", "truth", "prediction"], rgb.shape[-1]))
        self.writer.add_image("val/input_truth_prediction", torch.cat([header, grid], dim=1), epoch + 1)
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
        start = self.partial["batches_done"]
        meters = self.partial["meters"] if self.dist.is_main else None
        loader.sampler.skip(start * loader.batch_size)
        self.partial = None
        return start, meters

    def _save_epoch(self, epoch: int, val: dict, improved: bool, latest: str, rngs: list) -> None:
        if improved:
            save_checkpoint(self.checkpoint(epoch, val, True), os.path.join(self.models_dir, BEST_NAME))
            logger.info("\tbest val Dice so far (%.4f): saved %s", val["dice"], BEST_NAME)
        save_checkpoint(self.checkpoint(epoch, val, False, rngs=rngs), latest)
        self.writer.flush()

    def on_main(self, action) -> None:
        """Run ``action`` (a write) on rank 0 only; if it fails, every process stops with the error."""
        error = None
        if self.dist.is_main:
            try:
                action()
            except OSError as failure:
                error = failure
        if self.dist.any(error is not None):
            raise error if error is not None else OSError("rank 0 could not write a checkpoint (see its log)")

    def _interrupted(self, epoch: int, stopped: TrainingInterrupted, latest: str) -> None:
        partial = {"epoch": epoch, "batches_done": stopped.batches_done, "meters": stopped.meters}
        rngs = self.dist.gather(rng_state())
        # The meters hold the sums over all processes: rank 0 writes them and resumes with them.
        self.on_main(lambda: save_checkpoint(self.checkpoint(epoch - 1, self.last_val, False, partial, rngs),
                                             latest))
        logger.warning("interrupted in epoch %d after %d batches: saved %s; continue with --resume %s", epoch + 1,
                       stopped.batches_done, latest, os.path.basename(self.session_dir))

    def run(self) -> dict:
        latest = os.path.join(self.models_dir, LATEST_NAME)
        # On resume, events of epochs after the checkpoint (an epoch cut short) are purged, so no step repeats.
        if self.dist.is_main:
            self.writer = SummaryWriter(os.path.join(self.session_dir, "tensorboard_logs"),
                                        purge_step=self.start_epoch + 1 if self.start_epoch else None)
        try:
            with StopOnInterrupt() as stop:
                self._epochs(latest, stop)
        finally:
            if self.writer is not None:
                self.writer.close()
        if self.dist.is_main:
            try:
                logger.info("training curves: %s", draw_session_curves(self.session_dir))
            except ValueError as reason:  # no finished epoch yet
                logger.info("no training curves: %s", reason)
            except OSError as failure:  # the run itself is done and saved: say so, do not fail it
                logger.warning("could not write the training curves: %s", failure)
        return {"best_dice": self.best_dice, "best_epoch": self.best_epoch, "session": self.session_dir}

    def _epochs(self, latest: str, stop: "StopOnInterrupt") -> None:
        cfg = self.config
        for epoch in range(self.start_epoch, cfg.epochs):
            started = time.time()
            lr = self.optimizer.param_groups[0]["lr"]
            start_batch, meters = self._start_epoch(epoch)
            reduce = self.dist.all_reduce_sums if self.dist.enabled else None
            try:
                train = train_one_epoch(self.model, self.criterion, self.loaders["train"], self.optimizer,
                                        self.device, epoch + 1, amp=self.amp, scaler=self.scaler,
                                        progress=self.progress, start_batch=start_batch, meters=meters,
                                        stop_requested=lambda: self.dist.any(stop.requested()), reduce=reduce,
                                        any_rank=self.dist.any if self.dist.enabled else None)
            except TrainingInterrupted as stopped:
                self._interrupted(epoch, stopped, latest)
                raise KeyboardInterrupt from None
            self.dist.broadcast_buffers(self.raw_model)  # without sync_bn the ranks' running statistics differ
            val = evaluate(self.raw_model, self.val_criterion, self.loaders["val"], self.device, epoch=epoch + 1,
                           amp=self.amp, progress=self.progress, reduce=reduce,
                           any_rank=self.dist.any if self.dist.enabled else None)
            every = cfg.val_text_check_every
            if every and (epoch + 1) % every == 0:
                shuffled = evaluate_dice(self.raw_model, self.loaders["val_shuffled"], self.device, epoch=epoch + 1,
                                         amp=self.amp, progress=self.progress, desc="val shuffled reports",
                                         reduce=reduce)
                val = {**val, "dice_shuffled": shuffled["dice"], "text_gain": val["dice"] - shuffled["dice"]}
            self.last_val = val
            self.scheduler.step()
            self.log_epoch(epoch, train, val, lr, time.time() - started)
            self.log_images(epoch)
            improved = val["dice"] > self.best_dice
            if improved:
                self.best_dice, self.best_epoch = val["dice"], epoch + 1
            rngs = self.dist.gather(rng_state())
            self.on_main(functools.partial(self._save_epoch, epoch, val, improved, latest, rngs))
            if self.dist.any(stop.requested()):
                logger.warning("interrupted after epoch %d: saved %s; continue with --resume %s", epoch + 1, latest,
                               os.path.basename(self.session_dir))
                raise KeyboardInterrupt
            if epoch + 1 - self.best_epoch > cfg.early_stopping_patience:
                logger.info("early stopping: no better val Dice for %d epochs", cfg.early_stopping_patience)
                break


class StopOnInterrupt:
    """While active, the first Ctrl-C (SIGINT; torchrun passes it on to its processes) or a SIGTERM (a scheduler's
    preemption) only asks training to stop after the current step, which then saves the latest checkpoint; a
    second Ctrl-C stops at once. Outside the main thread it does nothing."""

    def __init__(self):
        self._requested = False
        self._previous = {}

    def requested(self) -> bool:
        return self._requested

    def _handle(self, signum, frame) -> None:
        if self._requested and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if not self._requested:
            logger.warning("%s: stopping after this step and saving the latest checkpoint (Ctrl-C again to quit at "
                           "once, without saving)", signal.Signals(signum).name)
        self._requested = True

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _discard_untrained(session_dir: str, resumed: bool, dist: Distributed, lock: Optional[SessionLock]) -> None:
    """Remove a new session folder that nothing was trained in (a resumed one is kept); its lock is given back
    first (Windows cannot remove an open file)."""
    if not resumed and dist.is_main:
        if lock is not None:
            lock.release()
        discard_session(session_dir)
        logger.error("nothing was trained: the new session folder %s was removed", session_dir)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        if args.device:
            config = config.replace(device=args.device)
        device = get_device(config.device)
        dist = init_distributed(device.type)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    try:
        return _train(args, config, device, dist)
    finally:
        dist.cleanup()


# Fields a resumed run cannot take from --set: the optimizer, schedule and data order continue from the checkpoint.
RESUME_FIXED = frozenset({"learning_rate", "lr", "weight_decay", "batch_size", "seed"})


def _open_session(args, config: Config, dist: Distributed):
    """``(session_dir, config, lock, error)``: the session to train in (created by rank 0, or the one resumed) and
    rank 0's lock on it (:class:`SessionLock`, held for the whole run; None on the other ranks and on error)."""
    session_dir, lock, error = None, None, None
    if not args.resume and config.fit_token_len:  # a resumed session keeps the token_len it was fitted to
        config = fit_token_len(config)
    if args.resume:
        try:
            session_dir = resolve_session(args.resume, config.output_root, config.task_name)
            if dist.is_main:  # before anything is read or written: a second training of the session stops here
                lock = SessionLock(session_dir).acquire()
            latest = os.path.join(session_dir, "models", LATEST_NAME)
            try:
                saved = read_checkpoint(latest, mmap=is_mappable(latest))  # the config only: no tensor is read here
            except (FileNotFoundError, ValueError) as failure:  # say whether the best checkpoint can still be used
                raise ValueError(f"{failure}; {best_checkpoint_note(session_dir, args.config)}") from None
            # The session's own config, with this command's --set on top (e.g. epochs=... to train longer).
            overrides = dict(parse_override(item) for item in args.set)
            fixed = sorted(set(overrides) & RESUME_FIXED)
            if fixed:
                raise ValueError(f"--set {', '.join(fixed)} cannot change on --resume: the optimizer and schedule "
                                 "continue from the checkpoint's state; start a new session to change them")
            config = Config.from_dict(saved["config"]).replace(**overrides)
            if dist.is_main:
                ensure_writable(os.path.join(session_dir, "models"))
        except OSError as failure:
            error = f"cannot resume: {failure.strerror or failure}" if failure.errno else f"cannot resume: {failure}"
        except (KeyError, TypeError, ValueError, SessionInUseError) as failure:
            error = f"cannot resume: {failure}"
    elif dist.is_main:
        try:
            session_dir = create_session_dir(config.output_root, config.task_name)
            lock = SessionLock(session_dir).acquire()  # no other process knows the new folder yet: never refused
            with open(os.path.join(session_dir, "config.json"), "w") as handle:
                json.dump(config.to_dict(), handle, indent=2)
        except OSError as failure:
            error = f"cannot write the session under {config.output_root!r}: {failure}"
    if dist.any(error is not None) and error is None:
        error = "another process could not open the session (see its message)"
    if error is not None and lock is not None:
        lock.release()
        lock = None
    return dist.broadcast(session_dir), config, lock, error


def _omits_frozen_tower(config: Config) -> bool:
    """Whether latest checkpoints leave out the frozen text tower: a CLIP tower that ``clip_weights`` rebuilds."""
    return config.text_encoder == "clip" and config.clip_weights is not None


def _log_error(error: Exception) -> None:
    """``error: <message>`` in the log; for an OSError its plain reason (``No space left on device``)."""
    logger.error("error: %s", error.strerror if isinstance(error, OSError) and error.strerror else error)


def discard_session(session_dir: str) -> None:
    """Remove a session folder that a failed start created: close its log file first."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and handler.baseFilename.startswith(os.path.abspath(session_dir)):
            root.removeHandler(handler)
            handler.close()
    try:
        shutil.rmtree(session_dir)
    except OSError as failure:
        logger.warning("could not remove the unused session folder %s: %s", session_dir, failure)


def _train(args, config: Config, device: torch.device, dist: Distributed) -> int:
    session_dir, config, lock, error = _open_session(args, config, dist)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return _train_session(args, config, device, dist, session_dir, lock)
    finally:
        if lock is not None:  # on every way out: done, an error, Ctrl-C
            lock.release()


def _train_session(args, config: Config, device: torch.device, dist: Distributed, session_dir: str,
                   lock: Optional[SessionLock]) -> int:
    """Train in the opened session; rank 0 holds its ``lock`` throughout."""
    if dist.is_main:
        setup_logging(os.path.join(session_dir, os.path.basename(session_dir) + ".log"))
    else:
        setup_logging(level=logging.WARNING)
    tune_cpu_allocator()
    logger.info("session %s, config %s, device %s%s", os.path.abspath(session_dir), args.config, device,
                f", {dist.world_size} processes ({dist.backend})" if dist.enabled else "")
    # Relative paths of the config resolve against the working directory: say where each one lands.
    if config.text_encoder == "hf":
        tower = f"hf encoder {config.hf_text_model}"
    else:
        tower = f"CLIP {os.path.abspath(config.clip_weights)}" if config.clip_weights else "none (random CLIP tower)"
    logger.info("working directory %s; data %s, %s, %s; text tower %s", os.getcwd(),
                *(os.path.abspath(getattr(config, f"{split}_dataset")) for split in ("train", "val", "test")), tower)
    logger.info("token_len %d%s%s", config.token_len,
                " (fitted to the training reports)" if config.fit_token_len else "",
                "; use_report=False: the no-language control, every image reads one empty report"
                if not config.use_report else "")
    set_seed(config.seed, config.deterministic)
    try:
        trainer = Trainer(config, session_dir, device, progress=not args.no_progress, dist=dist)
        trainer.on_main(functools.partial(check_free_space, trainer.models_dir,
                                          estimated_checkpoint_bytes(trainer.raw_model, _omits_frozen_tower(config),
                                                                     config.compact_resume)))
        trainer.check_amp()
    except (DatasetError, OSError, ValueError) as error:  # nothing trained yet: a new session leaves nothing behind
        _log_error(error)
        _discard_untrained(session_dir, args.resume, dist, lock)
        return 1
    except KeyboardInterrupt:
        _discard_untrained(session_dir, args.resume, dist, lock)
        return 130
    try:
        if args.resume:
            if dist.is_main:
                for name in remove_stale_temporaries(trainer.models_dir):
                    logger.info("removed %s, left by a save that was killed", name)
            trainer.resume()
        result = trainer.run()
    except (DatasetError, OSError, ValueError, NonFiniteLossError) as error:
        _log_error(error)
        return 1
    except KeyboardInterrupt:
        return 130
    logger.info("done: best val Dice %.4f at epoch %d; session %s", result["best_dice"], result["best_epoch"],
                result["session"])
    dist.barrier()  # every process leaves together, after rank 0 has written its last file
    if dist.is_main:
        print(os.path.basename(session_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

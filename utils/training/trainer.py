"""The epoch loop: one training run in an opened session folder, on one process or several (DDP).

:class:`Trainer` wires the loaders, model, losses, optimizer and checkpoints together and runs the epochs: train,
validate (and every ``val_text_check_every`` epochs validate again with the reports deranged between images), log
to the text log, ``epochs.jsonl`` and TensorBoard, keep the best and latest checkpoints
(:class:`~utils.training.checkpoint.SessionCheckpoints`), stop early. :class:`StopOnInterrupt` turns a first Ctrl-C
or SIGTERM into a stop after the current step, with a checkpoint. Opening a session and the exit codes:
:mod:`utils.training.run`.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from typing import Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from Load_Dataset import ReportsSwapped, build_dataloader, build_dataloaders
from nets import build_model
from nets.weights import nudge_weights
from utils.config import Config
from utils.curves import column_header, draw_session_curves
from utils.data.records import DatasetError
from utils.data.reports import text_derangement
from utils.misc import rng_state
from utils.sessions import append_epoch
from utils.training.checkpoint import SessionCheckpoints, TrainState
from utils.training.distributed import Distributed, convert_sync_batchnorm, gather_with_grad
from utils.training.engine import TrainingInterrupted, evaluate, evaluate_dice, train_one_epoch
from utils.training.losses import LOGGED_TERMS, build_criterion
from utils.training.precision import check_cpu_amp
from utils.training.schedulers import build_optimizer, build_scheduler

logger = logging.getLogger("train")


class Trainer:
    """Everything one training run holds; :meth:`run` is the epoch loop, :meth:`resume` continues a session."""

    def __init__(self, config: Config, session_dir: str, device: torch.device, progress: bool,
                 dist: Optional[Distributed] = None):
        self.config = config
        self.session_dir = session_dir
        self.device = device
        self.dist = dist = dist or Distributed()
        self.progress = progress and dist.is_main
        self.loaders = self._build_loaders()
        # raw_model: the network itself (checkpoints, evaluation); model: what training calls (DDP when distributed).
        self.raw_model = build_model(config).to(device)
        if config.init_nudge_ulp:
            nudge_weights(self.raw_model, config.init_nudge_ulp)
        if config.channels_last:  # the weights' layout carries over to every convolution's output
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
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
        self.criterion = build_criterion(config, gather=gather)
        self.val_criterion = build_criterion(config)
        self.optimizer = build_optimizer(config, self.raw_model)
        self.scheduler = build_scheduler(config, self.optimizer)
        self.amp = config.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        self.checkpoints = SessionCheckpoints(session_dir, self.raw_model, self.optimizer, self.scheduler,
                                              self.scaler, config)
        self.state = TrainState()
        self.writer = None

    def check_space(self) -> None:
        """Stop before training (every process) when rank 0's disk cannot hold the checkpoints."""
        self.on_main(self.checkpoints.check_space)

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

    def resume(self) -> None:
        """Continue from the session's latest checkpoint (model, optimizer, schedule, RNG, an unfinished epoch)."""
        self.state = self.checkpoints.resume(self.dist.world_size, self.dist.rank)

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

    def log_epoch(self, epoch: int, train: dict, val: dict, lr: float, seconds: float) -> None:
        """The epoch's line in the log, its record in ``epochs.jsonl`` and its TensorBoard scalars (rank 0)."""
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
        """``tensorboard_images`` validation images beside their truth and prediction, with their reports."""
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
        cfg, loader, partial = self.config, self.loaders["train"], self.state.partial
        # Order, augmentation and worker seeds depend on (seed, epoch) only: a resumed run sees the same batches.
        loader.sampler.set_epoch(epoch)
        loader.dataset.set_epoch_seed(cfg.seed + epoch)
        loader.generator.manual_seed(cfg.seed + epoch)
        if not partial or partial["epoch"] != epoch:
            return 0, None
        start = partial["batches_done"]
        meters = partial["meters"] if self.dist.is_main else None
        loader.sampler.skip(start * loader.batch_size)
        self.state.partial = None
        return start, meters

    def on_main(self, action: Callable[[], None]) -> None:
        """Run ``action`` (a write) on rank 0 only; if it fails, every process stops with the error."""
        error = None
        if self.dist.is_main:
            try:
                action()
            except OSError as failure:
                error = failure
        if self.dist.any(error is not None):
            raise error if error is not None else OSError("rank 0 could not write a checkpoint (see its log)")

    def _interrupted(self, epoch: int, stopped: TrainingInterrupted) -> None:
        rngs = self.dist.gather(rng_state())
        # The meters hold the sums over all processes: rank 0 writes them and resumes with them.
        self.on_main(lambda: self.checkpoints.save_partial(epoch, stopped.batches_done, stopped.meters, self.state,
                                                           rngs))
        logger.warning("interrupted in epoch %d after %d batches: saved %s; continue with --resume %s", epoch + 1,
                       stopped.batches_done, self.checkpoints.latest_path, self.session_id)

    @property
    def session_id(self) -> str:
        return os.path.basename(os.path.normpath(self.session_dir))

    def run(self) -> dict:
        """Train from ``state.start_epoch`` to the end, early stopping or an interrupt (``KeyboardInterrupt``
        after the latest checkpoint is saved). Returns ``{"best_dice", "best_epoch", "session"}``."""
        # On resume, events of epochs after the checkpoint (an epoch cut short) are purged, so no step repeats.
        start = self.state.start_epoch
        if self.dist.is_main:
            self.writer = SummaryWriter(os.path.join(self.session_dir, "tensorboard_logs"),
                                        purge_step=start + 1 if start else None)
        try:
            with StopOnInterrupt() as stop:
                self._epochs(stop)
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
        return {"best_dice": self.state.best_dice, "best_epoch": self.state.best_epoch, "session": self.session_dir}

    def _epochs(self, stop: "StopOnInterrupt") -> None:
        cfg, state, dist = self.config, self.state, self.dist
        reduce = dist.all_reduce_sums if dist.enabled else None
        any_rank = dist.any if dist.enabled else None
        for epoch in range(state.start_epoch, cfg.epochs):
            started = time.time()
            lr = self.optimizer.param_groups[0]["lr"]
            start_batch, meters = self._start_epoch(epoch)
            try:
                train = train_one_epoch(self.model, self.criterion, self.loaders["train"], self.optimizer,
                                        self.device, epoch + 1, amp=self.amp, scaler=self.scaler,
                                        progress=self.progress, start_batch=start_batch, meters=meters,
                                        stop_requested=lambda: dist.any(stop.requested()), reduce=reduce,
                                        any_rank=any_rank)
            except TrainingInterrupted as stopped:
                self._interrupted(epoch, stopped)
                raise KeyboardInterrupt from None
            dist.broadcast_buffers(self.raw_model)  # without sync_bn the ranks' running statistics differ
            val = evaluate(self.raw_model, self.val_criterion, self.loaders["val"], self.device, epoch=epoch + 1,
                           amp=self.amp, progress=self.progress, reduce=reduce, any_rank=any_rank)
            every = cfg.val_text_check_every
            if every and (epoch + 1) % every == 0:
                shuffled = evaluate_dice(self.raw_model, self.loaders["val_shuffled"], self.device, epoch=epoch + 1,
                                         amp=self.amp, progress=self.progress, desc="val shuffled reports",
                                         reduce=reduce)
                val = {**val, "dice_shuffled": shuffled["dice"], "text_gain": val["dice"] - shuffled["dice"]}
            state.last_val = val
            self.scheduler.step()
            self.log_epoch(epoch, train, val, lr, time.time() - started)
            self.log_images(epoch)
            improved = val["dice"] > state.best_dice  # the authors' rule: strictly better
            if improved:
                state.best_dice, state.best_epoch = val["dice"], epoch + 1
            rngs = dist.gather(rng_state())
            self.on_main(functools.partial(self._save_epoch, epoch, val, improved, rngs))
            if dist.any(stop.requested()):
                logger.warning("interrupted after epoch %d: saved %s; continue with --resume %s", epoch + 1,
                               self.checkpoints.latest_path, self.session_id)
                raise KeyboardInterrupt
            if epoch + 1 - state.best_epoch > cfg.early_stopping_patience:
                logger.info("early stopping: no better val Dice for %d epochs", cfg.early_stopping_patience)
                break

    def _save_epoch(self, epoch: int, val: dict, improved: bool, rngs: list) -> None:
        self.checkpoints.save_epoch(epoch, val, self.state, improved, rngs)
        self.writer.flush()


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

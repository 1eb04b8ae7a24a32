"""Writing checkpoints: what they hold, written so that a crash never leaves a broken file, and resuming from them.

:class:`SessionCheckpoints` is the one owner of a training session's checkpoints: it saves the best and the latest
and resumes from the latest. :func:`checkpoint_payload` defines what a file holds and :func:`save_checkpoint`
writes it atomically; :func:`compact_state_dict` stores the
frozen CLIP tower in fp16 (losslessly), and a latest checkpoint may leave the tower out altogether
(``frozen_omitted``: :func:`omitted_frozen_record`, checked by :func:`utils.checkpoints.check_frozen`).

Reading them and rebuilding the model: :mod:`utils.checkpoints`. Where sessions live: :mod:`utils.sessions`.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

from nets.models import model_kind
from nets.text_towers import text_tower_kind
from nets.weights import load_weights
from utils.checkpoints import LATEST_NAME, best_name, check_frozen, frozen_names, frozen_sha256
from utils.misc import set_rng_state
from utils.weights_io import read_checkpoint

logger = logging.getLogger(__name__)
TMP_PREFIX = ".tmp_"


def checkpoint_payload(model, config, epoch: int, best: bool, val: dict, training_state: dict = None,
                       frozen_sha256: str = None) -> dict:
    """What a checkpoint file holds.

    Every file: ``epoch`` (0-based), ``best_model``, ``model``, ``state_dict`` (:func:`compact_state_dict`),
    ``val_loss``, ``val_dice`` and the resolved ``config``. The latest checkpoint adds ``training_state``'s entries
    (optimizer, scheduler, grad scaler, best score, RNG states), which only resuming needs; the best checkpoint
    leaves them out, which keeps it under a third of the size.

    Args:
        frozen_sha256: given (:func:`frozen_sha256`), the frozen CLIP text tower is left out of
            ``state_dict``: it is rebuilt from ``config.clip_weights``, which must then be a file. The payload
            records the file, the digest and the names under ``frozen_omitted``; resuming and
            :func:`build_model_from_checkpoint` check the rebuilt tower against the digest.
    """
    omitted = frozen_names(model) if frozen_sha256 is not None else []
    if omitted and config.clip_weights is None:
        raise ValueError("a random text tower (clip_weights=None) cannot be rebuilt: keep it in the checkpoint")
    payload = {"epoch": epoch, "best_model": best, "model": model_kind(config.model).folder,
               "state_dict": compact_state_dict(model, leave_out=omitted), "val_loss": float(val["total"]),
               "val_dice": float(val["dice"]), "config": config.to_dict()}
    if omitted:
        payload["frozen_omitted"] = omitted_frozen_record(model, config.clip_weights, frozen_sha256)
    payload.update(training_state or {})
    return payload


def compact_optimizer_state(state: dict) -> dict:
    """An optimizer ``state_dict`` with its fp32 per-parameter tensors (Adam's moments) stored as bf16.

    Half the size; ``Optimizer.load_state_dict`` casts them back to the parameters' dtype, so a resumed run
    continues from moments rounded to bf16 (8 significant bits): close to the interrupted run, not bit-exact.
    """
    compact = {}
    for index, entries in state["state"].items():
        compact[index] = {key: value.to(torch.bfloat16) if isinstance(value, torch.Tensor) and key != "step"
                          and value.dtype == torch.float32 else value for key, value in entries.items()}
    return {**state, "state": compact}


def save_checkpoint(state: dict, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it atomically.

    A kill or a full disk at any moment leaves the previous file at ``path`` intact.

    Raises:
        OSError: the file could not be written (full disk, no permission); the message names ``path`` and says
            that the previous file is intact.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        handle, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".pt", dir=folder)
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes the file owner-only; a checkpoint is shared as usual
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"could not write the checkpoint {path}: {reason}. The previous file there (if "
                                   "any) is intact.") from error
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the temporary files that a save killed outright (SIGKILL, power loss) left in ``folder``; returns
    their names. Only one training process writes a session's checkpoints, so at its start none is in use."""
    removed = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.startswith(TMP_PREFIX) and name.endswith(".pt"):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


def ensure_writable(folder: str) -> None:
    """Raise ``OSError`` naming ``folder`` unless a file can be created in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=folder)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise OSError(error.errno, f"cannot write to {folder}: {error.strerror or error}. Choose a writable "
                                   "output_root (--set output_root=...).") from error


def estimated_checkpoint_bytes(model, omit_frozen: bool = False, compact_resume: bool = False) -> int:
    """About the disk that ``model``'s checkpoints need: the best one, the latest one (the compact state dict,
    without the frozen tower when ``omit_frozen``, plus Adam's two moments per trainable parameter, fp32 or with
    ``compact_resume`` bf16), and a second latest while a save replaces it."""
    compact = compact_state_dict(model)
    state = sum(t.numel() * t.element_size() for t in compact.values())
    frozen = sum(compact[name].numel() * compact[name].element_size() for name in frozen_names(model))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    latest = state - (frozen if omit_frozen else 0) + (4 if compact_resume else 8) * trainable
    return state + 2 * latest  # best, latest, and a new latest beside the old one until the rename


def check_free_space(folder: str, needed: int) -> None:
    """Raise ``OSError`` before training when ``folder``'s disk has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.0f} MiB free on the disk of {folder}; this model's "
                                    f"checkpoints need about {needed / 2**20:.0f} MiB. Free some space or choose "
                                    "another output_root.")


def omitted_frozen_record(model: nn.Module, clip_weights: str, sha256: str) -> dict:
    """What a checkpoint that leaves out the frozen tensors records of them (``frozen_omitted``): the CLIP file
    as configured and as an absolute path, the digest (:func:`frozen_sha256`) and the tensor names."""
    return {"clip_weights": clip_weights, "clip_weights_abs": os.path.abspath(clip_weights), "sha256": sha256,
            "names": frozen_names(model)}


def compact_state_dict(model: nn.Module, leave_out=()) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` for our checkpoints, with each frozen fp32 parameter whose values are all exactly
    representable in fp16 stored as fp16.

    This is lossless: OpenAI released CLIP in fp16, so the frozen text tower (63 M parameters) takes half the
    space and loads back bit for bit (``load_state_dict`` copies it into the fp32 parameters). Trained
    parameters, buffers and a random text tower stay fp32. The names in ``leave_out`` are dropped.
    """
    state = model.state_dict()
    for name in leave_out:
        del state[name]
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    for name in frozen & set(state):
        tensor = state[name]
        if tensor.dtype == torch.float32:
            half = tensor.half()
            if torch.equal(half.float(), tensor):
                state[name] = half
    return state


@dataclass
class TrainState:
    """Where a run stands between epochs: what a resumed run continues from.

    ``start_epoch``: the next epoch to train (0-based). ``last_val``: the latest validation scores (``total``,
    ``dice``). ``partial``: an interrupted epoch to continue, ``{"epoch", "batches_done", "meters"}``.
    """

    start_epoch: int = 0
    best_dice: float = 0.0
    best_epoch: int = 0
    last_val: dict = field(default_factory=lambda: {"total": float("nan"), "dice": float("nan")})
    partial: Optional[dict] = None


class SessionCheckpoints:
    """The one owner of a session's checkpoints: what each file holds, saving the best and the latest, resuming.

    The best checkpoint holds the model and its scores (what testing needs); the latest adds the optimizer,
    scheduler, grad scaler, best score and every process's RNG states (what resuming needs), and leaves out a frozen
    CLIP tower that ``clip_weights`` rebuilds (its digest is checked on resume). Writes go through
    :func:`save_checkpoint`, atomic. Only rank 0 of a distributed run calls the ``save_*`` methods.
    """

    def __init__(self, session_dir: str, model: nn.Module, optimizer, scheduler, scaler, config):
        self.models_dir = os.path.join(session_dir, "models")
        self.best_name = best_name(config)
        self.best_path = os.path.join(self.models_dir, self.best_name)
        self.latest_path = os.path.join(self.models_dir, LATEST_NAME)
        self.model, self.optimizer, self.scheduler, self.scaler, self.config = (model, optimizer, scheduler, scaler,
                                                                                config)
        self.omit_frozen = omits_frozen_tower(config)
        self.frozen_sha256 = frozen_sha256(model) if self.omit_frozen else None

    def check_space(self) -> None:
        """Raise ``OSError`` before training when the session's disk cannot hold its checkpoints."""
        check_free_space(self.models_dir, estimated_checkpoint_bytes(self.model, self.omit_frozen,
                                                                     self.config.compact_resume))

    def best_payload(self, epoch: int, val: dict) -> dict:
        return checkpoint_payload(self.model, self.config, epoch, True, val)

    def latest_payload(self, epoch: int, val: dict, state: TrainState, rngs: list,
                       partial: Optional[dict] = None) -> dict:
        """``epoch``: the last finished epoch (0-based; -1 before the first). ``rngs``: every process's RNG states,
        rank 0's first. ``partial``: the epoch in progress, for a checkpoint written between two steps."""
        optimizer = self.optimizer.state_dict()
        if self.config.compact_resume:
            optimizer = compact_optimizer_state(optimizer)
        training_state = {
            "optimizer": optimizer, "lr_scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "best_dice": state.best_dice, "best_epoch": state.best_epoch, "rng": rngs[0], "rng_by_rank": rngs,
            "partial_epoch": partial}
        return checkpoint_payload(self.model, self.config, epoch, False, val, training_state, self.frozen_sha256)

    def save_epoch(self, epoch: int, val: dict, state: TrainState, improved: bool, rngs: list) -> None:
        """After a finished epoch: the best checkpoint when ``improved``, then the latest."""
        if improved:
            save_checkpoint(self.best_payload(epoch, val), self.best_path)
            logger.info("\tbest val Dice so far (%.4f): saved %s", val["dice"], self.best_name)
        save_checkpoint(self.latest_payload(epoch, val, state, rngs), self.latest_path)

    def save_partial(self, epoch: int, batches_done: int, meters: dict, state: TrainState, rngs: list) -> None:
        """Training interrupted in ``epoch`` after ``batches_done`` batches: a latest checkpoint to continue from."""
        partial = {"epoch": epoch, "batches_done": batches_done, "meters": meters}
        save_checkpoint(self.latest_payload(epoch - 1, state.last_val, state, rngs, partial), self.latest_path)

    def resume(self, world_size: int = 1, rank: int = 0) -> TrainState:
        """Load the latest checkpoint into the model, optimizer, scheduler and scaler, set this process's RNG
        state, and return where the run stands. With another number of processes than the run had, rank 0
        continues the saved stream and the others start new ones (with a warning)."""
        for name in remove_stale_temporaries(self.models_dir) if rank == 0 else ():
            logger.info("removed %s, left by a save that was killed", name)
        path = self.latest_path
        saved = read_checkpoint(path, map_location="cpu")
        tensors = saved["state_dict"]
        omitted = saved.get("frozen_omitted")
        if omitted:  # the frozen tower: this model's, built from clip_weights, if it is the run's
            check_frozen(self.model, omitted, path, self.frozen_sha256)
            own = self.model.state_dict()
            tensors = {**tensors, **{name: own[name] for name in omitted["names"] if name in own}}
        load_weights(self.model, tensors, source=path)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["lr_scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        state = TrainState(start_epoch=saved["epoch"] + 1, best_dice=saved["best_dice"],
                           best_epoch=saved["best_epoch"],
                           last_val={"total": saved["val_loss"], "dice": saved["val_dice"]},
                           partial=saved.get("partial_epoch"))
        by_rank = saved.get("rng_by_rank") or [saved["rng"]]
        if len(by_rank) == world_size:
            set_rng_state(by_rank[rank])
        else:
            set_rng_state(saved["rng"])
            if rank > 0:
                torch.manual_seed(self.config.seed + 1000 * state.start_epoch + rank)
            logger.warning("resuming with %d process(es) where the run had %d: random draws (dropout, masking) "
                           "do not continue exactly", world_size, len(by_rank))
        where = (f"epoch {state.start_epoch + 1} continues after batch {state.partial['batches_done']}"
                 if state.partial else f"epoch {saved['epoch'] + 1} done")
        logger.info("resumed from %s: %s, best val Dice %.4f at epoch %d", path, where, state.best_dice,
                    state.best_epoch)
        return state


def omits_frozen_tower(config) -> bool:
    """Whether latest checkpoints leave out the frozen text tower: one its kind rebuilds from a file (a CLIP tower
    from ``clip_weights``; an hf tower stays in them)."""
    return model_kind(config.model).has_text_tower and text_tower_kind(config.text_encoder).omitted_from_latest(config)

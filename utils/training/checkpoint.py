"""Session folders and checkpoints, written so that a crash never leaves a broken file.

Layout (the authors'): ``<output_root>/<task_name>/RecLMIS/session_MM.DD_HHhMM/`` with ``models/``
(``best_model-RecLMIS.pth.tar``, ``latest_model.pth.tar``), ``tensorboard_logs/``, ``<session>.log``,
and ``config.json``.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from typing import List, Optional

import torch

from nets.weights import compact_state_dict, frozen_names, omitted_frozen_record
from utils.config import known_configs, load_config

MODEL_NAME = "RecLMIS"
BEST_NAME = "best_model-RecLMIS.pth.tar"
LATEST_NAME = "latest_model.pth.tar"
TMP_PREFIX = ".tmp_"


def sessions_root(output_root: str, task_name: str) -> str:
    return os.path.join(output_root, task_name, MODEL_NAME)


def create_session_dir(output_root: str, task_name: str, now: float = None) -> str:
    """Create and return a new session folder; a second run in the same minute gets ``_2``, ``_3``, ..."""
    root = sessions_root(output_root, task_name)
    os.makedirs(root, exist_ok=True)
    base = time.strftime("session_%m.%d_%Hh%M", time.localtime(now))
    for attempt in range(1, 1000):
        path = os.path.join(root, base if attempt == 1 else f"{base}_{attempt}")
        try:
            os.makedirs(path)  # fails if another run claimed the name first
        except FileExistsError:
            continue
        for sub in ("models", "tensorboard_logs"):
            os.makedirs(os.path.join(path, sub))
        return path
    raise RuntimeError(f"could not create a new session folder under {root}")


def list_sessions(output_root: str, task_name: str) -> List[str]:
    root = sessions_root(output_root, task_name)
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def resolve_session(session: str, output_root: str, task_name: str) -> str:
    """A session folder from a path or a bare session id; the error lists the sessions there are."""
    if os.path.isdir(session):
        return session
    path = os.path.join(sessions_root(output_root, task_name), session)
    if os.path.isdir(path):
        return path
    known = list_sessions(output_root, task_name)
    message = (f"no session {session!r} under {os.path.abspath(sessions_root(output_root, task_name))}; "
               + (f"sessions there: {', '.join(known)}" if known else "there are no sessions there yet"))
    tasks = [entry.name for entry in os.scandir(output_root)] if os.path.isdir(output_root) else []
    elsewhere = sorted(t for t in tasks if t != task_name and os.path.isdir(os.path.join(
        sessions_root(output_root, t), session)))
    if elsewhere:
        configs = [name for name in known_configs() if _task_of(name) == elsewhere[0]]
        how = f"add -c {configs[0]}" if configs else f"use a config whose task_name is {elsewhere[0]!r}"
        message += f". It is a session of task {elsewhere[0]!r}, not {task_name!r}: {how}"
    raise FileNotFoundError(message)


def _task_of(config_name: str) -> Optional[str]:
    """The task name of a config module, or None when it cannot be imported from here (it is only a hint)."""
    try:
        return load_config(config_name).task_name
    except (FileNotFoundError, TypeError):
        return None


def checkpoint_payload(model, config, epoch: int, best: bool, val: dict, training_state: dict = None,
                       frozen_sha256: str = None) -> dict:
    """What a checkpoint file holds.

    Every file: ``epoch`` (0-based), ``best_model``, ``model``, ``state_dict`` (:func:`nets.weights.
    compact_state_dict`), ``val_loss``, ``val_dice`` and the resolved ``config``. The latest checkpoint adds
    ``training_state``'s entries (optimizer, scheduler, grad scaler, best score, RNG states), which only resuming
    needs; the best checkpoint leaves them out, which keeps it under a third of the size.

    Args:
        frozen_sha256: given (:func:`nets.weights.frozen_sha256`), the frozen CLIP text tower is left out of
            ``state_dict``: it is rebuilt from ``config.clip_weights``, which must then be a file. The payload
            records the file, the digest and the names under ``frozen_omitted``; resuming and
            :func:`nets.weights.build_model_from_checkpoint` check the rebuilt tower against the digest.
    """
    omitted = frozen_names(model) if frozen_sha256 is not None else []
    if omitted and config.clip_weights is None:
        raise ValueError("a random text tower (clip_weights=None) cannot be rebuilt: keep it in the checkpoint")
    payload = {"epoch": epoch, "best_model": best, "model": MODEL_NAME,
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

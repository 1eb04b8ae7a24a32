"""Session folders and checkpoints, written so that a crash never leaves a broken file.

Layout (the authors'): ``<output_root>/<task_name>/RecLMIS/session_MM.DD_HHhMM/`` with ``models/``
(``best_model-RecLMIS.pth.tar``, ``latest_model.pth.tar``), ``tensorboard_logs/``, ``<session>.log``,
``config.json`` and ``visualize_val/``.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import List

import torch

from nets.weights import compact_state_dict

MODEL_NAME = "RecLMIS"
BEST_NAME = "best_model-RecLMIS.pth.tar"
LATEST_NAME = "latest_model.pth.tar"


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
        for sub in ("models", "tensorboard_logs", "visualize_val"):
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
    raise FileNotFoundError(
        f"no session {session!r} under {sessions_root(output_root, task_name)}; "
        + (f"sessions there: {', '.join(known)}" if known else "there are no sessions there yet"))


def checkpoint_payload(model, config, epoch: int, best: bool, val: dict, training_state: dict = None) -> dict:
    """What a checkpoint file holds.

    Every file: ``epoch`` (0-based), ``best_model``, ``model``, ``state_dict`` (:func:`nets.weights.
    compact_state_dict`), ``val_loss``, ``val_dice`` and the resolved ``config``. The latest checkpoint adds
    ``training_state``'s entries (optimizer, scheduler, grad scaler, best score, RNG states), which only resuming
    needs; the best checkpoint leaves them out, which keeps it under a third of the size.
    """
    payload = {"epoch": epoch, "best_model": best, "model": MODEL_NAME, "state_dict": compact_state_dict(model),
               "val_loss": float(val["total"]), "val_dice": float(val["dice"]), "config": config.to_dict()}
    payload.update(training_state or {})
    return payload


def save_checkpoint(state: dict, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it atomically.

    A kill or a full disk at any moment leaves the previous file at ``path`` intact.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

"""Session folders: where a run writes, and finding a session again by its id.

Layout (the authors'): ``<output_root>/<task_name>/RecLMIS/session_MM.DD_HHhMM/`` with ``models/``
(``best_model-RecLMIS.pth.tar``, ``latest_model.pth.tar``), ``tensorboard_logs/``, ``<session>.log``,
and ``config.json``.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional

from utils.config import known_configs, load_config

MODEL_NAME = "RecLMIS"


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

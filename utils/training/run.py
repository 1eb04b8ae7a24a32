"""One training command, start to end: the config, the device and processes, the session folder and its lock, the
trainer, and what each way out leaves behind.

:func:`train` is what ``train_model.py`` calls. It returns a :class:`TrainOutcome` whose ``code`` is the command's
exit status: 0 done, 1 a failure after the session was opened (logged in the session's log), 130 interrupted.
Errors before a session exists (a bad config, device or session to resume) raise :class:`StartError` (exit 2).
A new session that nothing was trained in is removed; a resumed one is kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from Load_Dataset import check_data_choices, fit_token_len
from nets.models import model_kind
from nets.text_towers import text_tower_kind
from utils.checkpoints import LATEST_NAME, best_checkpoint_note
from utils.config import Config, load_config, parse_override
from utils.data.records import DatasetError
from utils.logger import setup_logging
from utils.memory import tune_cpu_allocator
from utils.misc import get_device, set_seed
from utils.sessions import SessionInUseError, SessionLock, create_session_dir, resolve_session, session_log
from utils.training.checkpoint import ensure_writable
from utils.training.distributed import Distributed, init_distributed
from utils.training.engine import NonFiniteLossError
from utils.training.trainer import Trainer
from utils.weights_io import is_mappable, read_checkpoint

logger = logging.getLogger("train")

# Fields a resumed run cannot take from --set: the optimizer, schedule and data order continue from the checkpoint.
RESUME_FIXED = frozenset({"learning_rate", "lr", "weight_decay", "batch_size", "seed"})


class StartError(Exception):
    """Training could not start: the config, the device or the session; nothing was written."""


@dataclass
class TrainOutcome:
    code: int  # the exit status: 0 done, 1 failed (logged), 130 interrupted
    session_dir: Optional[str] = None  # the session trained in (None when a new one was removed)
    best_dice: float = 0.0
    best_epoch: int = 0
    is_main: bool = True  # rank 0 of a distributed run (or the only process): the one that reports


def train(config_name: str, overrides: Sequence[str] = (), device: Optional[str] = None,
          resume: Optional[str] = None, progress: bool = True) -> TrainOutcome:
    """Train ``config_name`` (a module or file) with ``overrides`` (``key=value``), or continue the session
    ``resume`` (an id or folder) with them; under ``torchrun``, one process of several."""
    try:
        config = load_config(config_name, overrides)
        if device:
            config = config.replace(device=device)
        check_data_choices(config)  # each part checks its own choices, before any folder is written
        model = model_kind(config.model)  # an unknown name is refused here
        model.check(config)
        if model.has_text_tower:
            text_tower_kind(config.text_encoder).check(config)
        chosen = get_device(config.device)
        dist = init_distributed(chosen.type)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        raise StartError(str(error)) from None
    if dist.enabled and chosen.type == "cuda":
        chosen = torch.device("cuda", dist.local_rank)
    try:
        session_dir, config, lock = _open_session(config, config_name, overrides, resume, dist)
        try:
            return _train_session(config, config_name, chosen, dist, session_dir, resume is not None, progress,
                                  lock)
        finally:
            if lock is not None:  # on every way out: done, an error, Ctrl-C
                lock.release()
    finally:
        dist.cleanup()


def _open_session(config: Config, config_name: str, overrides: Sequence[str], resume: Optional[str],
                  dist: Distributed):
    """``(session_dir, config, lock)``: the session to train in (created by rank 0, or the one resumed) and rank
    0's lock on it (:class:`SessionLock`, held for the whole run; None on the other ranks). Raises
    :class:`StartError` on every process when any of them could not open it."""
    session_dir, lock, error = None, None, None
    if not resume and config.fit_token_len:  # a resumed session keeps the token_len it was fitted to
        config = fit_token_len(config)
    if resume:
        try:
            session_dir = resolve_session(resume, config.output_root, config.task_name)
            if dist.is_main:  # before anything is read or written: a second training of the session stops here
                lock = SessionLock(session_dir).acquire()
            config = _resumed_config(session_dir, config_name, overrides)
            if dist.is_main:
                ensure_writable(os.path.join(session_dir, "models"))
        except OSError as failure:
            error = f"cannot resume: {failure.strerror or failure}" if failure.errno else f"cannot resume: {failure}"
        except (KeyError, TypeError, ValueError, SessionInUseError) as failure:
            error = f"cannot resume: {failure}"
    elif dist.is_main:
        try:
            session_dir = create_session_dir(config.output_root, config.task_name,
                                             folder=model_kind(config.model).folder)
            lock = SessionLock(session_dir).acquire()  # no other process knows the new folder yet: never refused
            with open(os.path.join(session_dir, "config.json"), "w") as handle:
                json.dump(config.to_dict(), handle, indent=2)
        except OSError as failure:
            error = f"cannot write the session under {config.output_root!r}: {failure}"
    if dist.any(error is not None) and error is None:
        error = "another process could not open the session (see its message)"
    if error is not None:
        if lock is not None:
            lock.release()
        raise StartError(error)
    return dist.broadcast(session_dir), config, lock


def _resumed_config(session_dir: str, config_name: str, overrides: Sequence[str]) -> Config:
    """The session's own config with ``overrides`` on top (``epochs=...`` to train longer); the fields the
    checkpoint's optimizer and schedule fix are refused."""
    latest = os.path.join(session_dir, "models", LATEST_NAME)
    try:
        saved = read_checkpoint(latest, mmap=is_mappable(latest))  # the config only: no tensor is read here
    except (FileNotFoundError, ValueError) as failure:  # say whether the best checkpoint can still be used
        raise ValueError(f"{failure}; {best_checkpoint_note(session_dir, config_name)}") from None
    changes = dict(parse_override(item) for item in overrides)
    fixed = sorted(set(changes) & RESUME_FIXED)
    if fixed:
        raise ValueError(f"--set {', '.join(fixed)} cannot change on --resume: the optimizer and schedule continue "
                         "from the checkpoint's state; start a new session to change them")
    return Config.from_dict(saved["config"]).replace(**changes)


def _describe_run(config: Config, config_name: str, device: torch.device, dist: Distributed, session_dir: str):
    logger.info("session %s, config %s, device %s%s", os.path.abspath(session_dir), config_name, device,
                f", {dist.world_size} processes ({dist.backend})" if dist.enabled else "")
    # Relative paths of the config resolve against the working directory: say where each one lands.
    kind = model_kind(config.model)
    tower = text_tower_kind(config.text_encoder).describe(config) if kind.has_text_tower else "none (reads no report)"
    logger.info("network %s (model=%r): %s", kind.folder, kind.name, kind.paper)
    logger.info("working directory %s; data %s, %s, %s; text tower %s", os.getcwd(),
                *(os.path.abspath(getattr(config, f"{split}_dataset")) for split in ("train", "val", "test")), tower)
    logger.info("token_len %d%s%s", config.token_len,
                " (fitted to the training reports)" if config.fit_token_len else "",
                "; use_report=False: the no-language control, every image reads one empty report"
                if not config.use_report else "")


def _train_session(config: Config, config_name: str, device: torch.device, dist: Distributed, session_dir: str,
                   resumed: bool, progress: bool, lock: Optional[SessionLock]) -> TrainOutcome:
    """Train in the opened session; rank 0 holds its ``lock`` throughout."""
    if dist.is_main:
        setup_logging(session_log(session_dir))
    else:
        setup_logging(level=logging.WARNING)
    tune_cpu_allocator()
    _describe_run(config, config_name, device, dist, session_dir)
    set_seed(config.seed, config.deterministic)
    outcome = TrainOutcome(code=0, session_dir=session_dir, is_main=dist.is_main)
    try:
        trainer = Trainer(config, session_dir, device, progress=progress, dist=dist)
        trainer.check_space()
        trainer.check_amp()
    except (DatasetError, OSError, ValueError) as error:  # nothing trained yet: a new session leaves nothing behind
        _log_error(error)
        return _discarded(outcome, 1, resumed, dist, lock)
    except KeyboardInterrupt:
        return _discarded(outcome, 130, resumed, dist, lock)
    try:
        if resumed:
            trainer.resume()
        result = trainer.run()
    except (DatasetError, OSError, ValueError, NonFiniteLossError) as error:
        _log_error(error)
        outcome.code = 1
        return outcome
    except KeyboardInterrupt:
        outcome.code = 130
        return outcome
    logger.info("done: best val Dice %.4f at epoch %d; session %s", result["best_dice"], result["best_epoch"],
                result["session"])
    outcome.best_dice, outcome.best_epoch = result["best_dice"], result["best_epoch"]
    dist.barrier()  # every process leaves together, after rank 0 has written its last file
    return outcome


def _discarded(outcome: TrainOutcome, code: int, resumed: bool, dist: Distributed,
               lock: Optional[SessionLock]) -> TrainOutcome:
    """``outcome`` with ``code``, after removing a new session folder that nothing was trained in (a resumed one is
    kept); its lock is given back first (Windows cannot remove an open file)."""
    outcome.code = code
    if not resumed and dist.is_main:
        if lock is not None:
            lock.release()
        discard_session(outcome.session_dir)
        logger.error("nothing was trained: the new session folder %s was removed", outcome.session_dir)
        outcome.session_dir = None
    return outcome


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

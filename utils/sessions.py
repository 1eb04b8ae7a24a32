"""Session folders: where a run writes, and finding a session again by its id.

Layout (the authors'): ``<output_root>/<task_name>/<model folder>/session_MM.DD_HHhMM/`` with ``models/``
(``best_model-<model folder>.pth.tar``, ``latest_model.pth.tar``), ``tensorboard_logs/``, ``<session>.log``,
and ``config.json``; ``.lock`` (:class:`SessionLock`) while a training process writes the session. The model
folder is ``RecLMIS`` for RecLMIS, as the authors', and each other network's own (``nets/models.py``), so the
sessions of a task sit side by side, one folder per network.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import socket
import sys
import time
from typing import Dict, List, Optional

from utils.config import known_configs, load_config

# The OS lock behind SessionLock: flock on POSIX, msvcrt.locking on Windows (which has no fcntl).
if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

MODEL_NAME = "RecLMIS"
LOCK_NAME = ".lock"
EPOCHS_NAME = "epochs.jsonl"  # one JSON record per finished epoch, written by the trainer
# Windows locks bytes, and a locked byte cannot be read by another process: lock one byte far past the holder's
# line (a region beyond the end of a file can be locked), so that a refused process can still read who holds it.
_WINDOWS_LOCK_OFFSET = 1 << 20
# The errors of a lock another process holds (flock: EWOULDBLOCK; msvcrt.locking: EACCES or EDEADLOCK); any other
# (a file system without locks, say) is reported as itself.
_HELD_ELSEWHERE = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK}


def sessions_root(output_root: str, task_name: str, folder: str = MODEL_NAME) -> str:
    """Where the sessions of the network whose folder is ``folder`` go."""
    return os.path.join(output_root, task_name, folder)


def create_session_dir(output_root: str, task_name: str, now: float = None, folder: str = MODEL_NAME) -> str:
    """Create and return a new session folder of the network whose folder is ``folder``; a second run in the same
    minute gets ``_2``, ``_3``, ..."""
    root = sessions_root(output_root, task_name, folder)
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
    """The sessions of a task, every network's, as ``<model folder>/<session>``, sorted."""
    task = os.path.join(output_root, task_name)
    if not os.path.isdir(task):
        return []
    return sorted(f"{model}/{session}" for model in os.listdir(task) if os.path.isdir(os.path.join(task, model))
                  for session in os.listdir(os.path.join(task, model))
                  if os.path.isdir(os.path.join(task, model, session)))


def _session_in(task_dir: str, session: str) -> List[str]:
    """The folders named ``session`` in any network's sessions under ``task_dir``."""
    if not os.path.isdir(task_dir):
        return []
    return sorted(os.path.join(task_dir, model, session) for model in os.listdir(task_dir)
                  if os.path.isdir(os.path.join(task_dir, model, session)))


def resolve_session(session: str, output_root: str, task_name: str) -> str:
    """A session folder from a path or a bare session id (looked for in every network's folder of the task); the
    error lists the sessions there are, or the paths when two networks have a session of that id."""
    if os.path.isdir(session):
        return session
    task_dir = os.path.join(output_root, task_name)
    found = _session_in(task_dir, session)
    if len(found) == 1:
        return found[0]
    if found:
        raise FileNotFoundError(f"session {session!r} exists for several networks: {', '.join(found)}; pass the "
                                "path of the one you mean")
    known = list_sessions(output_root, task_name)
    message = (f"no session {session!r} under {os.path.abspath(task_dir)}; "
               + (f"sessions there: {', '.join(known)}" if known else "there are no sessions there yet"))
    tasks = [entry.name for entry in os.scandir(output_root)] if os.path.isdir(output_root) else []
    elsewhere = sorted(t for t in tasks if t != task_name and _session_in(os.path.join(output_root, t), session))
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


class SessionInUseError(RuntimeError):
    """Another process holds the session's lock (:class:`SessionLock`)."""


class SessionLock:
    """An exclusive, non-blocking OS lock on ``<session>/.lock``, held by the one process that trains the session.

    ``flock(LOCK_EX | LOCK_NB)`` on POSIX, ``msvcrt.locking(LK_NBLCK)`` on Windows. The OS frees the lock when the
    holding process ends, however it ends (SIGKILL, power loss), so a stale ``.lock`` file never blocks: only a live
    holder does. The file holds the holder's pid, host and UTC start time, for the message of a refused process;
    it is never removed (removing it would let a second process lock a new file while a first one still held the
    old one).
    """

    def __init__(self, session_dir: str):
        self.session_dir = session_dir
        self.path = os.path.join(session_dir, LOCK_NAME)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "SessionLock":
        """Take the lock, or raise :class:`SessionInUseError` naming the holder; ``OSError`` if the file cannot be
        opened (an unwritable folder)."""
        if self.held:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise OSError(error.errno, f"cannot open the session's lock file {self.path}: "
                                       f"{error.strerror or error}") from error
        try:
            _lock(fd)
        except OSError as error:
            os.close(fd)
            if error.errno not in _HELD_ELSEWHERE:
                raise OSError(error.errno, f"cannot lock the session's lock file {self.path}: "
                                           f"{error.strerror or error}") from error
            raise SessionInUseError(f"session {os.path.basename(os.path.normpath(self.session_dir))} is in use by "
                                    f"another training ({self._holder()}); wait for it to end or stop it") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)  # on Windows _lock moved the position to the locked byte
            os.write(fd, (json.dumps(holder) + "\n").encode())
        except OSError:
            _unlock(fd)
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (also when this process's loader workers, forked with a copy of the file, live on);
        a lock not held is left alone."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def _holder(self) -> str:
        """``pid N on HOST since TIME`` from the lock file, or why it names no one."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                holder = json.loads(handle.readline())
            named = f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
            if holder["host"] == socket.gethostname() and not _alive(int(holder["pid"])):
                # flock belongs to the open file, which forked loader workers share: they hold it a few seconds
                # after their trainer was killed, until they notice and exit.
                return (f"{named}, which has ended; its loader workers still hold the lock until they exit, "
                        "in a few seconds: try again")
            return named
        except OSError as error:
            return f"its lock file {self.path} cannot be read: {error.strerror or error}"
        except (ValueError, KeyError, TypeError):  # the holder has locked the file and not yet written its line
            return f"its lock file {self.path} does not name it yet"

    def __enter__(self) -> "SessionLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _lock(fd: int) -> None:
    """Lock ``fd`` exclusively without waiting; ``OSError`` when another process holds it."""
    if sys.platform == "win32":
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


def session_log(session_dir: str) -> str:
    """The session's text log, ``<session>/<session id>.log``."""
    return os.path.join(session_dir, os.path.basename(os.path.normpath(session_dir)) + ".log")


def append_epoch(session_dir: str, record: dict) -> None:
    """Add one finished epoch (``{"epoch", "train": {...}, "val": {...}, "lr", "seconds"}``) to ``epochs.jsonl``."""
    with open(os.path.join(session_dir, EPOCHS_NAME), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


# The epoch line of the text log, for sessions written before epochs.jsonl existed.
_EPOCH_LINE = re.compile(r"^Epoch (\d+)/\d+\s+train: (.*?) \| val: (.*?) \| lr=(\S+) \| ([\d.]+)s\s*$")


def _pairs(text: str) -> Dict[str, float]:
    return {key: float(value) for key, value in (item.split("=", 1) for item in text.split() if "=" in item)}


def read_epochs(session_dir: str) -> List[dict]:
    """Every finished epoch of a session as ``{"epoch", "train": {...}, "val": {...}, "lr", "seconds"}``, by
    epoch; after a ``--resume`` that repeated an epoch, its last record counts. From ``epochs.jsonl``, or for a
    session written before it existed, from the epoch lines of its log.

    Raises:
        FileNotFoundError: neither file exists.
        ValueError: no epoch has finished yet.
    """
    records = os.path.join(session_dir, EPOCHS_NAME)
    epochs: Dict[int, dict] = {}
    if os.path.isfile(records):
        source = records
        with open(records, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    epochs[int(record["epoch"])] = record
    else:
        source = session_log(session_dir)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"no {EPOCHS_NAME} and no session log in {session_dir}")
        with open(source, encoding="utf-8") as handle:
            for line in handle:
                match = _EPOCH_LINE.match(line.strip())
                if match:
                    epoch = int(match.group(1))
                    epochs[epoch] = {"epoch": epoch, "train": _pairs(match.group(2)),
                                     "val": _pairs(match.group(3)), "lr": float(match.group(4)),
                                     "seconds": float(match.group(5))}
    if not epochs:
        raise ValueError(f"{source} has no finished epoch yet: nothing to draw")
    return [epochs[e] for e in sorted(epochs)]

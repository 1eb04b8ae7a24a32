"""utils/sessions.py: the session lock (one training process per session folder)."""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.tiny import PATIENCE
from utils.sessions import LOCK_NAME, SessionInUseError, SessionLock, create_session_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def session(tmp_path):
    return create_session_dir(str(tmp_path), "Demo", now=0)


def test_the_lock_is_taken_and_a_second_take_is_refused_naming_the_holder(session):
    with SessionLock(session) as lock:
        assert lock.held
        holder = json.loads(open(os.path.join(session, LOCK_NAME)).readline())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(SessionInUseError) as refused:
            SessionLock(session).acquire()
    message = str(refused.value)
    assert message.startswith(f"session {os.path.basename(session)} is in use by another training (pid {os.getpid()} "
                              f"on {socket.gethostname()} since {holder['since']}); wait for it to end or stop it")
    assert holder["since"].endswith(" UTC")


def test_the_lock_is_free_again_once_released(session):
    first = SessionLock(session).acquire()
    first.release()
    first.release()  # a second release does nothing
    assert not first.held
    second = SessionLock(session).acquire()
    assert second.held
    second.release()
    assert os.path.exists(os.path.join(session, LOCK_NAME))  # the file stays; only a live holder blocks


def test_the_lock_is_free_again_when_its_holder_is_killed(session):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom utils.sessions import SessionLock\n"
         f"SessionLock({session!r}).acquire()\nprint('locked', flush=True)\ntime.sleep({PATIENCE})"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SessionInUseError, match=f"in use by another training \\(pid {holder.pid} on "):
            SessionLock(session).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=PATIENCE)
        holder.stdout.close()
    with SessionLock(session) as lock:  # the OS let go of the dead process's lock; its stale file blocks nothing
        assert lock.held


def test_a_holder_that_has_not_written_its_line_yet_is_said_so(session):
    path = os.path.join(session, LOCK_NAME)
    with open(path, "w") as handle:  # locked, still empty: the moment between a holder's lock and its write
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(SessionInUseError, match=f"its lock file {path} does not name it yet"):
            SessionLock(session).acquire()


def test_a_session_folder_that_is_gone_is_an_os_error_naming_the_lock_file(tmp_path):
    with pytest.raises(OSError, match="cannot open the session's lock file .*No such file or directory"):
        SessionLock(str(tmp_path / "gone")).acquire()


def test_a_holder_that_has_ended_while_its_workers_hold_the_lock_is_said_so(session):
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait(timeout=PATIENCE)
    path = os.path.join(session, LOCK_NAME)
    with open(path, "w") as handle:  # what a killed trainer's forked loader worker holds: the trainer's lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps({"pid": dead_pid.pid, "host": socket.gethostname(), "since": "then"}) + "\n")
        handle.flush()
        with pytest.raises(SessionInUseError, match=f"pid {dead_pid.pid} on .* since then, which has ended; its "
                                                    "loader workers still hold the lock until they exit, in a few "
                                                    "seconds: try again"):
            SessionLock(session).acquire()

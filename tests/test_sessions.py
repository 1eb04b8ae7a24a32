"""utils/sessions.py: the session lock (one training process per session folder), finding a session of any network."""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.tiny import PATIENCE
from utils.checkpoints import session_best
from utils.sessions import LOCK_NAME, SessionInUseError, SessionLock, create_session_dir, list_sessions, resolve_session

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


def test_a_bare_session_id_is_found_in_any_network_folder_and_a_clash_is_named(tmp_path):
    unet = create_session_dir(str(tmp_path), "Demo", now=0, folder="UNet")
    assert os.path.dirname(unet) == str(tmp_path / "Demo" / "UNet")
    name = os.path.basename(unet)
    assert resolve_session(name, str(tmp_path), "Demo") == unet
    assert list_sessions(str(tmp_path), "Demo") == [f"UNet/{name}"]
    create_session_dir(str(tmp_path), "Demo", now=0)  # a RecLMIS session of the same minute
    with pytest.raises(FileNotFoundError, match="exists for several networks.*RecLMIS.*UNet"):
        resolve_session(name, str(tmp_path), "Demo")
    with pytest.raises(FileNotFoundError, match="sessions there: RecLMIS/.*UNet/"):
        resolve_session("session_nope", str(tmp_path), "Demo")


def test_a_sessions_best_checkpoint_is_found_whichever_network_wrote_it(tmp_path):
    session = tmp_path / "s"
    (session / "models").mkdir(parents=True)
    assert session_best(str(session)).endswith("best_model-RecLMIS.pth.tar")  # none yet: the name a message gives
    (session / "models" / "best_model-LViT.pth.tar").write_bytes(b"")
    assert session_best(str(session)) == str(session / "models" / "best_model-LViT.pth.tar")
    (session / "models" / "best_model-UNet.pth.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="several best checkpoints"):
        session_best(str(session))

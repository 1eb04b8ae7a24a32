"""Write QaTa-COV19 with LViT's reports and split in the layout ``Config_QaTa`` reads, from a copy that exists today.

    python -m tools.get_data qata --from SOURCE [--layout KIND] [--to datasets/Covid19] [--any-counts] [--offline]

``SOURCE`` is a local folder holding one of the source layouts of :mod:`utils.data.sources` (``--layout`` names it;
by default the folder's contents decide), a local ``.zip``/``.tar.gz`` archive of one, or an address to download:
a git repository (``https://github.com/ShuchangYe-bib/SGSeg``, ``git@host:owner/repo.git``; cloned with
``git clone --depth 1``) or an archive (``http(s)://`` or ``file://`` ending in ``.zip``, ``.tar.gz``, ``.tgz`` or
``.tar``). A download goes to a hidden temporary folder beside ``--to`` (the same disk as the data) and is deleted
afterwards. Without internet, or with ``--offline``, an address fails at once (a connection attempt of at most
``CONNECT_TIMEOUT_S`` seconds) and the message says where to get each copy by hand.

The set is written, checked (LViT's 5716 / 1429 / 2113 pairs, every image with a mask and a report, masks, sizes,
duplicates, case collisions) and renamed into place only when it passes, with ``manifest.json``. The source is only
read. Exit 0: written; 2: nothing written, with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.request import urlopen

from utils.data.importer import write_layout
from utils.data.records import DatasetError
from utils.data.sources import LVIT_QATA_COUNTS, SOURCE_HINTS, SOURCES, SourceRead, read_source
from utils.logger import setup_logging

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
# Seconds allowed to look up a host and open a connection (and, downloading, for each read to deliver data): a
# machine without internet fails at once instead of hanging.
CONNECT_TIMEOUT_S = 10
# git gives up on a transfer slower than 1 kB/s for 30 s.
GIT_LOW_SPEED = ("-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=30")
DEFAULT_PORTS = {"http": 80, "https": 443, "git": 9418, "ssh": 22}


class SourceUnavailable(RuntimeError):
    """A source address that cannot be downloaded or unpacked here; the message says why."""


def hints() -> str:
    """Where to get each source copy by hand, one line each."""
    return "\n".join(f"  {kind}: {hint}" for kind, hint in SOURCE_HINTS.items())


def is_address(source: str) -> bool:
    """Whether ``source`` is a URL (``scheme://...``) or a git scp-like address (``git@host:owner/repo``)."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) or re.match(r"^[\w.-]+@[\w.-]+:", source))


def is_archive_name(name: str) -> bool:
    """Whether a file name or URL path ends like an archive this tool unpacks."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _host_port(address: str) -> Optional[Tuple[str, int]]:
    """The host and port a download of ``address`` connects to first (a proxy, when one is set for it); None for a
    local ``file://`` address."""
    scp = re.match(r"^[\w.-]+@([\w.-]+):", address)
    if scp and "://" not in address:
        return scp.group(1), DEFAULT_PORTS["ssh"]
    parts = urllib.parse.urlsplit(address)
    if parts.scheme == "file":
        return None
    if not parts.hostname:
        raise SourceUnavailable(f"{address} names no host")
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and parts.scheme in ("http", "https") and not urllib.request.proxy_bypass(parts.hostname):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxy_parts.hostname:
            return proxy_parts.hostname, proxy_parts.port or DEFAULT_PORTS["http"]
    scheme = parts.scheme.split("+")[-1]  # git+ssh -> ssh
    return parts.hostname, parts.port or DEFAULT_PORTS.get(scheme, DEFAULT_PORTS["https"])


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Open (and close) one connection to the host a download of ``address`` needs, within ``timeout`` seconds.

    The host name is looked up in a daemon thread so that a resolver without a network cannot hang the tool (the
    lookup itself has no timeout).

    Raises:
        SourceUnavailable: the host cannot be looked up or reached in time.
    """
    target = _host_port(address)
    if target is None:
        return
    host, port = target
    found: List[object] = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as error:
            found.append(error)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        raise SourceUnavailable(f"looking up {host} took more than {timeout:g} s; this machine seems to have no "
                                "internet")
    if isinstance(found[0], OSError):
        raise SourceUnavailable(f"{host} cannot be looked up ({found[0]}); this machine seems to have no internet")
    family, kind, proto, _, sockaddr = found[0][0]
    try:
        with socket.socket(family, kind, proto) as connection:
            connection.settimeout(timeout)
            connection.connect(sockaddr)
    except OSError as error:
        raise SourceUnavailable(f"{host}:{port} cannot be reached ({error}); this machine seems to have no "
                                "internet") from error


def download_archive(address: str, into: Path) -> Path:
    """Download the archive at ``address`` into the folder ``into``; returns the file.

    Raises:
        SourceUnavailable: the server refuses it, the connection fails, or a read stalls for ``CONNECT_TIMEOUT_S``.
    """
    name = Path(urllib.parse.urlsplit(address).path).name or "download"
    path = into / name
    try:
        with urlopen(address, timeout=CONNECT_TIMEOUT_S) as response, open(path, "wb") as handle:
            shutil.copyfileobj(response, handle, 1 << 20)
    except urllib.error.HTTPError as error:
        raise SourceUnavailable(f"{address}: the server answered {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise SourceUnavailable(f"{address} cannot be downloaded ({error.reason})") from error
    except OSError as error:  # a stalled read (TimeoutError), a reset connection, a full disk
        raise SourceUnavailable(f"{address} cannot be downloaded ({type(error).__name__}: {error})") from error
    return path


def _inside(folder: Path, name: str) -> bool:
    """Whether the archive member ``name`` unpacks to a path inside ``folder`` (resolved)."""
    target = (folder / name).resolve()
    return target == folder or folder in target.parents


def extract_archive(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive (plain, gzip, bzip2 or xz) into the folder ``into``.

    Nothing is unpacked unless every member stays inside ``into``: absolute names and ``..`` are refused, and a tar
    archive may hold only files and folders (no links, devices or fifos); tar members are extracted with Python's
    ``data`` filter besides.

    Raises:
        SourceUnavailable: not an archive, a corrupt one, or a member that would leave ``into``.
    """
    into = into.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                bad = [i.filename for i in bundle.infolist() if not _inside(into, i.filename)]
                if bad:
                    raise SourceUnavailable(f"{archive} is refused: its member {bad[0]!r} would be written outside "
                                            "the folder it is unpacked in")
                bundle.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                members = bundle.getmembers()
                bad = [m.name for m in members if not (m.isfile() or m.isdir()) or not _inside(into, m.name)]
                if bad:
                    raise SourceUnavailable(f"{archive} is refused: its member {bad[0]!r} is a link or special file "
                                            "or would be written outside the folder it is unpacked in")
                bundle.extractall(into, members=members, filter="data")
        else:
            raise SourceUnavailable(f"{archive} is neither a zip nor a tar archive; download it again")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise SourceUnavailable(f"{archive} is a corrupt archive ({error}); download it again") from error


def clone_git(address: str, into: Path) -> None:
    """``git clone --depth 1`` of ``address`` into the (new) folder ``into``, never asking for a password.

    Raises:
        SourceUnavailable: git is missing or the clone fails (its last error lines are in the message).
    """
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    env.setdefault("GIT_SSH_COMMAND", f"ssh -o BatchMode=yes -o ConnectTimeout={CONNECT_TIMEOUT_S}")
    command = ["git", *GIT_LOW_SPEED, "clone", "--depth", "1", "--quiet", "--", address, str(into)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise SourceUnavailable("git is not installed; install it, or download the copy by hand") from error
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        raise SourceUnavailable(f"git clone {address} failed ({tail or f'exit {done.returncode}'})")


def source_folder(folder: Path) -> Path:
    """The folder a download's contents start in: ``folder``, or the folder it alone holds, repeatedly (an archive
    of ``SGSeg-main/`` unpacks into one folder)."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


def fetch(source: str, work: Path, offline: bool) -> Path:
    """Make ``source`` a local folder: itself, or a download or unpacked archive inside the folder ``work``.

    Raises:
        SourceUnavailable: ``offline`` and ``source`` is a network address, or it cannot be had (see the callees).
    """
    if not is_address(source):
        path = Path(source)
        if path.is_file() and is_archive_name(path.name):
            extract_archive(path, work / "unpacked")
            return source_folder(work / "unpacked")
        return path
    local = urllib.parse.urlsplit(source).scheme == "file"
    if offline and not local:
        raise SourceUnavailable(f"--offline: {source} is not downloaded")
    check_reachable(source)
    if is_archive_name(urllib.parse.urlsplit(source).path):
        archive = download_archive(source, work)
        extract_archive(archive, work / "unpacked")
        archive.unlink()
        return source_folder(work / "unpacked")
    clone_git(source, work / "clone")
    return work / "clone"


def detect_layout(folder: Path) -> Optional[str]:
    """The first registered layout whose reader finds its files in ``folder`` without an error of its kind."""
    found = detect_and_read(folder)
    return found[0] if found else None


def detect_and_read(folder: Path) -> Optional[Tuple[str, SourceRead]]:
    """The first registered layout that ``folder`` holds (see :func:`detect_layout`) and what its reader found."""
    for kind in SOURCES:
        read = read_source(kind, folder)
        if not any(p.code == "not_this_source" for p in read.problems):
            return kind, read
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.get_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["qata"], help="the data set to write")
    parser.add_argument("--from", dest="source", required=True,
                        help="a local folder or archive holding a source copy, or a git or archive address")
    parser.add_argument("--layout", choices=sorted(SOURCES), help="the source's layout (default: detected)")
    parser.add_argument("--to", default="datasets/Covid19", help="the data set folder to create (must not exist)")
    parser.add_argument("--any-counts", action="store_true",
                        help="accept split sizes other than LViT's 5716 / 1429 / 2113 (a partial or custom copy)")
    parser.add_argument("--offline", action="store_true",
                        help="never use the network: a download address fails at once, with where to get the copies")
    args = parser.parse_args(argv)
    setup_logging()
    target = Path(args.to)
    if target.exists():
        print(f"error: {target} already exists; move it away or choose another --to (nothing was written)",
              file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        work = None
        if is_address(args.source) or Path(args.source).is_file():
            # Downloads go beside the target: the same disk, and no second copy of a large set in the system temp.
            target.parent.mkdir(parents=True, exist_ok=True)
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{target.name}.download-",
                                                                        dir=target.parent)))
        try:
            source = fetch(args.source, work, args.offline) if work is not None else Path(args.source)
        except SourceUnavailable as error:
            print(f"error: {error}.\nGet one of these copies by hand, then pass its folder:\n{hints()}",
                  file=sys.stderr)
            return 2
        if not source.is_dir():
            print(f"error: {source} is not a folder. Get one of these copies by hand, then pass its folder:\n"
                  f"{hints()}", file=sys.stderr)
            return 2
        if args.layout:
            kind, read = args.layout, read_source(args.layout, source)
        else:
            found = detect_and_read(source)
            if found is None:
                print(f"error: {args.source} holds none of the known layouts ({', '.join(sorted(SOURCES))}); pass "
                      "--layout to see what is missing", file=sys.stderr)
                return 2
            kind, read = found
        try:
            manifest = write_layout(read, target, args.source, kind, None if args.any_counts else LVIT_QATA_COUNTS)
        except DatasetError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    counts = manifest["counts"]
    print(f"wrote {args.to} from the {kind} copy at {args.source}: train {counts['train']}, val {counts['val']}, "
          f"test {counts['test']} pairs; data_sha256 {manifest['data_sha256']} (manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

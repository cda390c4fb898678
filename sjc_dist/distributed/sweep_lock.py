"""SweepLock: one owner per sweep folder, taken before anything else (before sweep.yaml, Ray or MLflow).

`<sweep dir>/sweep.lock` holds an exclusive `flock` for as long as the owning `sjc sweep` runs, and names its
owner (pid, host, start time, command). The kernel drops the lock when its process dies, however it dies, so
a lock whose file still names an owner but is free was left by a dead owner: it is taken over, and said so.
A second sweep into a folder in use is refused with one line naming the owner. A shared folder on a cluster
needs a file system with locks (NFSv4, Lustre and EFS have them).
"""
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import SJCError

LOCK_FILE = "sweep.lock"


class SweepBusy(SJCError):
    """Another process owns the sweep folder."""


def describe(owner: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} (`{owner.get('command', '?')}`, "
            f"since {started})")


class SweepLock:
    """`with SweepLock(folder) as lock:` owns the folder; `lock.note` says if a dead owner's lock was taken."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self.fd: int | None = None
        self.note = ""

    def acquire(self) -> "SweepLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by Ray's processes (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            raise SweepBusy(f"sweep folder {self.path.parent} is in use by {describe(owner)}; wait for it to "
                            f"finish, or give this sweep another --out") from None
        stale = _read(fd)
        if stale:
            self.note = f"took over the lock of {describe(stale)}, which is no longer running"
        _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    "command": " ".join(["sjc", *sys.argv[1:]])[:500]})
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a clean end leaves no owner behind
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode(errors="replace").strip()
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"pid": "?", "command": text[:200]}


def _write(fd: int, owner: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(owner).encode())
    os.fsync(fd)

"""One process per output directory: an exclusive OS lock held for a command's whole life.

A scheduler retry, or Enter pressed twice, can start the same `sera train` twice. Without a lock both
runs write into one directory and the user cannot tell which model they hold. So every command that
writes a directory (`train`, `sft`, `demo`) first takes `OUT/.sera.lock`:

- The lock is `flock(2)` on that file: the kernel releases it when the process ends in any way,
  `kill -9` included, so a crash never leaves a stale lock that blocks `--resume`.
- A second process that finds it held changes nothing in the directory and stops with exit code 2,
  naming the holder (pid, host, command, since when), which the holder wrote into the lock file.
- In a multi-process run (torchrun / accelerate launch) only rank 0 takes the lock; it tells the
  other ranks whether it got it, so they stop with it rather than wait on a collective.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sera import distributed
from sera.errors import SeraInputError

LOCK_NAME = ".sera.lock"

try:
    import fcntl
except ImportError:  # Windows: filelock's msvcrt lock is released with the process as well
    fcntl = None


class RunLock:
    """The exclusive lock on one output directory (`acquire`, then `release`; or use :func:`hold`)."""

    def __init__(self, directory: str | Path, flag: str = "--output-dir") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.flag = flag
        self._handle: int | None = None
        self._fallback = None

    def acquire(self) -> None:
        """Take the lock, or raise SeraInputError naming the process that holds it."""
        if self.directory.exists() and not self.directory.is_dir():
            raise SeraInputError(f"{self.flag} {self.directory}: exists and is not a directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if fcntl is None:
                return self._acquire_with_filelock()
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SeraInputError(f"{self.flag} {self.directory}: cannot lock ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(handle)
            os.close(handle)
            raise SeraInputError(self._in_use(holder)) from None
        os.ftruncate(handle, 0)
        os.write(handle, json.dumps(_this_process()).encode("utf-8"))
        os.fsync(handle)
        self._handle = handle

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a process about to open it)."""
        if self._handle is not None:
            os.close(self._handle)  # closing the descriptor releases the flock
            self._handle = None
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None

    def _acquire_with_filelock(self) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path) + ".lck", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise SeraInputError(self._in_use(None)) from None
        self._fallback = lock

    def _in_use(self, holder: dict | None) -> str:
        who = "another sera process"
        if holder:
            since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(holder.get("since", 0)))
            who = (f"pid {holder.get('pid')} on {holder.get('host')} (`{holder.get('command')}`), "
                   f"running since {since}")
        return (f"{self.flag} {self.directory}: in use by {who}; wait for it to finish (or stop it, then "
                "--resume), or choose another directory")


@contextmanager
def hold(directory: str | Path, flag: str = "--output-dir") -> Iterator[None]:
    """Hold the directory's lock for the block; rank 0 locks and every rank learns whether it may go on."""
    distributed.init()
    lock = RunLock(directory, flag)
    refusal = None
    if distributed.is_main():
        try:
            lock.acquire()
        except SeraInputError as exc:
            refusal = str(exc)
    refusal = distributed.broadcast_object(refusal)
    if refusal is not None:
        raise SeraInputError(refusal)
    try:
        yield
    finally:
        lock.release()


def _this_process() -> dict:
    command = " ".join(["sera", *sys.argv[1:3]]) if sys.argv and sys.argv[0].endswith("sera") else " ".join(
        Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:2]))
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}


def _read_holder(handle: int) -> dict | None:
    """What the holder wrote (it may be mid-write, or an older sera's empty file: then nothing is known)."""
    try:
        os.lseek(handle, 0, os.SEEK_SET)
        holder = json.loads(os.read(handle, 4096).decode("utf-8"))
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None

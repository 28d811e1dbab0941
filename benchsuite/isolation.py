"""What keeps a cell from harming others: a lock per cell, and a per-cell time limit.

The lock: ``fcntl.flock`` on ``<record>.lock``, so that two runs on one results directory
never compute the same cell at once. The kernel releases it when its holder exits however
it exits (SIGKILL included), so a crashed run leaves no stale lock. The lock file is removed
by its holder; a process that locked a file that was removed meanwhile retries on the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def cell_lock(record: Path) -> Iterator[bool]:
    """Yield True holding the cell's lock, or False at once when another process holds it."""
    path = record.with_name(record.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed this file after we opened it: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


class CellTimeout(Exception):
    """The cell ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None, error: Callable[[], BaseException] | None = None) -> Iterator[None]:
    """Raise CellTimeout (or ``error()``) in this (main) thread once ``seconds`` have passed; None means no
    limit. Limits do not nest: an inner one cancels the outer one's timer when it ends.

    SIGALRM interrupts between Python operations: one long native operation finishes first.
    """
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum, _frame):
        if error is not None:
            raise error()
        raise CellTimeout(f"the cell ran past its time limit of {seconds:g} s (--cell-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

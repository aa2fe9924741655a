"""An exclusive lock on a folder that a command writes (a run, a sample or restore output).

``with folder_lock(path, "unblur train"):`` takes ``fcntl.flock`` on ``path/.unblur.lock``
(creating the folder if needed). A second command on the same folder fails at once with a
message naming who holds it (pid, command, start time), instead of mixing its files with the
first's. The lock is released when the holder exits, however it exits (the kernel drops it).
Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".unblur.lock"


class FolderLock:
    """A held lock; ``release()`` (or leaving the ``with``) lets go."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def acquire(folder: str | Path, command: str) -> FolderLock:
    """Lock ``folder`` for ``command`` or raise ValueError naming the holder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file, not a folder: choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return FolderLock(folder, None)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"{str(folder)!r} is in use by {_holder(path)}: wait for it to finish, stop it, or choose "
                         "another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    return FolderLock(folder, fd)


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} ({h['command']}, since {h['since']})"
    except (OSError, ValueError, KeyError):
        return "another unblur command"


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[FolderLock]:
    lock = acquire(folder, command)
    try:
        yield lock
    finally:
        lock.release()

"""One run at a time per output folder: <output_dir>/.rlhfx.lock, holding the running process's pid and host.

The lock is an flock on that file, so the kernel lets go of it when the process ends, however it ends (SIGKILL
included): a lock file a dead run left behind is simply taken over. A run that ends normally, by an error, by
SIGTERM or by Ctrl-C removes it. Under torchrun only the main process takes it (one lock per run, not per rank).
On a file system without flock, a lock file naming a live process on this host counts as held.
"""

import errno
import fcntl
import os
import socket
from pathlib import Path

from rlhfx.errors import RlhfxError

LOCK_FILE = ".rlhfx.lock"


def _holder(path: Path) -> tuple[int | None, str]:
    try:
        pid, host = (path.read_text().split() + ["", ""])[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


def _alive(pid: int | None, host: str) -> bool:
    if pid is None or host != socket.gethostname():
        return pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(folder: Path, pid: int | None, host: str) -> RlhfxError:
    who = f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "") if pid else "another process"
    return RlhfxError(f"{folder} is in use by another rlhfx run ({who}); two runs in one folder would mix their "
                      "metrics and checkpoints.",
                      f"wait for it to finish (or stop it: kill {pid or 'PID'}), or pass another --output_dir.")


class RunLock:
    """`with RunLock(folder):` creates the folder if needed and holds its lock; on exit the lock file goes, and so
    does the folder when this run created it and left nothing in it (a run that failed before writing)."""

    def __init__(self, folder: Path):
        self.folder, self.path = Path(folder), Path(folder) / LOCK_FILE
        self.fd, self.created = None, False

    def __enter__(self):
        self.created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RlhfxError(f"Cannot create output folder {self.folder}: {error.strerror}.",
                             "pass a writable --output_dir.") from None
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _busy(self.folder, *_holder(self.path)) from None
            except OSError as error:  # no flock here (some network file systems): go by the pid in the file
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                holder = _holder(self.path)
                if holder[0] != os.getpid() and _alive(*holder):
                    os.close(fd)
                    raise _busy(self.folder, *holder) from None
            if self.path.exists() and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                self.fd = fd
            else:  # the previous holder removed the file between our open and flock: lock the new one
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)  # while still held, so nobody locks a file that is going away
        os.close(self.fd)
        self.fd = None
        if self.created and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

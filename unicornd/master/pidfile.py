"""The pid file: written when the master starts, renamed on promotion, removed on exit."""

import errno
import os

from unicornd.master.rawos import exists as _alive


class PidfileError(Exception):
    pass


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None




class Pidfile:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.pid = None

    def create(self, pid: int) -> None:
        old = _read_pid(self.path)
        if old and old != pid and old != os.getppid() and _alive(old):
            raise PidfileError(f"Already running on PID {old} (or pid file {self.path} is stale)")
        tmp = f"{self.path}.{pid}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, self.path)  # never a half-written pid file
        self.pid = pid

    def rename(self, path: str) -> None:
        path = os.path.abspath(path)
        os.replace(self.path, path)
        self.path = path

    def unlink(self) -> None:
        """Remove the file if it still names us (a new master may own it by now)."""
        if self.pid is not None and _read_pid(self.path) == self.pid:
            try:
                os.unlink(self.path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

"""systemd: sockets passed by socket activation, and readiness notifications (sd_notify).

Both are plain protocols, read straight from the environment (sd_listen_fds(3),
sd_notify(3)); no library is needed.
"""

import os
import socket
import stat
import time

SD_LISTEN_FDS_START = 3


def listen_fds(environ=os.environ):
    """The (fd, name) pairs systemd passed to this process; [] when there are none.

    The variables are removed afterwards so the workers (and the app) do not see them, as
    sd_listen_fds(1) does.
    """
    try:
        if int(environ.get("LISTEN_PID", "0")) != os.getpid():
            return []
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = environ.get("LISTEN_FDNAMES", "").split(":") if environ.get("LISTEN_FDNAMES") else []
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)
    pairs = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        pair = ActivationFd((fd, names[i] if i < len(names) else "unknown"))
        try:
            os.set_inheritable(fd, False)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                pair.error = "which is not a socket"
        except OSError as exc:
            # Looked at now, before this process opens files of its own that could get
            # this fd number; listeners.from_systemd reports it.
            pair.error = f"which is not open ({exc.strerror})"
        pairs.append(pair)
    return pairs


class ActivationFd(tuple):
    """(fd, name) of one socket passed by systemd; ``error`` says what is wrong with it."""

    error = None


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET; does nothing when it is not set."""

    def __init__(self, environ=os.environ):
        addr = environ.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # an abstract socket
            addr = "\0" + addr[1:]
        self.addr = addr or None
        self._sock = None

    @property
    def enabled(self) -> bool:
        return self.addr is not None

    def notify(self, *fields: str) -> None:
        if self.addr is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.addr)
        except OSError:
            pass  # the service manager went away; serving goes on

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=Reloading")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=Stopping")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def mainpid(self, pid: int) -> None:
        self.notify(f"MAINPID={pid}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

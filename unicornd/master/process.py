"""Process-level settings: daemon mode, worker user and group, the controlling terminal."""

import os
import pwd
import sys


def daemonize(keep_stdio: bool = False) -> None:
    """Detach: fork, new session, fork again; standard streams to /dev/null (standard output
    and error stay as they are with ``enable_stdio_inheritance``)."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.umask(0o22)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in ((0,) if keep_stdio else (0, 1, 2)):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)


def set_owner(uid: int, gid: int, initgroups: bool = False) -> None:
    """Drop a worker to the configured group and user (group first, while still allowed)."""
    if gid is not None and gid != os.getgid():
        if initgroups and uid is not None:
            try:
                os.initgroups(pwd.getpwuid(uid).pw_name, gid)
            except KeyError:
                pass
        os.setgid(gid)
    if uid is not None and uid != os.getuid():
        os.setuid(uid)


def has_controlling_terminal() -> bool:
    """True in an interactive terminal, where window resizes send SIGWINCH."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (0 if it is gone), from /proc."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0

"""Listening sockets: bound once by the master, shared by every worker it forks."""

import errno
import os
import socket
import stat
import struct
import time

from unicornd.config.addresses import parse_bind

BIND_RETRIES = 5
BIND_RETRY_DELAY = 1.0


class BindError(Exception):
    """A listening socket could not be made; the message is for the user."""


class Listener:
    """One listening socket and what the logs and the environ say about it."""

    __slots__ = ("sock", "kind", "path", "spec", "timeouts_from_listen", "_address")

    def __init__(self, sock, kind, path=None, spec=None, timeouts_from_listen=False):
        self.sock = sock
        self.kind = kind
        self.path = path
        self.spec = spec  # the bind setting entry it came from, to match them up on HUP
        # Bound here with the client timeouts set before listen(): every connection it ever
        # queues inherits them (sockets from systemd or an old master may hold older ones).
        self.timeouts_from_listen = timeouts_from_listen
        self._address = None

    @property
    def address(self):
        """What accept() callers use to name this listener: (host, port) or a unix path.
        Asked once (a getsockname(2)): a bound socket's address does not change."""
        address = self._address
        if address is None:
            if self.sock.family == socket.AF_UNIX:
                address = self.path or self.sock.getsockname()
            else:
                address = self.sock.getsockname()[:2]
            self._address = address
        return address

    def url(self, scheme: str = "http") -> str:
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.address}"
        host, port = self.address
        if self.sock.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self, unlink: bool = True) -> None:
        self.sock.close()
        if unlink and self.path and self.kind == "unix":
            try:
                if stat.S_ISSOCK(os.stat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass


def _tcp_socket(host, port, cfg):
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"Cannot bind {host}:{port}: {exc.strerror}") from None
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if cfg.reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        # [::] means IPv6 only, as with gunicorn; bind 0.0.0.0 as well for both.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    # Responses go out in one send; Nagle would only delay a streamed body.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_DEFER_ACCEPT") and getattr(cfg, "header_timeout", 0):
        # An idle preconnect is not even handed to accept() until it sends something.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, cfg.header_timeout)
    return sock, sockaddr


def _bind_one(addr, cfg, log) -> Listener:
    if addr.kind == "fd":
        try:
            sock = socket.socket(fileno=addr.fd)
        except OSError as exc:
            raise BindError(f"fd://{addr.fd} is not a usable socket: {exc.strerror}") from None
        sock.listen(cfg.backlog)
        path = sock.getsockname() if sock.family == socket.AF_UNIX else None
        return Listener(sock, "fd", path or None)

    for attempt in range(BIND_RETRIES):
        if addr.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = addr.path
            try:
                if not stat.S_ISSOCK(os.stat(addr.path).st_mode):
                    sock.close()
                    raise BindError(f"Cannot bind unix:{addr.path}: the file exists and is not a socket")
                os.unlink(addr.path)  # a stale socket file left by a dead server
            except FileNotFoundError:
                pass
        else:
            sock, target = _tcp_socket(addr.host, addr.port, cfg)
        try:
            if addr.kind == "unix":
                old_umask = os.umask(cfg.umask)
                try:
                    sock.bind(target)
                finally:
                    os.umask(old_umask)
                if (cfg.user, cfg.group) != (os.geteuid(), os.getegid()):
                    os.chown(target, cfg.user, cfg.group)  # the workers' user must reach it
            else:
                sock.bind(target)
            set_client_timeouts(sock, getattr(cfg, "header_timeout", 0))
            sock.listen(cfg.backlog)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or attempt == BIND_RETRIES - 1:
                where = addr.path if addr.kind == "unix" else f"{addr.host}:{addr.port}"
                raise BindError(f"Cannot bind {where}: {exc.strerror}") from None
            log.error("Connection in use: %s, retrying in %.0f s", target, BIND_RETRY_DELAY)
            time.sleep(BIND_RETRY_DELAY)
            continue
        return Listener(sock, addr.kind, addr.path if addr.kind == "unix" else None,
                        timeouts_from_listen=True)
    raise AssertionError("unreachable")


def bind_all(cfg, log, keep=()) -> list:
    """Listeners for every ``bind`` entry; entries already in ``keep`` are reused as they are."""
    reuse = {listener.spec: listener for listener in keep}
    listeners = []
    try:
        for spec in cfg.bind:
            listener = reuse.pop(spec, None) or _bind_one(parse_bind(spec), cfg, log)
            listener.spec = spec
            listeners.append(listener)
    except BaseException:
        for listener in listeners:
            if listener not in keep:
                listener.close()
        raise
    return listeners


# A re-executed master (USR2) finds the listening sockets it inherits here, and whether they
# are systemd's (whose socket files it must never remove).
INHERIT_ENV = "UNICORND_FD"
INHERIT_SYSTEMD_ENV = "UNICORND_FD_SYSTEMD"


def _from_fds(fds, kind_of_unix) -> list:
    listeners = []
    for fd in fds:
        sock = socket.socket(fileno=int(fd))
        path = sock.getsockname() if sock.family == socket.AF_UNIX else None
        listeners.append(Listener(sock, kind_of_unix if path else "tcp", path or None))
    return listeners


def inherited(environ, cfg, systemd=False) -> list:
    """The listeners handed over by the old master, in ``bind`` order; [] if none."""
    value = environ.get(INHERIT_ENV)
    if not value:
        return []
    listeners = _from_fds(value.split(","), "systemd" if systemd else "unix")
    if not systemd:
        for listener, spec in zip(listeners, cfg.bind):
            listener.spec = spec
    return listeners


def from_systemd(pairs, cfg) -> list:
    """Listeners from the (fd, name) pairs of socket activation; systemd keeps the files.
    Raises BindError, naming the fd, when one is not an open listening socket."""
    for pair in pairs:
        fd, name = pair
        error = getattr(pair, "error", None)
        if error is None:
            try:
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    error = "which is not a socket"
            except OSError as exc:
                error = f"which is not open ({exc.strerror})"
        if error is not None:
            raise BindError(f"LISTEN_FDS names fd {fd} ({name}), {error}: the sockets of systemd "
                            "socket activation must be open listening sockets from fd 3 on")
    listeners = _from_fds([fd for fd, _ in pairs], "systemd")
    for listener in listeners:
        listener.sock.setblocking(True)
    return listeners


def handover_env(listeners) -> str:
    for listener in listeners:
        os.set_inheritable(listener.fileno(), True)
    return ",".join(str(listener.fileno()) for listener in listeners)


def set_client_timeouts(listener, seconds: int) -> None:
    """Kernel send/receive timeouts, inherited by every accepted socket: a client that sends
    or takes nothing for this long mid-request is dropped, with no extra syscall per read."""
    if not seconds:
        return
    value = struct.pack("ll", int(seconds), 0)
    sock = getattr(listener, "sock", listener)  # (or an accepted socket itself)
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, value)
        except OSError:
            pass


def close_all(listeners, unlink: bool = True) -> None:
    for listener in listeners:
        listener.close(unlink=unlink)

"""The client's socket as the request loop uses it, in every worker class.

Every receive and send here notes the request's progress for the timeout decision
(master/timeouts.py: a request is hung when it made no progress for ``timeout`` while not
waiting on its client), and turns the socket's failures into one exception the loop knows:
``ClientDisconnected`` (a reset, a broken pipe, a send timeout) or ``ReceiveTimeout`` (nothing
arrived within header_timeout). The socket is used in blocking style: gevent and eventlet make
that cooperative, and the kernel timeouts (SO_RCVTIMEO/SO_SNDTIMEO) are set by the worker.
"""

import _socket
import os
import socket
import time

from unicornd.closing import RECV_SIZE, kernel_socket

# The most one recv of body straight from the socket asks for: recv allocates what it is asked
# for before it knows what came, and a read(1 GiB) should not allocate 1 GiB per segment.
DIRECT_RECV_MAX = 1 << 20
# struct timeval 0: no kernel send/receive timeout (SO_RCVTIMEO / SO_SNDTIMEO).
_NO_KERNEL_TIMEOUT = bytes(16)
# (ints: socket's flags are enum members, and an enum's | costs a Python call on every send)
_DONTWAIT = int(socket.MSG_DONTWAIT)
_monotonic = time.monotonic


class ClientDisconnected(Exception):
    """The peer went away (reset, broken pipe, send timeout) while we talked to it."""


class ReceiveTimeout(ClientDisconnected):
    """Nothing arrived from the client within the socket's timeout (header_timeout)."""


class ClientSocket:
    """One accepted socket (the TLS one, once wrapped) and the progress of the request on it.

    ``progress``: when the request last made progress (started, or read from or wrote to its
    client); ``waiting``: it waits on its client right now; ``app_owned``: the app may own the
    socket (it asked for an upgrade), so its library owns the timeouts. ``mirror`` (the
    worker's scoreboard slot, or None) is told each change: the master reads it from there.
    """

    __slots__ = ("sock", "raw", "mirror", "header_timeout", "progress", "waiting", "app_owned",
                 "_nodelay")

    def __init__(self, sock, mirror, header_timeout, tls: bool):
        self.sock = sock
        # A cooperative (gevent, eventlet) plain socket's kernel socket, for receives and sends
        # that need no waiting; None for a kernel socket (sync, gthread) or TLS.
        self.raw = None if tls or isinstance(sock, _socket.socket) else kernel_socket(sock)
        self.mirror = mirror
        self.header_timeout = header_timeout
        self.progress = 0.0
        self.waiting = False
        self.app_owned = False
        self._nodelay = False

    # -- progress, for the timeout decision ------------------------------------------------

    def started(self, now: float, app_owned: bool) -> None:
        """A request began at ``now``; ``app_owned``: it asks for an upgrade (hand_over)."""
        self.progress = now
        self.waiting = False
        if app_owned:
            self.hand_over()
        else:
            self.app_owned = False
        mirror = self.mirror
        if mirror is not None:
            mirror.progress(now, now, 0 if self.app_owned else 1)

    def waits(self):
        """About to wait on the client (it may be slow: that is not the app being hung)."""
        self.waiting = True
        mirror = self.mirror
        if mirror is not None:
            mirror.progress(self.progress, self.progress, 0)

    def progressed(self):
        """Bytes went to or came from the client: the request is alive."""
        self.waiting = False
        now = self.progress = _monotonic()
        mirror = self.mirror
        if mirror is not None:
            mirror.progress(now, now, 0 if self.app_owned else 1)

    def hand_over(self):
        """A request that asks for an upgrade (a websocket handshake): the app may take the
        socket over and its library then owns the timeouts, so none of ours stays on it (the
        green socket's I/O timeout, the kernel's SO_RCVTIMEO/SO_SNDTIMEO from header_timeout)."""
        self.app_owned = True
        sock = self.sock
        try:
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _NO_KERNEL_TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _NO_KERNEL_TIMEOUT)
        except (OSError, ValueError):
            pass

    def stall_seconds(self):
        """How long a receive waits before ReceiveTimeout."""
        timeout = self.sock.gettimeout()  # None on a kernel socket: SO_RCVTIMEO is header_timeout
        return timeout if timeout else self.header_timeout

    # -- receiving -------------------------------------------------------------------------

    def recv_nowait(self):
        """What has arrived, without waiting: None if nothing yet, b"" at EOF or on an error.
        (The kernel socket: gevent's would wait for data instead of saying "none yet".)"""
        try:
            return _socket.socket.recv(self.raw or self.sock, RECV_SIZE, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def recv(self, n: int = RECV_SIZE) -> bytes:
        """Up to ``n`` bytes (at most DIRECT_RECV_MAX), what has arrived; b"" at EOF or on a
        broken connection."""
        self.waits()
        try:
            return self.sock.recv(n if n < DIRECT_RECV_MAX else DIRECT_RECV_MAX)
        except (BlockingIOError, socket.timeout):
            raise ReceiveTimeout("timed out waiting for the client") from None
        except OSError:
            return b""
        finally:
            self.progressed()

    def recv_into(self, view, n: int) -> int:
        """Up to ``n`` bytes received into ``view``; 0 at EOF or on a broken connection."""
        self.waits()
        try:
            return self.sock.recv_into(view, n)
        except (BlockingIOError, socket.timeout):
            raise ReceiveTimeout("timed out waiting for the client") from None
        except OSError:
            return 0
        finally:
            self.progressed()

    # -- sending ---------------------------------------------------------------------------

    def sendall(self, data, flags=0):
        try:
            raw = self.raw
            if raw is not None:
                # Most responses fit the socket's buffer: one send(2), skipping the
                # cooperative sendall's bookkeeping (gevent's asks for SO_SNDBUF each time).
                try:
                    sent = _socket.socket.send(raw, data, _DONTWAIT | flags)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent == len(data):
                    self.progressed()
                    return
                data = memoryview(data)[sent:]
            self.waits()
            self.sock.sendall(data, flags)
        except (BlockingIOError, socket.timeout):
            raise ClientDisconnected("timed out sending to the client") from None
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from None
        finally:
            if self.waiting:
                self.progressed()

    def streaming(self):
        """A streamed body begins: small writes must not wait for Nagle's delayed ACK dance."""
        if not self._nodelay:
            self._nodelay = True
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def can_sendfile(self, wait_writable) -> bool:
        """sendfile(2) is possible: not on a cooperative TLS socket (no sendfile under TLS)."""
        return wait_writable is None or self.raw is not None

    def sendfile(self, fileobj, offset: int, size: int, wait_writable) -> None:
        """``size`` bytes of a real file from ``offset``, copied by the kernel.
        ``wait_writable(fd, timeout)``: the cooperative worker's wait (None: a kernel socket)."""
        self.waits()
        try:
            if wait_writable is not None:
                self._sendfile_cooperative(fileobj.fileno(), offset, size, wait_writable)
            else:
                self.sock.sendfile(fileobj, offset, size)
        except (BlockingIOError, socket.timeout):
            raise ClientDisconnected("timed out sending a file") from None
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from None
        finally:
            self.progressed()

    def _sendfile_cooperative(self, fd: int, offset: int, size: int, wait) -> None:
        """sendfile(2) on a gevent or eventlet socket, whose kernel socket is non-blocking
        (socket.sendfile refuses it on eventlet and reads the file in Python on gevent):
        the kernel copies the file; the greenlet waits for room in the socket's buffer."""
        out = self.raw.fileno()
        timeout = self.sock.gettimeout()
        end = offset + size
        while offset < end:
            try:
                sent = os.sendfile(out, fd, offset, end - offset)
            except (BlockingIOError, InterruptedError):
                if not wait(out, timeout):
                    raise socket.timeout("timed out sending a file") from None
                continue
            if sent == 0:
                raise ClientDisconnected("the file ended before its size was sent")
            offset += sent

"""How a connection ends, the same in every worker class.

- A lingering close (RFC 9112 §9.6): when the client may still be sending (an unread body,
  pipelined requests, a refused head), ``shutdown(SHUT_WR)`` so it sees our FIN and the
  response is not destroyed by a TCP reset, then read and drop what it sends until it closes or
  LINGER_SECONDS pass. How the waiting is scheduled is the worker class's (a poll set, a
  greenlet); what is done is here.
- A socket the app took over (a websocket) and returned from: ``release_taken_over``.
- A graceful stop keeps an idle keep-alive connection STOP_GRACE_SECONDS after its last
  response, since its client may be sending its next request right now.
"""

import _socket
import socket
import time

RECV_SIZE = 65536
# A lingering close reads and drops the peer's input for at most this long.
LINGER_SECONDS = 2.0
# On a graceful stop, a keep-alive connection idle for less than this may still have its next
# request on the way, and is given that long before it is closed.
STOP_GRACE_SECONDS = 1.0
# A socket the app took over (a websocket) and has returned from: how long we wait for the
# peer to close its end (or the app's library to close the socket) before we close it.
TAKEN_OVER_LINGER_SECONDS = 1.0

_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT
_plain_socket = socket.socket
_monotonic = time.monotonic


def kernel_socket(sock):
    """The kernel socket under a cooperative one: gevent's and eventlet's sockets hold it (as
    _sock, or fd); a plain or TLS socket is its own."""
    if isinstance(sock, _socket.socket):
        return sock
    inner = getattr(sock, "_sock", None)
    return inner if isinstance(inner, _socket.socket) else getattr(sock, "fd", sock)


def _peek(sock):
    """The next byte waiting, without reading it or blocking: b"" for EOF (or an error, which
    ends the connection the same way), None when nothing has arrived. The kernel socket's
    recv: a TLS socket refuses flags, and raw bytes count too."""
    try:
        return _socket.socket.recv(kernel_socket(sock), 1, _PEEK_FLAGS)
    except (BlockingIOError, InterruptedError):
        return None
    except (OSError, ValueError, TypeError):
        return b""


def input_waiting(sock) -> bool:
    """Bytes, EOF or an error wait to be read: whoever reads next meets them."""
    return _peek(sock) is not None


def data_waiting(sock) -> bool:
    """Bytes (not EOF, not an error) wait to be read: what a lingering close is for.
    (_peek inline: asked after every response that closes its connection, by the sync
    worker once per request.)"""
    try:
        return bool(_socket.socket.recv(sock if type(sock) is _plain_socket else kernel_socket(sock),
                                        1, _PEEK_FLAGS))
    except (OSError, ValueError, TypeError):  # (BlockingIOError: nothing has arrived)
        return False


def peer_closed(sock) -> bool:
    """The peer has closed its end (EOF, or an error), seen without reading anything."""
    return _peek(sock) == b""


def lingering_shutdown(sock) -> None:
    """First half of a lingering close: no more output, so the peer sees our FIN."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def drain(sock) -> bool:
    """Read and drop what the peer sent, without blocking; True once it closed or failed.
    (The kernel socket's recv: a cooperative one would wait instead, and a TLS one refuses
    flags; the bytes are dropped, so they need no decrypting.)"""
    try:
        raw = kernel_socket(sock)
        while True:
            data = _socket.socket.recv(raw, RECV_SIZE, socket.MSG_DONTWAIT)
            if not data:
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError, TypeError):
        return True


def begin_linger(sock) -> float:
    """Start a lingering close: half-close and drop what already arrived. Returns 0.0 when the
    peer is done (close the socket now), else the deadline until which the caller waits for
    it to be readable and calls ``drain`` again (then closes it, done or not)."""
    lingering_shutdown(sock)
    if drain(sock):
        return 0.0
    return _monotonic() + LINGER_SECONDS


def fin_with_response(ctx) -> bool:
    """Whether a worker that closes each connection right after its response (sync) may send
    that response's last piece so that the close's FIN leaves with it (Connection's
    ``close_follows``; the kernel holds the piece until the close, 200 ms at most). Only when
    nothing that may take its time runs in between: no post_request hook, and an access log, if any, that only
    appends to our own buffer (a logging handler or a logger_class may block, on a network
    socket say, and the client would wait for it)."""
    if ctx.post_request is not None:
        return False
    access = ctx.access_log
    return access is None or (getattr(access, "logger", True) is None
                              and getattr(access, "stream", None) is not None)


def release_taken_over(sock, sleep=time.sleep, linger: float = TAKEN_OVER_LINGER_SECONDS) -> None:
    """Before closing a socket the app took over (a websocket) and returned from. The same
    policy in every worker class (``sleep`` is the green one in gevent/eventlet).

    The app's library may not be done with it: simple-websocket's reader, in another thread or
    greenlet, signals "closed" to the app before it sends its reply to the peer's close frame.
    So wait, up to ``linger`` seconds, until the peer has closed its end or the library has
    closed the socket itself; nothing is read (those bytes are the library's). Then shut it
    down both ways, which also wakes a reader still blocked on it (close() from another thread
    would not), and let the caller close it.
    """
    deadline = _monotonic() + linger
    delay = 0.002
    while True:
        try:
            if sock.fileno() < 0:
                return  # the library closed it
        except (OSError, ValueError):
            return
        if peer_closed(sock):
            break
        remaining = deadline - _monotonic()
        if remaining <= 0:
            break
        sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass

"""A request's body as the app reads it (wsgi.input), from the parser and the socket.

Made fresh for each request that has a body; the loop (connection.py) makes it and
unicornd.wsgi.RequestBody calls ``pull`` and ``pull_into``. A Content-Length body with nothing
of it buffered is received straight from the socket, at most what the app's read still needs
and never past the body: no parser round trip, no copy on the way (the parser only counts it:
``direct_body_size``). A chunked body, and bytes that came with the head, go through the parser.
A body that stalls mid-way is answered 408, whichever worker class reads it.
"""

import time

from unicornd.client_socket import ClientDisconnected, ReceiveTimeout
from unicornd.http import response as resp
from unicornd.http.errors import HTTPError, RequestTimeout
from unicornd.http.parser import NEED_DATA

# A keep-alive connection may carry on after the app left part of the body unread (a 401, a
# redirect, a 413 answered without reading), as with gunicorn: before the response head goes
# out, the rest is read (and kept for the app, which may still read it) if it is at most
# UNREAD_KEEP_BYTES and arrives within UNREAD_WAIT_SECONDS. Otherwise the response says
# "Connection: close" (RFC 9112 §9.6) and the connection closes the lingering way.
UNREAD_KEEP_BYTES = 1 << 16
UNREAD_WAIT_SECONDS = 1.0
# Body bytes that arrived together with the head are decoded before the app is called, so a
# request whose framing is broken there is refused without the app ever seeing it.
MAX_PREFETCH = 1 << 16


class BodyReader:
    """The body of one request (``ex``, an Exchange): ``next_event()`` is the connection's
    parser fed from the socket (it raises ReceiveTimeout when the client goes silent)."""

    __slots__ = ("io", "parser", "ctx", "ex", "next_event")

    def __init__(self, io, parser, ctx, ex, next_event):
        self.io = io
        self.parser = parser
        self.ctx = ctx
        self.ex = ex
        self.next_event = next_event

    def pull(self, want: int = -1) -> bytes:
        """The next piece of body, b'' at its end. ``want``: how many bytes the app's read
        still needs (-1: all of the body)."""
        ex = self.ex
        if ex.message_done:
            return b""
        if ex.continue_pending:
            self.send_continue()
        parser = self.parser
        try:
            direct = parser.direct_body_size()
            if direct:
                data = self.io.recv(direct if want < 0 or want > direct else want)
                if data:
                    self._took_directly(len(data))
                    return data
                parser.receive_data(b"")  # EOF mid-body: the parser names it (NoMoreData)
            ev = self.next_event()
        except ReceiveTimeout:
            raise self._stalled() from None
        if type(ev) is bytes:
            if self.ctx.body_limited:
                self.ctx.check_body(ex, len(ev))
            return ev
        ex.message_done = True  # EndOfMessage
        return b""

    def pull_into(self, view) -> int:
        """Body received straight into ``view`` (a writable memoryview of bytes), for
        wsgi.input's readinto: how many bytes, 0 at the end of the body, -1 when the next bytes
        come through the parser instead (pull gives them: those that came with the head, a
        chunked body, the error of an EOF mid-body)."""
        ex = self.ex
        if ex.message_done:
            return 0
        direct = self.parser.direct_body_size()
        if not direct:
            return -1
        if ex.continue_pending:
            self.send_continue()
        n = len(view)
        try:
            got = self.io.recv_into(view, n if n < direct else direct)
        except ReceiveTimeout:
            raise self._stalled() from None
        if not got:
            self.parser.receive_data(b"")
            return -1
        self._took_directly(got)
        return got

    def send_continue(self):
        """The client waits for "100 Continue" before it sends the body the app now reads."""
        ex = self.ex
        ex.continue_pending = False
        if not ex.head_sent:
            self.io.sendall(resp.CONTINUE)

    def _took_directly(self, n: int) -> None:
        """``n`` body bytes were received past the parser: count them (the parser, the limits)."""
        ex = self.ex
        if self.parser.body_read_directly(n):
            ex.message_done = True
        if self.ctx.body_limited:
            self.ctx.check_body(ex, n)

    def _stalled(self) -> RequestTimeout:
        return RequestTimeout(f"the request body stalled: nothing for {self.io.stall_seconds()} s "
                              "(header_timeout)")

    def prefetch(self, body) -> None:
        """Decode the body bytes already received into ``body`` (the RequestBody), without
        reading the socket."""
        parser = self.parser
        ex = self.ex
        got = 0
        while got < MAX_PREFETCH:
            ev = parser.next_event()
            if ev is NEED_DATA:
                return
            if type(ev) is not bytes:
                ex.message_done = True  # EndOfMessage
                return
            if self.ctx.body_limited:
                self.ctx.check_body(ex, len(ev))
            body.feed(ev)
            got += len(ev)
            if parser.direct_body_size():
                return  # the rest is a Content-Length body still in the socket: nothing to decode

    def read_unread_rest(self) -> bool:
        """Read the body the app has not read (yet), up to UNREAD_KEEP_BYTES and for
        UNREAD_WAIT_SECONDS at most; it is kept for the app, which may still read it. True
        once it has all arrived (the response head may then keep the connection alive)."""
        ex = self.ex
        if ex.continue_pending:
            return False  # the client waits for our 100 before it sends the body
        remaining = self.parser.body_remaining
        if remaining is not None and remaining > UNREAD_KEEP_BYTES:
            return False
        sock = self.io.sock
        previous = sock.gettimeout()
        deadline = time.monotonic() + UNREAD_WAIT_SECONDS
        got = 0
        try:
            while not ex.message_done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left if previous is None else min(left, previous))
                data = self.pull()
                ex.body.feed(data)
                got += len(data)
                if got > UNREAD_KEEP_BYTES:
                    return False
            return True
        except (ClientDisconnected, HTTPError):
            return False  # (the app meets the same error if it reads on)
        finally:
            try:
                sock.settimeout(previous)
            except OSError:
                pass

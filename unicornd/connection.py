"""The one request loop every worker class runs on an accepted connection.

bytes -> parser (unicornd.http.parser) -> a fresh Exchange per request (unicornd.exchange) ->
environ (unicornd.wsgi) -> the app -> the response writer (unicornd.http.writer) -> bytes ->
keep-alive or close. Worker classes differ only in how they accept connections and schedule this loop;
they never parse or frame HTTP themselves. The socket is used in blocking style (gevent and
eventlet make that cooperative), with kernel timeouts set on the listener by the worker.
"""

import _socket
import os
import socket
import ssl
import time

from unicornd.closing import RECV_SIZE, data_waiting, kernel_socket
from unicornd.context import ServerContext  # noqa: F401  (its home is unicornd.context)
from unicornd.exchange import Exchange
from unicornd.http import response as resp
from unicornd.http.errors import HTTPError, PayloadTooLarge, RequestTimeout
from unicornd.http.parser import CLOSED, NEED_DATA, RequestParser
from unicornd.http.writer import ResponseWriter
from unicornd.wsgi import NO_BODY, FileWrapper, RequestBody, reraise

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
# The most one recv of body straight from the socket asks for: recv allocates what it is asked
# for before it knows what came, and a read(1 GiB) should not allocate 1 GiB per segment.
DIRECT_RECV_MAX = 1 << 20
_list_types = (list, tuple)
_monotonic = time.monotonic
# struct timeval 0: no kernel send/receive timeout (SO_RCVTIMEO / SO_SNDTIMEO).
_NO_KERNEL_TIMEOUT = bytes(16)
# Linux: "more data follows": the kernel keeps the last partial segment until the next send
# or the close, whose FIN then leaves in the same packet (0 where there is no such flag).
_MSG_MORE = getattr(socket, "MSG_MORE", 0)


# What serve() asks of the worker when it returns.
CLOSE = 0
LINGER = 1
IDLE = 2


class ClientDisconnected(Exception):
    """The peer went away (reset, broken pipe, receive timeout) while we talked to it."""


class _ReceiveTimeout(ClientDisconnected):
    """Nothing arrived from the client within the socket's timeout (header_timeout)."""


class Connection:
    """One accepted socket, served request after request until it must close.

    ``serve()`` returns LINGER when unread input may remain in the socket: the caller must then
    close it the lingering way (``shutdown(SHUT_WR)``, read and drop, close) so the response
    is not destroyed by a TCP reset (RFC 9112 §9.6).
    """

    __slots__ = ("ctx", "sock", "peer", "builder", "environ_base", "parser", "ex", "_nodelay", "trusted",
                 "stashed", "raw", "taken_over", "progress", "waiting", "app_owned",
                 "handshake", "last_send_flags")

    def __init__(self, ctx: ServerContext, sock, peer, listener_addr, close_follows=False):
        self.ctx = ctx
        self.sock = sock
        self.peer = peer
        self.builder = ctx.environ_builder(listener_addr)
        proxy_allowed = ctx.proxy_protocol and ctx.proxy_allow.allows(peer)
        self.trusted = ctx.forwarded_allow.allows(peer)
        self.parser = RequestParser(ctx.parser_options, proxy_allowed=proxy_allowed,
                                    forwarder_trusted=self.trusted)
        self._nodelay = False
        self.ex = None  # the request under way (an Exchange), made fresh for each request
        self.stashed = None  # an event (or error) read ahead by read_head_nonblocking()
        self.taken_over = False  # the app owned the socket (a websocket): it may still use it
        # For the timeout decision (master/timeouts.py): when the request last made progress
        # (started, or read from or wrote to its client), whether it is waiting on its client
        # right now, and whether the app may own the socket (it asked for an upgrade).
        self.progress = 0.0
        self.waiting = False
        self.app_owned = False
        # A cooperative (gevent, eventlet) plain socket's kernel socket, for sends that need
        # no waiting; None for a kernel socket (sync, gthread) or TLS.
        self.raw = None
        # With TLS, the socket is wrapped here, once, before any request: ``sock`` is the one
        # the worker watches and closes from now on (the plain socket is detached). The
        # handshake itself is serve()'s (it may wait on the client); its error, if the wrap
        # already failed, too.
        self.handshake = None
        if ctx.ssl_context is not None:
            try:
                self.sock = ctx.ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False,
                    suppress_ragged_eofs=ctx.cfg.suppress_ragged_eofs)
                self.handshake = True if ctx.cfg.do_handshake_on_connect else None
            except (ssl.SSLError, OSError) as exc:
                self.handshake = exc
        elif not isinstance(sock, _socket.socket):
            self.raw = kernel_socket(sock)
        # ``close_follows``: the worker closes the socket as soon as serve() returns, and
        # nothing of the user's runs between a response's last send and that close
        # (closing.fin_with_response). A response that is the app's whole answer in one piece
        # and says Connection: close is then sent with MSG_MORE, so that the close's FIN goes
        # out with it: one packet instead of two, for the client and for us. (A plain kernel
        # socket only: TLS sends take no flags.)
        self.last_send_flags = _MSG_MORE if close_follows and ctx.ssl_context is None and self.raw is None else 0
        # what every environ on this connection holds (the peer, the socket the app may use)
        self.environ_base = self.builder.connection_base(peer, self.sock)

    # -- reading -------------------------------------------------------------------------

    def read_head_nonblocking(self) -> bool:
        """Take in what has arrived, without waiting. True once serve() has its next event
        at hand (a request head, an error, or EOF) and so cannot be held up by a slow client;
        False while the head is still incomplete (watch the socket, call again when readable).
        """
        if self.stashed is not None or self.ctx.ssl_context is not None:
            return True  # (TLS: the handshake is serve()'s; the socket timeouts bound it)
        parser = self.parser
        while True:
            try:
                ev = parser.next_event()
            except HTTPError as exc:
                self.stashed = exc
                return True
            if ev is not NEED_DATA:
                self.stashed = ev
                return True
            try:
                # The plain socket: gevent's would wait for data instead of saying "none yet".
                data = _socket.socket.recv(self.raw or self.sock, RECV_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                data = b""
            parser.receive_data(data)

    def time_out_head(self) -> int:
        """The head did not arrive within header_timeout: answer 408; returns LINGER."""
        self.refuse(RequestTimeout(f"no complete request head within header_timeout "
                                   f"({self.ctx.cfg.header_timeout} s)"), count=True)
        return LINGER

    def _next_event(self):
        parser = self.parser
        ev = parser.next_event()
        while ev is NEED_DATA:
            self._waiting()
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, socket.timeout):
                raise _ReceiveTimeout("timed out waiting for the client") from None
            except OSError:
                data = b""
            finally:
                self._progressed()
            parser.receive_data(data)
            ev = parser.next_event()
        return ev

    def _pull_body(self, want: int = -1) -> bytes:
        """The next piece of request body for wsgi.input, b'' at its end. ``want``: how many
        bytes the app's read still needs (-1: all of the body).

        A Content-Length body with nothing of it buffered is received straight from the
        socket, at most what is wanted and never past the body, in one recv: no parser round
        trip, no copy on the way (the parser only counts it: direct_body_size). A chunked
        body, and bytes that came with the head, go through the parser."""
        ex = self.ex
        if ex.message_done:
            return b""
        if ex.continue_pending:
            self._send_continue()
        parser = self.parser
        try:
            direct = parser.direct_body_size()
            if direct:
                data = self._recv_body(direct if want < 0 or want > direct else want)
                if data:
                    self._took_directly(len(data))
                    return data
                parser.receive_data(b"")  # EOF mid-body: the parser names it (NoMoreData)
            ev = self._next_event()
        except _ReceiveTimeout:
            raise self._stalled() from None
        if type(ev) is bytes:
            if self.ctx.body_limited:
                self.ctx.check_body(ex, len(ev))
            return ev
        ex.message_done = True  # EndOfMessage
        return b""

    def _recv_body(self, n: int) -> bytes:
        """Up to ``n`` bytes of body from the socket, what has arrived (at most DIRECT_RECV_MAX);
        b"" at EOF (or a broken connection).

        Not MSG_WAITALL, though on a blocking kernel socket it would take a large read(n) in
        one syscall: SO_RCVTIMEO then bounds the whole call, not each silence, so a body that
        stalls after a few more bytes would get its 408 up to twice header_timeout after its
        last byte instead of at header_timeout (docs/http.md). Measured on a 1 GiB upload read
        with read(1 MiB), the direct recv alone already cuts the worker's CPU eightfold; the
        flag saved a little more, not worth that."""
        self._waiting()
        try:
            return self.sock.recv(n if n < DIRECT_RECV_MAX else DIRECT_RECV_MAX)
        except (BlockingIOError, socket.timeout):
            raise _ReceiveTimeout("timed out waiting for the client") from None
        except OSError:
            return b""
        finally:
            self._progressed()

    def _pull_body_into(self, view) -> int:
        """Body received straight into ``view`` (a writable memoryview of bytes), for
        wsgi.input's readinto: how many bytes, 0 at the end of the body, -1 when the next bytes
        come through the parser instead (_pull_body gives them: those that came with the head,
        a chunked body, the error of an EOF mid-body)."""
        ex = self.ex
        if ex.message_done:
            return 0
        direct = self.parser.direct_body_size()
        if not direct:
            return -1
        if ex.continue_pending:
            self._send_continue()
        n = len(view)
        self._waiting()
        try:
            got = self.sock.recv_into(view, n if n < direct else direct)
        except (BlockingIOError, socket.timeout):
            raise self._stalled() from None
        except OSError:
            got = 0
        finally:
            self._progressed()
        if not got:
            self.parser.receive_data(b"")
            return -1
        self._took_directly(got)
        return got

    def _send_continue(self):
        """The client waits for "100 Continue" before it sends the body the app now reads."""
        ex = self.ex
        ex.continue_pending = False
        if not ex.head_sent:
            self._sendall(resp.CONTINUE)

    def _took_directly(self, n: int) -> None:
        """``n`` body bytes were received past the parser: count them (the parser, the limits)."""
        ex = self.ex
        if self.parser.body_read_directly(n):
            ex.message_done = True
        if self.ctx.body_limited:
            self.ctx.check_body(ex, n)

    def _stalled(self) -> RequestTimeout:
        # A body that stalls mid-way is answered 408, whichever worker class reads it.
        return RequestTimeout(f"the request body stalled: nothing for {self._stall_seconds()} s "
                              "(header_timeout)")

    def _stall_seconds(self):
        timeout = self.sock.gettimeout()  # None on a kernel socket: SO_RCVTIMEO is header_timeout
        return timeout if timeout else self.ctx.cfg.header_timeout

    # -- progress, for the timeout decision ------------------------------------------------

    def _waiting(self):
        """About to wait on the client (it may be slow: that is not the app being hung)."""
        self.waiting = True
        mirror = self.ctx.mirror
        if mirror is not None:
            mirror.progress(self.progress, self.progress, 0)

    def _progressed(self):
        """Bytes went to or came from the client: the request is alive."""
        self.waiting = False
        now = self.progress = _monotonic()
        mirror = self.ctx.mirror
        if mirror is not None:
            mirror.progress(now, now, 0 if self.app_owned else 1)

    def _hand_over(self):
        """A request that asks for an upgrade (a websocket handshake): the app may take the
        socket over and its library then owns the timeouts, so none of ours stays on it (the
        green socket's I/O timeout, the kernel's SO_RCVTIMEO/SO_SNDTIMEO from header_timeout),
        and the connection is not kept alive after it."""
        self.app_owned = True
        self.ex.keep_alive = False
        sock = self.sock
        try:
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _NO_KERNEL_TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _NO_KERNEL_TIMEOUT)
        except (OSError, ValueError):
            pass

    # -- writing -------------------------------------------------------------------------

    def _sendall(self, data, flags=0):
        try:
            raw = self.raw
            if raw is not None:
                # Most responses fit the socket's buffer: one send(2), skipping the
                # cooperative sendall's bookkeeping (gevent's asks for SO_SNDBUF each time).
                try:
                    sent = _socket.socket.send(raw, data, socket.MSG_DONTWAIT | flags)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent == len(data):
                    self._progressed()
                    return
                data = memoryview(data)[sent:]
            self._waiting()
            self.sock.sendall(data, flags)
        except (BlockingIOError, socket.timeout):
            raise ClientDisconnected("timed out sending to the client") from None
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from None
        finally:
            if self.waiting:
                self._progressed()

    def start_response(self, status, headers, exc_info=None):
        ex = self.ex
        if exc_info:
            try:
                if ex.head_sent:
                    reraise(exc_info)
            finally:
                exc_info = None
        elif ex.writer is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        req = ex.req
        worker = self.ctx.worker
        # Decided again here: a stop that began while the app ran means Connection: close.
        keep_alive = ex.keep_alive and (worker is None or worker.alive)
        ex.writer = ResponseWriter(resp.response_head(status, headers, req.method, req.version,
                                                      keep_alive))
        return self.write

    def write(self, data, last=False, flags=0):
        """Send a piece of body (the WSGI write() callable, and each item of the iterable).
        ``flags``: last_send_flags, when this is the last send before the connection closes
        (used only if the response says Connection: close)."""
        ex = self.ex
        writer = ex.writer
        if writer is None:
            raise AssertionError("the app sent body data before calling start_response()")
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError(f"WSGI body items must be bytes, got {type(data).__name__}")
        out = writer.body(data, last)
        if writer.cut and not ex.overflow_logged:
            ex.overflow_logged = True
            self.ctx.log.warning(
                "%s %s: the app sent more than its Content-Length of %d bytes; the excess is cut",
                ex.req.method, ex.req.path, writer.head.content_length)
        if writer.head_sent:
            if out:
                if not self._nodelay:
                    # A streamed body: small writes must not wait for Nagle's delayed ACK dance.
                    self._nodelay = True
                    try:
                        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    except OSError:
                        pass
                self._sendall(out, flags if flags and writer.head.close else 0)
            return
        if self.app_owned or writer.head.status_code == 101:
            status_code = writer.head.status_code
            if last and status_code == 101:
                # The app returned with its 101 unsent: it did its own handshake on the socket
                # (a websocket library writes its 101 itself) and returns only to end the
                # request. A head from us now would land inside its stream: nothing is sent.
                self.taken_over = True
                return
            if status_code != 101:
                self.app_owned = False  # it answered the upgrade request instead of taking over
        out = self._head_bytes(out)
        self._sendall(out, flags if flags and writer.head.close else 0)  # (head: read after _head_bytes)

    def _finish(self):
        """After the last body item: end the framing, decide whether the connection lives on."""
        ex = self.ex
        writer = ex.writer
        if writer.head.status_code == 101:
            # After a 101 the connection belongs to the app (websocket): never read it as HTTP
            # again, and nothing more is written by us (not even its head, if still unsent:
            # see write()).
            self.taken_over = True
            return False
        if not writer.head_sent:
            self.write(b"", last=True)
        elif not writer.ended:
            end = writer.end()
            if end:
                self._sendall(end)
        head = writer.head  # (read now: sending the head may have made it a closing() copy)
        if writer.short:
            self.ctx.log.warning(
                "%s %s: the app sent %d of its Content-Length of %d bytes; closing the connection",
                ex.req.method, ex.req.path, writer.sent, head.content_length)
            return False
        return not head.close and not head.upgrade

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a real file with sendfile(2); False if it is not one (iterate instead)."""
        writer = self.ex.writer
        if writer is None or not self.ctx.use_sendfile or writer.head.framing == resp.NO_BODY:
            return False
        found = wrapper.sendable_file()
        if found is None:
            return False
        fd, offset = found
        size = writer.file_size(os.fstat(fd).st_size - offset)
        if size <= 0:
            return False
        cooperative = self.ctx.wait_writable is not None
        if cooperative and self.raw is None:
            return False  # TLS on gevent or eventlet: no sendfile(2) under TLS; iterate
        prefix, suffix = writer.file_frame(size)
        if not writer.head_sent:
            self._sendall(self._head_bytes(prefix))
        elif prefix:
            self._sendall(prefix)
        self._waiting()
        try:
            if cooperative:
                self._sendfile_cooperative(fd, offset, size)
            else:
                self.sock.sendfile(wrapper.filelike, offset, size)
        except (BlockingIOError, socket.timeout):
            raise ClientDisconnected("timed out sending a file") from None
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from None
        finally:
            self._progressed()
        if suffix:
            self._sendall(suffix)
        return True

    def _sendfile_cooperative(self, fd: int, offset: int, size: int) -> None:
        """sendfile(2) on a gevent or eventlet socket, whose kernel socket is non-blocking
        (socket.sendfile refuses it on eventlet and reads the file in Python on gevent):
        the kernel copies the file; the greenlet waits for room in the socket's buffer."""
        out = self.raw.fileno()
        wait = self.ctx.wait_writable
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

    def _head_bytes(self, body: bytes = b"") -> bytes:
        """The response head, serialized once it is settled whether the connection lives on:
        an app that answers before reading all of its request body keeps the connection only
        if the rest can be read now (RFC 9112 §9.6: a server that will close says so in this
        response, not after it)."""
        ex = self.ex
        writer = ex.writer
        head = writer.head
        if ex.has_body and not ex.message_done and not head.close and not head.upgrade:
            if not self._read_unread_rest():
                writer.head = head.closing()  # (a copy: heads are shared, see response_head)
        return writer.head_bytes(body)

    def _read_unread_rest(self) -> bool:
        """Read the body the app has not read (yet), up to UNREAD_KEEP_BYTES and for
        UNREAD_WAIT_SECONDS at most; it is kept for the app, which may still read it. True
        once it has all arrived."""
        ex = self.ex
        if ex.continue_pending:
            return False  # the client waits for our 100 before it sends the body
        remaining = self.parser.body_remaining
        if remaining is not None and remaining > UNREAD_KEEP_BYTES:
            return False
        sock = self.sock
        previous = sock.gettimeout()
        deadline = time.monotonic() + UNREAD_WAIT_SECONDS
        got = 0
        try:
            while not ex.message_done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left if previous is None else min(left, previous))
                data = self._pull_body()
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

    def refuse(self, exc: HTTPError, count: bool = False) -> None:
        """Answer a request we refuse ourselves (400, 408, 413, 431...) and close: the reason
        goes in the body and, rate-limited, to the error log (ServerContext.refusal).
        ``count``: no request was under way (the head was refused), so count it here."""
        reason = self.ctx.refusal(self.peer, exc, count)
        self._send_error(exc.status, exc.reason, f"{exc.status} {exc.reason}\n{reason}\n")

    def _send_error(self, status: int, reason: str, body: str = ""):
        if self.ex is not None:
            self.ex.error_status = status  # what the access log and the metrics report
        try:
            self._sendall(resp.error_response(status, reason, body))
        except ClientDisconnected:
            pass

    # -- the loop ------------------------------------------------------------------------

    def serve(self, park_when_idle: bool = False) -> int:
        """Serve requests until the connection must close, or (``park_when_idle``) until it
        waits for its next request with nothing buffered.

        Returns ``CLOSE`` (close it now), ``LINGER`` (unread input may remain: close it the
        lingering way) or ``IDLE`` (a keep-alive connection with no request pending: the worker
        may watch it in a selector and call ``serve`` again when it is readable).
        """
        ctx = self.ctx
        if self.handshake is not None:
            handshake, self.handshake = self.handshake, None
            try:
                if handshake is not True:
                    raise handshake  # the wrap failed
                self.sock.do_handshake()  # do_handshake_on_connect (else: on the first read)
            except (ssl.SSLError, OSError) as exc:
                ctx.log.debug("TLS handshake with %s failed: %s", self.peer, exc)
                return CLOSE
        parser = self.parser
        while True:
            try:
                ev = self.stashed
                if ev is None:
                    ev = self._next_event()
                else:
                    self.stashed = None
                    if isinstance(ev, HTTPError):
                        raise ev
            except HTTPError as exc:
                if exc.status is None:
                    return CLOSE
                self.refuse(exc, count=True)
                return LINGER
            except ClientDisconnected:
                return CLOSE
            if ev is CLOSED:
                return CLOSE
            worker = ctx.worker
            if worker is not None:
                worker.request_started(ev, self)
            ex = self.ex = Exchange(ev, _monotonic(), ctx.keep_alive and ev.keep_alive and (
                worker is None or worker.alive))  # (a worker on its way out: Connection: close)
            try:
                keep = self._handle(ev, ex)
            except ClientDisconnected as exc:
                ctx.log.debug("client %s went away: %s", self.peer, exc)
                return CLOSE
            except HTTPError as exc:
                # Bad body framing found while the app read its input, or the client left.
                if exc.status is None:
                    ctx.log.debug("client %s went away mid-upload: %s", self.peer, exc)
                    return CLOSE
                if ex.head_sent:
                    ctx.log.debug("request from %s refused after its response began: %s", self.peer, exc)
                    return CLOSE
                self.refuse(exc)
                return LINGER
            finally:
                self.ex = None  # what comes next (a refused head, a timeout) is no request's
                if worker is not None:
                    worker.request_finished(ev, self, ex)
            if not keep:
                if self.taken_over:
                    return CLOSE  # the app owned the socket after its 101: nothing to drain
                return LINGER if self._input_pending(ex.message_done) else CLOSE
            parser.start_next_request()
            if park_when_idle and not parser.buffered and (
                    ctx.ssl_context is None or not self.sock.pending()):
                return IDLE  # (decrypted bytes inside the TLS layer are invisible to a selector)

    def _input_pending(self, message_done: bool) -> bool:
        return not message_done or bool(self.parser.buffered) or data_waiting(self.sock)

    @property
    def pipelined(self) -> bool:
        """Bytes of a next request are buffered already (pipelining)."""
        return bool(self.parser.buffered)

    def _handle(self, req, ex) -> bool:
        ctx = self.ctx
        self.progress = ex.started
        self.waiting = False
        has_body = ex.has_body
        if has_body and ctx.limit_request_body and (req.content_length or 0) > ctx.limit_request_body:
            # Refused before a byte of the body is read (the client may be waiting on 100).
            self.refuse(PayloadTooLarge(f"Content-Length {req.content_length} is larger than "
                                        f"limit_request_body ({ctx.limit_request_body})"))
            return False
        if req.upgrade:
            self._hand_over()
        elif self.app_owned:
            self.app_owned = False
        if ctx.mirror is not None:
            ctx.mirror.progress(ex.started, ex.started, 0 if self.app_owned else 1)
        body = ex.body = (RequestBody(self._pull_body, True, self._pull_body_into) if has_body
                          else NO_BODY)
        if has_body and self.parser.buffered:
            try:
                self._prefetch(body)
            except HTTPError as exc:
                if exc.status is None:
                    raise
                self.refuse(exc)
                return False
        try:
            environ = self.builder.build(req, body, self.environ_base, self.trusted)
        except HTTPError as exc:
            if exc.status is None:
                exc.status = 400
            self.refuse(exc)
            return False
        if ctx.pre_request is not None:
            ctx.pre_request(ctx.worker, req)
        keep = self._run_app(environ, req)
        ctx.requests_served += 1
        if ctx.post_request is not None:
            try:
                ctx.post_request(ctx.worker, req, environ, ex)
            except Exception:
                ctx.log.exception("Exception in post_request hook")
        if ctx.access_log is not None:
            ctx.access_log.log(ex, req, environ, time.monotonic() - ex.started)
        if not has_body:
            if not ex.message_done:
                if self.parser.end_bodyless():  # (its EndOfMessage, without making one)
                    ex.message_done = True
                else:
                    self._pull_body()
        elif not ex.message_done:
            # Part of the body is still on its way: the response head said Connection: close
            # (_head_bytes), unless the app sent none (an error answer, which closes too).
            return False
        return keep

    def _prefetch(self, body) -> None:
        """Decode the body bytes already received, without reading the socket."""
        parser = self.parser
        got = 0
        while got < MAX_PREFETCH:
            ev = parser.next_event()
            if ev is NEED_DATA:
                return
            if type(ev) is not bytes:
                self.ex.message_done = True  # EndOfMessage
                return
            if self.ctx.body_limited:
                self.ctx.check_body(self.ex, len(ev))
            body.feed(ev)
            got += len(ev)
            if parser.direct_body_size():
                return  # the rest is a Content-Length body still in the socket: nothing to decode

    def _run_app(self, environ, req) -> bool:
        ctx = self.ctx
        result = None
        try:
            result = ctx.app(environ, self.start_response)
            if type(result) in _list_types and len(result) == 1:
                # The common case: head, body and chunked terminator leave in one send (and
                # the FIN with them, when the worker closes next: last_send_flags). A list has
                # no close() to run after it.
                self.write(result[0], last=True, flags=self.last_send_flags)
            elif isinstance(result, FileWrapper) and self._send_file(result):
                pass
            else:
                for data in result:
                    if data:
                        self.write(data)
            return self._finish()
        except (ClientDisconnected, HTTPError):
            raise  # the client's fault (gone, or a bad body): serve() answers or closes
        except StopIteration:
            # gunicorn's convention for an app that took the socket over (flask-sock, after
            # a websocket session): nothing more is written; the connection closes.
            self.taken_over = True
            raise ClientDisconnected("the app took the connection over") from None
        except Exception:
            ctx.log.exception("Error handling request %s %s", req.method, req.target)
            if not self.ex.head_sent:
                self._send_error(500, "Internal Server Error")
                return False
            raise ClientDisconnected("response aborted after an app error") from None
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    ctx.log.exception("Error closing the response iterable of %s %s", req.method, req.target)

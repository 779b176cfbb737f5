"""The one request loop every worker class runs on an accepted connection.

bytes -> parser (unicornd.http.parser) -> a fresh Exchange per request (unicornd.exchange) ->
environ (unicornd.wsgi) -> the app -> the response writer (unicornd.http.writer) -> bytes ->
keep-alive or close. Worker classes differ only in how they accept connections and schedule this loop;
they never parse or frame HTTP themselves. The socket is used in blocking style (gevent and
eventlet make that cooperative), with kernel timeouts set on the listener by the worker.
"""

import os
import socket
import ssl
import time

from unicornd.body_reader import BodyReader
from unicornd.client_socket import ClientDisconnected, ClientSocket
from unicornd.closing import data_waiting
from unicornd.context import ServerContext  # noqa: F401  (its home is unicornd.context)
from unicornd.exchange import Exchange
from unicornd.http import response as resp
from unicornd.http.errors import HTTPError, PayloadTooLarge, RequestTimeout
from unicornd.http.parser import CLOSED, NEED_DATA, RequestParser
from unicornd.http.writer import ResponseWriter
from unicornd.wsgi import NO_BODY, FileWrapper, RequestBody, reraise

_list_types = (list, tuple)
_monotonic = time.monotonic
# Linux: "more data follows": the kernel keeps the last partial segment until the next send
# or the close, whose FIN then leaves in the same packet (0 where there is no such flag).
_MSG_MORE = int(getattr(socket, "MSG_MORE", 0))


# What serve() asks of the worker when it returns.
CLOSE = 0
LINGER = 1
IDLE = 2


class Connection:
    """One accepted socket, served request after request until it must close.

    ``serve()`` returns LINGER when unread input may remain in the socket: the caller must then
    close it the lingering way (``shutdown(SHUT_WR)``, read and drop, close) so the response
    is not destroyed by a TCP reset (RFC 9112 §9.6).
    """

    __slots__ = ("ctx", "sock", "io", "peer", "builder", "environ_base", "parser", "ex", "trusted",
                 "stashed", "taken_over", "handshake", "last_send_flags")

    def __init__(self, ctx: ServerContext, sock, peer, listener_addr, close_follows=False):
        self.ctx = ctx
        self.peer = peer
        self.builder = ctx.environ_builder(listener_addr)
        proxy_allowed = ctx.proxy_protocol and ctx.proxy_allow.allows(peer)
        self.trusted = ctx.forwarded_allow.allows(peer)
        self.parser = RequestParser(ctx.parser_options, proxy_allowed=proxy_allowed,
                                    forwarder_trusted=self.trusted)
        self.ex = None  # the request under way (an Exchange), made fresh for each request
        self.stashed = None  # an event (or error) read ahead by read_head_nonblocking()
        self.taken_over = False  # the app owned the socket (a websocket): it may still use it
        # With TLS, the socket is wrapped here, once, before any request: ``sock`` is the one
        # the worker watches and closes from now on (the plain socket is detached). The
        # handshake itself is serve()'s (it may wait on the client); its error, if the wrap
        # already failed, too.
        self.handshake = None
        tls = ctx.ssl_context is not None
        if tls:
            try:
                sock = ctx.ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False,
                    suppress_ragged_eofs=ctx.cfg.suppress_ragged_eofs)
                self.handshake = True if ctx.cfg.do_handshake_on_connect else None
            except (ssl.SSLError, OSError) as exc:
                self.handshake = exc
        self.sock = sock
        # Every receive and send goes through it: it notes the request's progress for the
        # timeout decision (conn.io.progress, .waiting, .app_owned).
        io = self.io = ClientSocket(sock, ctx.mirror, ctx.cfg.header_timeout, tls)
        # ``close_follows``: the worker closes the socket as soon as serve() returns, and
        # nothing of the user's runs between a response's last send and that close
        # (closing.fin_with_response). A response that is the app's whole answer in one piece
        # and says Connection: close is then sent with MSG_MORE, so that the close's FIN goes
        # out with it: one packet instead of two, for the client and for us. (A plain kernel
        # socket only: TLS sends take no flags.)
        self.last_send_flags = _MSG_MORE if close_follows and not tls and io.raw is None else 0
        # what every environ on this connection holds (the peer, the socket the app may use)
        self.environ_base = self.builder.connection_base(peer, sock)

    # -- reading -------------------------------------------------------------------------

    def read_head_nonblocking(self) -> bool:
        """Take in what has arrived, without waiting. True once serve() has its next event
        at hand (a request head, an error, or EOF) and so cannot be held up by a slow client;
        False while the head is still incomplete (watch the socket, call again when readable).
        """
        if self.stashed is not None or self.ctx.ssl_context is not None:
            return True  # (TLS: the handshake is serve()'s; the socket timeouts bound it)
        parser = self.parser
        recv_nowait = self.io.recv_nowait
        while True:
            try:
                ev = parser.next_event()
            except HTTPError as exc:
                self.stashed = exc
                return True
            if ev is not NEED_DATA:
                self.stashed = ev
                return True
            data = recv_nowait()
            if data is None:
                return False
            parser.receive_data(data)

    def time_out_head(self) -> int:
        """The head did not arrive within header_timeout: answer 408; returns LINGER."""
        self.refuse(RequestTimeout(f"no complete request head within header_timeout "
                                   f"({self.ctx.cfg.header_timeout} s)"), count=True)
        return LINGER

    def _next_event(self):
        """The parser's next event, receiving from the client while it needs data (raises
        ReceiveTimeout when the client is silent for header_timeout)."""
        parser = self.parser
        ev = parser.next_event()
        while ev is NEED_DATA:
            parser.receive_data(self.io.recv())
            ev = parser.next_event()
        return ev

    # -- writing -------------------------------------------------------------------------

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
                self.io.streaming()
                self.io.sendall(out, flags if flags and writer.head.close else 0)
            return
        if self.io.app_owned or writer.head.status_code == 101:
            status_code = writer.head.status_code
            if last and status_code == 101:
                # The app returned with its 101 unsent: it did its own handshake on the socket
                # (a websocket library writes its 101 itself) and returns only to end the
                # request. A head from us now would land inside its stream: nothing is sent.
                self.taken_over = True
                return
            if status_code != 101:
                self.io.app_owned = False  # it answered the upgrade request instead of taking over
        out = self._head_bytes(out)
        self.io.sendall(out, flags if flags and writer.head.close else 0)  # (head: read after _head_bytes)

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
                self.io.sendall(end)
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
        io = self.io
        wait = self.ctx.wait_writable
        if not io.can_sendfile(wait):
            return False  # TLS on gevent or eventlet: iterate
        found = wrapper.sendable_file()
        if found is None:
            return False
        fd, offset = found
        size = writer.file_size(os.fstat(fd).st_size - offset)
        if size <= 0:
            return False
        prefix, suffix = writer.file_frame(size)
        if not writer.head_sent:
            io.sendall(self._head_bytes(prefix))
        elif prefix:
            io.sendall(prefix)
        io.sendfile(wrapper.filelike, offset, size, wait)
        if suffix:
            io.sendall(suffix)
        return True

    def _head_bytes(self, body: bytes = b"") -> bytes:
        """The response head, serialized once it is settled whether the connection lives on:
        an app that answers before reading all of its request body keeps the connection only
        if the rest can be read now (RFC 9112 §9.6: a server that will close says so in this
        response, not after it)."""
        ex = self.ex
        writer = ex.writer
        head = writer.head
        if ex.has_body and not ex.message_done and not head.close and not head.upgrade:
            if not ex.reader.read_unread_rest():
                writer.head = head.closing()  # (a copy: heads are shared, see response_head)
        return writer.head_bytes(body)

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
            self.io.sendall(resp.error_response(status, reason, body))
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
        has_body = ex.has_body
        if has_body and ctx.limit_request_body and (req.content_length or 0) > ctx.limit_request_body:
            # Refused before a byte of the body is read (the client may be waiting on 100).
            self.refuse(PayloadTooLarge(f"Content-Length {req.content_length} is larger than "
                                        f"limit_request_body ({ctx.limit_request_body})"))
            return False
        # An upgrade request (a websocket handshake): the app may take the socket over, its
        # library then owns the timeouts (ClientSocket.hand_over), and the connection is not
        # kept alive after it.
        self.io.started(ex.started, req.upgrade)
        if req.upgrade:
            ex.keep_alive = False
        if has_body:
            reader = ex.reader = BodyReader(self.io, self.parser, ctx, ex, self._next_event)
            body = ex.body = RequestBody(reader.pull, True, reader.pull_into)
        else:
            body = ex.body = NO_BODY
        if has_body and self.parser.buffered:
            try:
                reader.prefetch(body)
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
                else:  # (not seen: kept for a parser that has its EndOfMessage to give)
                    BodyReader(self.io, self.parser, ctx, ex, self._next_event).pull()
        elif not ex.message_done:
            # Part of the body is still on its way: the response head said Connection: close
            # (_head_bytes), unless the app sent none (an error answer, which closes too).
            return False
        return keep

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

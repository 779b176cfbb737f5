"""What all connections of one worker share, built once per worker (not per request).

The settings the request loop reads on every request, pre-digested (the parser's options, the
trusted proxies, the hooks that are not the default no-ops, the access log), the environ
builders, and two policies of the loop that are not the protocol itself: the body limits
(``limit_request_body``, ``min_body_rate``) and the rate-limited log of refused requests.
"""

import time

from unicornd.accesslog import make_access_log
from unicornd.config import default_hooks
from unicornd.http.errors import PayloadTooLarge, RequestTimeout
from unicornd.http.forwarded import AddressList
from unicornd.http.parser import ParserOptions
from unicornd.logging import ErrorStream, RateLimiter
from unicornd.wsgi import EnvironBuilder

# Refused requests (400, 408, 413, 431...) logged at warning level: at most this many lines
# per window and worker, so a flood of bad requests cannot fill the disk.
REFUSED_LOG_LINES = 20
REFUSED_LOG_WINDOW = 60.0
# The reason we put in a refusal's body (as gunicorn does) is cut to this many characters.
REFUSED_REASON_CHARS = 200
# min_body_rate is judged only after this long, so that one slow start is not fatal.
BODY_RATE_GRACE_SECONDS = 5.0


def peer_ip(peer) -> str:
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return "unix"  # a Unix socket's peer has no address


class ServerContext:
    """One worker's shared state for its connections."""

    def __init__(self, cfg, app, log, worker=None, *, multithread=False, keep_alive=True,
                 ssl_context=None):
        self.cfg = cfg
        self.app = app
        self.log = log
        self.worker = worker
        self.keep_alive = keep_alive
        self.multithread = multithread
        self.parser_options = ParserOptions.from_config(cfg)
        self.proxy_protocol = self.parser_options.proxy_protocol not in ("off", None, False)
        self.proxy_allow = AddressList(cfg.proxy_allow_ips)
        self.forwarded_allow = AddressList(cfg.forwarded_allow_ips)
        self.error_stream = ErrorStream(log)
        self.use_sendfile = cfg.sendfile is not False
        # The default hooks do nothing: skip the call on every request.
        self.pre_request = None if cfg.pre_request is default_hooks.pre_request else cfg.pre_request
        self.post_request = None if cfg.post_request is default_hooks.post_request else cfg.post_request
        self.limit_request_body = getattr(cfg, "limit_request_body", 0)
        self.min_body_rate = getattr(cfg, "min_body_rate", 0)
        # Whether each piece of body must be counted (either limit is on).
        self.body_limited = bool(self.limit_request_body or self.min_body_rate)
        self.ssl_context = ssl_context
        # The sync worker's scoreboard slot (SlotWriter): its one request's progress is written
        # there as it happens, since its loop is busy with it. None for the other classes,
        # whose loop reads each connection's ``progress``/``waiting`` (workers/base.py).
        self.mirror = None
        self.access_log = make_access_log(cfg, log)
        # Cooperative sockets (gevent, eventlet): how to wait until one can be written to, so
        # that files go out with os.sendfile on them too; None for kernel sockets.
        self.wait_writable = getattr(worker, "wait_write", None)
        self.refused_log = RateLimiter(REFUSED_LOG_LINES, REFUSED_LOG_WINDOW)
        self.scheme = "https" if ssl_context is not None else "http"
        self._builders = {}
        # the last address asked for and its builder: a worker's listeners hand the same
        # address object to each of their connections
        self._last_builder = (None, None)
        self.requests_served = 0

    def environ_builder(self, listener_addr):
        """One EnvironBuilder per listening address, made on first use."""
        last_addr, builder = self._last_builder
        if listener_addr is last_addr:
            return builder
        key = listener_addr if isinstance(listener_addr, (str, bytes)) else tuple(listener_addr[:2])
        builder = self._builders.get(key)
        if builder is None:
            builder = EnvironBuilder(self.cfg, self.error_stream, listener_addr,
                                     multithread=self.multithread, scheme=self.scheme,
                                     one_request=not self.keep_alive)
            self._builders[key] = builder
        self._last_builder = (listener_addr, builder)
        return builder

    # -- policies the loop applies -----------------------------------------------------

    def check_body(self, ex, size: int) -> None:
        """``size`` more body bytes arrived for ``ex``: refuse (413, 408) past a limit."""
        received = ex.body_received = ex.body_received + size
        limit = self.limit_request_body
        if limit and received > limit:
            raise PayloadTooLarge(f"body larger than limit_request_body ({limit})")
        if self.min_body_rate:
            now = time.monotonic()
            if ex.body_started is None:
                ex.body_started = now
            elapsed = now - ex.body_started
            if elapsed > BODY_RATE_GRACE_SECONDS and received < self.min_body_rate * elapsed:
                raise RequestTimeout(f"body arriving at {received / elapsed:.0f} B/s, below min_body_rate")

    def refusal(self, peer, exc, count: bool) -> str:
        """A request we refuse ourselves: log it (rate-limited, as gunicorn's "Invalid request
        from ip=..." line), count it when no request was under way (``count``: else the
        request's end counts it), and return the reason for the answer's body."""
        reason = str(exc)
        allowed, suppressed = self.refused_log.allow()
        if allowed:
            if suppressed:
                self.log.warning("%d more invalid requests were not logged (at most %d lines "
                                 "every %.0f s)", suppressed, REFUSED_LOG_LINES, REFUSED_LOG_WINDOW)
            self.log.warning("Invalid request from ip=%s: %s", peer_ip(peer), reason)
        worker = self.worker
        if count and worker is not None:
            counted = getattr(worker, "request_refused", None)
            if counted is not None:
                counted(exc.status)
        if len(reason) > REFUSED_REASON_CHARS:
            reason = reason[:REFUSED_REASON_CHARS] + "..."
        return reason

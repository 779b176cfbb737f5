"""statsd, with gunicorn's metric names (dashboards built for gunicorn keep working).

Per request, from the worker: ``gunicorn.request.duration`` (timer, ms), ``gunicorn.requests``
and ``gunicorn.request.status.NNN`` (counters), in ONE datagram (newline-separated lines, which
statsd, Telegraf and DogStatsD all accept). From the master: ``gunicorn.workers`` (gauge) and,
with ``enable_backlog_metric``, ``gunicorn.backlog`` (histogram). From any process: the log
counters ``gunicorn.log.critical|error|warning|exception``. ``statsd_prefix`` is prepended
(with a dot), ``dogstatsd_tags`` appended as ``|#tags``. Sends never block and errors are
ignored: metrics must never cost a request.
"""

import logging
import os
import socket
import time

from unicornd.logging import ERROR_LOGGER
from unicornd.config.metric_addresses import parse_statsd as parse


def _prefix(prefix: str) -> str:
    prefix = prefix or ""
    prefix = prefix.rstrip(".")
    return prefix + "." if prefix else ""


class Statsd:
    """A connectionless, non-blocking statsd sender; the socket is made in the process that
    sends first (so a worker never shares the master's)."""

    def __init__(self, host: str, prefix: str = "", tags: str = ""):
        self.family, self.address = parse(host)
        self.prefix = _prefix(prefix)
        self.suffix = ("|#" + tags).encode("ascii", "replace") if tags else b""
        self._sock = None
        self._pid = None
        self._retry_at = 0.0
        self._req_lines = (f"{self.prefix}gunicorn.request.duration:%s|ms",
                           f"{self.prefix}gunicorn.requests:1|c|@1.0",
                           f"{self.prefix}gunicorn.request.status.%d:1|c|@1.0")

    def _socket(self):
        """This process's socket, made on first use; None while it cannot be made (no such
        Unix socket yet, a name that does not resolve): tried again a second later."""
        now = time.monotonic()
        if self._pid == os.getpid() or now < self._retry_at:
            return self._sock
        self._pid, self._sock = os.getpid(), None
        try:
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
        except OSError:
            sock = None
        try:
            if sock is not None:
                sock.setblocking(False)
                if self.family == socket.AF_UNIX:
                    sock.connect(self.address)
                else:
                    # Resolved once: a DNS lookup per request would be a blocking call.
                    info = socket.getaddrinfo(*self.address, self.family, socket.SOCK_DGRAM)
                    sock.connect(info[0][4])
                self._sock = sock
        except OSError:
            sock.close()
            self._pid, self._retry_at = None, now + 1.0
        return self._sock

    def send_lines(self, lines) -> None:
        sock = self._sock if self._pid == os.getpid() else self._socket()
        if sock is None:
            return
        suffix = self.suffix
        if suffix:
            data = b"\n".join(line.encode("ascii", "replace") + suffix for line in lines)
        else:
            data = "\n".join(lines).encode("ascii", "replace")
        try:
            sock.send(data)
        except OSError:
            pass  # full buffer, nobody listening (ECONNREFUSED), ...: metrics are best effort

    def request(self, status: int, duration: float) -> None:
        """One request: the timer, the request counter and its status counter."""
        timer, count, by_status = self._req_lines
        lines = [timer % (duration * 1000.0), count]
        if status:
            lines.append(by_status % status)
        self.send_lines(lines)

    def refused(self, status: int) -> None:
        """A request refused before the app saw it: counted, with its status, not timed."""
        _, count, by_status = self._req_lines
        self.send_lines([count, by_status % status])

    def increment(self, name: str, value=1) -> None:
        self.send_lines([f"{self.prefix}{name}:{value}|c|@1.0"])

    def gauge(self, name: str, value) -> None:
        self.send_lines([f"{self.prefix}{name}:{value}|g"])

    def histogram(self, name: str, value) -> None:
        self.send_lines([f"{self.prefix}{name}:{value}|h"])

    def timer(self, name: str, value) -> None:
        self.send_lines([f"{self.prefix}{name}:{value}|ms"])

    def close(self) -> None:
        if self._sock is not None and self._pid == os.getpid():
            self._sock.close()
        self._sock = None
        self._pid = None


def from_config(cfg):
    """The statsd client the settings ask for, or None."""
    host = getattr(cfg, "statsd_host", None)
    if not host:
        return None
    return Statsd(host, cfg.statsd_prefix, cfg.dogstatsd_tags)


# -- log counters ------------------------------------------------------------------------------



class LogCounter(logging.Handler):
    """Counts the error log's records as gunicorn's statsd logger does: critical, error,
    warning, and ``exception`` for errors carrying a traceback (instead of ``error``)."""

    def __init__(self, client: Statsd):
        super().__init__(logging.WARNING)
        self.client = client

    def emit(self, record):
        try:
            level = record.levelno
            if level >= logging.CRITICAL:
                name = "critical"
            elif level >= logging.ERROR:
                name = "exception" if record.exc_info else "error"
            elif level >= logging.WARNING:
                name = "warning"
            else:
                return
            self.client.increment(f"gunicorn.log.{name}")
        except Exception:
            pass

    def close(self):
        # Closed when the error log is set up again (HUP): the client is not ours to close.
        super().close()


def ensure_log_counter(client, current=None, log=None):
    """Attach a LogCounter for ``client`` to the error log (again, if a log setup removed it);
    returns the handler in place (None if ``client`` is None). Idempotent, cheap."""
    log = log if log is not None else logging.getLogger(ERROR_LOGGER)
    if current is not None and (client is None or current.client is not client):
        log.removeHandler(current)
        current = None
    if client is None:
        return None
    if current is None:
        current = LogCounter(client)
    if current not in log.handlers:
        log.addHandler(current)
    return current

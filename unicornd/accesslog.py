"""The access log: gunicorn's ``access_log_format`` atoms, as text or as one JSON object a line.

The format is parsed once per worker, so a request computes only the atoms the format uses.
Lines are written to a buffer that is flushed when the worker is idle, when it fills up, or at
the latest a second after the oldest line, so logging costs no write(2) per request.
"""

import base64
import datetime
import io
import json
import logging
import os
import re
import sys
import time

from unicornd.logging import ACCESS_LOGGER, syslog_handler

_ATOM = re.compile(r"%\(([^)]+)\)s")
# Names for the JSON log, one per gunicorn atom.
JSON_NAMES = {
    "h": "remote_addr", "l": "ident", "u": "user", "t": "time", "r": "request", "m": "method",
    "U": "path", "q": "query", "H": "protocol", "s": "status", "B": "bytes", "b": "bytes",
    "f": "referer", "a": "user_agent", "T": "duration_s", "D": "duration_us", "M": "duration_ms",
    "L": "duration", "p": "pid",
}
FLUSH_SECONDS = 1.0
FLUSH_BYTES = 64 * 1024


# Atoms that are numbers: JSON gets them as numbers ("status": 200), "-" as null.
_INTEGER_ATOMS = frozenset("sBbTDM")


def _json_number(key, value):
    if key in _INTEGER_ATOMS:
        return int(value) if value.isdigit() else None
    if key == "L":
        return float(value)
    if key == "p":
        return int(value.strip("<>"))
    return value


def _user(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth[:6].lower() == "basic ":
        try:
            return base64.b64decode(auth[6:].strip()).decode("utf-8", "replace").split(":", 1)[0]
        except (ValueError, UnicodeError):
            return "-"
    return "-"


def _response_header(conn, name):
    head = conn.head
    if head is None:
        return "-"
    for key, value in head.headers:
        if key.lower() == name:
            return value
    return "-"


class AccessLog:
    """Formats and writes one line per request; built once per worker (or None: no access log)."""

    def __init__(self, cfg, stream=None, logger=None):
        self.format = cfg.access_log_format
        self.json = bool(getattr(cfg, "access_log_json", False))
        self.atoms = list(dict.fromkeys(_ATOM.findall(self.format)))
        self.stream = stream      # our own buffered stream (fast path), or None
        self.logger = logger      # the gunicorn.access logger when handlers are configured
        self._pending = 0
        self._since = None
        self.pid = f"<{os.getpid()}>"
        self.path = None

    def atom(self, key, conn, req, environ, duration):
        if key == "h":
            return environ.get("REMOTE_ADDR", "-")
        if key == "l":
            return "-"
        if key == "u":
            return _user(environ)
        if key == "t":
            return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(time.time() - duration))
        if key == "r":
            return f"{req.method} {req.target} {environ.get('SERVER_PROTOCOL', '-')}"
        if key == "m":
            return req.method
        if key == "U":
            return environ.get("PATH_INFO", "-")
        if key == "q":
            return environ.get("QUERY_STRING", "")
        if key == "H":
            return environ.get("SERVER_PROTOCOL", "-")
        if key == "s":
            return str(conn.status_code or "-")
        if key in ("B", "b"):
            # gunicorn writes the count for both, 0 included (a server-generated error too).
            return str(conn.sent)
        if key == "f":
            return environ.get("HTTP_REFERER", "-")
        if key == "a":
            return environ.get("HTTP_USER_AGENT", "-")
        if key == "T":
            return str(int(duration))
        if key == "D":
            return str(int(duration * 1_000_000))
        if key == "M":
            return str(int(duration * 1000))
        if key == "L":
            return "%.6f" % duration
        if key == "p":
            return self.pid
        if key.startswith("{") and len(key) > 3:
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return environ.get("HTTP_" + name.upper().replace("-", "_"), "-")
            if kind == "o":
                return _response_header(conn, name.lower())
            if kind == "e":
                return str(environ.get(name, "-"))
        return "-"

    def line(self, conn, req, environ, duration) -> str:
        values = {key: self.atom(key, conn, req, environ, duration) for key in self.atoms}
        if self.json:
            record = {}
            for key, value in values.items():
                if key.startswith("{") and len(key) > 3:
                    kind = {"i": "request_header", "o": "response_header", "e": "environ"}.get(key[-1], "atom")
                    record[f"{kind}.{key[1:-2].lower()}"] = value
                else:
                    record[JSON_NAMES.get(key, key)] = _json_number(key, value)
            return json.dumps(record, ensure_ascii=False)
        try:
            return self.format % values
        except (ValueError, TypeError, KeyError):
            return self.format

    def log(self, conn, req, environ, duration) -> None:
        try:
            text = self.line(conn, req, environ, duration)
        except Exception:
            logging.getLogger("gunicorn.error").exception("Could not format the access log line")
            return
        if self.logger is not None:
            self.logger.info(text)
        if self.stream is not None:
            try:
                self.stream.write(text + "\n")
            except OSError:
                return  # a full disk must not stop requests being served
            now = time.monotonic()
            if self._since is None:
                self._since = now
            self._pending += len(text) + 1
            if self._pending >= FLUSH_BYTES or now - self._since >= FLUSH_SECONDS:
                self.flush()

    def flush(self) -> None:
        if self.stream is not None and self._pending:
            self._pending = 0
            self._since = None
            try:
                self.stream.flush()
            except OSError:
                pass

    def reopen(self, path) -> None:
        self.flush()
        if self.stream is not None and path:
            old = self.stream
            try:
                self.stream = open(path, "a", buffering=FLUSH_BYTES, encoding="utf-8")
            except OSError as exc:
                # (e.g. a directory the workers' user cannot create files in): keep writing
                # to the old file rather than lose the worker.
                logging.getLogger("gunicorn.error").error("Cannot reopen the access log %r: %s",
                                                          path, exc.strerror)
                return
            old.close()


class _GunicornResponse:
    """What a gunicorn logger's access() reads of the response."""

    def __init__(self, conn):
        head = conn.head
        self.status_code = conn.status_code
        self.status = head.status if head is not None and conn.error_status is None else str(self.status_code)
        self.headers = list(head.headers) if head is not None else []
        self.sent = conn.sent
        self.response_length = head.content_length if head is not None else None


class _GunicornRequest:
    """What a gunicorn logger's access() reads of the request."""

    def __init__(self, req):
        self.method = req.method
        self.uri = req.target
        self.path = req.path
        self.query = req.query
        self.fragment = req.fragment
        self.version = req.version
        self.headers = req.headers


class LoggerClassAccess:
    """Access logging through a ``logger_class`` object's ``access(resp, req, environ, request_time)``."""

    path = None

    def __init__(self, logger):
        self.logger = logger

    def log(self, conn, req, environ, duration) -> None:
        try:
            self.logger.access(_GunicornResponse(conn), _GunicornRequest(req), environ,
                               datetime.timedelta(seconds=duration))
        except Exception:
            logging.getLogger("gunicorn.error").exception("logger_class access() failed")

    def flush(self) -> None:
        pass

    def reopen(self, path) -> None:
        pass  # the logger's own reopen_files() runs on USR1 (unicornd.logging.reopen_log_files)


def make_access_log(cfg, log=None):
    """The worker's AccessLog, or None when there is nothing to log to (the fast path)."""
    if log is not None and not isinstance(log, logging.Logger) and callable(getattr(log, "access", None)):
        return LoggerClassAccess(log)
    to_syslog = cfg.syslog and not cfg.disable_redirect_access_to_syslog
    logger = logging.getLogger(ACCESS_LOGGER)
    configured = bool(logger.handlers)  # a logconfig gave it handlers of its own
    if not cfg.accesslog and not to_syslog and not configured:
        return None
    stream = None
    if cfg.accesslog == "-":
        stream = io.TextIOWrapper(open(os.dup(sys.stdout.fileno()), "wb", buffering=FLUSH_BYTES),
                                  encoding="utf-8", write_through=False)
    elif cfg.accesslog:
        stream = open(cfg.accesslog, "a", buffering=FLUSH_BYTES, encoding="utf-8")
    if to_syslog and not any(getattr(h, "unicornd_syslog", False) for h in logger.handlers):
        handler = syslog_handler(cfg, ACCESS_LOGGER)
        handler.unicornd_syslog = True
        logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    access = AccessLog(cfg, stream, logger if logger.handlers else None)
    if cfg.accesslog not in (None, "-"):
        access.path = cfg.accesslog
    return access

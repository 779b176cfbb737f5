"""The error log (and the plumbing the access log shares), formatted as gunicorn's.

The loggers keep gunicorn's names, ``gunicorn.error`` and ``gunicorn.access``: log config files
written for gunicorn name them, and many apps hand their own log records to
``logging.getLogger("gunicorn.error")``. Both keep working unchanged.
"""

import configparser
import json
import logging
import logging.config
import logging.handlers
import os
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

ERROR_LOGGER = "gunicorn.error"
ACCESS_LOGGER = "gunicorn.access"
_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S %z"
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


class LogConfigError(Exception):
    """A log setting could not be applied; the message names the setting."""


def _is_stdio(target) -> bool:
    return target in (None, "", "-")


def _reset(log: logging.Logger) -> None:
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def syslog_handler(cfg, name: str) -> logging.Handler:
    """A SysLogHandler for ``syslog_addr`` (udp://, tcp://, unix://PATH[#dgram|#stream])."""
    url = urlsplit(cfg.syslog_addr)
    if url.scheme == "unix":
        address = url.path
        socktype = socket.SOCK_STREAM if url.fragment == "stream" else socket.SOCK_DGRAM
    elif url.scheme in ("udp", "tcp"):
        address = (url.hostname or "localhost", url.port or 514)
        socktype = socket.SOCK_DGRAM if url.scheme == "udp" else socket.SOCK_STREAM
    else:
        raise LogConfigError(f"Invalid value for syslog_addr: {cfg.syslog_addr!r}: expected "
                             "udp://HOST:PORT, tcp://HOST:PORT or unix://PATH")
    facility = logging.handlers.SysLogHandler.facility_names.get(cfg.syslog_facility.lower())
    if facility is None:
        raise LogConfigError(f"Invalid value for syslog_facility: {cfg.syslog_facility!r}: expected "
                             f"one of {', '.join(sorted(logging.handlers.SysLogHandler.facility_names))}")
    try:
        handler = logging.handlers.SysLogHandler(address, facility, socktype)
    except OSError as exc:
        raise LogConfigError(f"Invalid value for syslog_addr: {cfg.syslog_addr!r}: {exc}") from None
    prefix = cfg.syslog_prefix or name
    handler.setFormatter(logging.Formatter(f"{prefix}[%(process)d]: [%(levelname)s] %(message)s"))
    return handler


def paste_logconfig(cfg):
    """The ``paste`` ini file when it configures logging (a ``[loggers]`` section) and no
    other log configuration is given: gunicorn then uses it as ``logconfig``."""
    paste = getattr(cfg, "paste", None)
    if not paste or cfg.logconfig or cfg.logconfig_dict or cfg.logconfig_json:
        return None
    path = paste.partition("#")[0]
    if path.startswith("config:"):
        path = path[len("config:"):]
    if not os.path.isabs(path):
        path = os.path.join(getattr(cfg, "chdir", None) or os.getcwd(), path)
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeError):
        return None  # the app loader reports a broken file
    return path if parser.has_section("loggers") else None


def _file_config(setting: str, path: str) -> None:
    if not os.path.exists(path):
        raise LogConfigError(f"Invalid value for {setting}: {path!r}: no such file")
    # As gunicorn: the file may use %(here)s and %(__file__)s (PasteDeploy ini files do).
    defaults = {"__file__": os.path.abspath(path), "here": os.path.dirname(os.path.abspath(path))}
    try:
        logging.config.fileConfig(path, defaults=defaults, disable_existing_loggers=False)
    except Exception as exc:  # fileConfig raises all sorts (KeyError, configparser errors)
        raise LogConfigError(f"Invalid value for {setting}: {path!r}: "
                             f"{type(exc).__name__}: {exc}") from None


def _apply_logconfig(cfg) -> None:
    """gunicorn's three ways of handing logging a configuration of one's own (four, with
    a ``paste`` ini file that has a ``[loggers]`` section)."""
    if cfg.logconfig_dict:
        try:
            logging.config.dictConfig(dict(cfg.logconfig_dict, disable_existing_loggers=False)
                                      if "disable_existing_loggers" not in cfg.logconfig_dict
                                      else cfg.logconfig_dict)
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            raise LogConfigError(f"Invalid value for logconfig_dict: {exc}") from None
    elif cfg.logconfig_json:
        try:
            with open(cfg.logconfig_json) as f:
                config = json.load(f)
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
        except (OSError, ValueError, TypeError, AttributeError, ImportError) as exc:
            raise LogConfigError(f"Invalid value for logconfig_json: {cfg.logconfig_json!r}: {exc}") from None
    elif cfg.logconfig:
        _file_config("logconfig", cfg.logconfig)
    else:
        paste = paste_logconfig(cfg)
        if paste is not None:
            _file_config("paste", paste)


def setup_logging(cfg) -> logging.Logger:
    """Configure the error log from the settings; raises LogConfigError and then changes
    nothing it had not changed yet (a broken HUP leaves the working logs in place)."""
    handlers = []
    if _is_stdio(cfg.errorlog):
        handlers.append(logging.StreamHandler(sys.stderr))
    else:
        try:
            handlers.append(logging.FileHandler(cfg.errorlog))
        except OSError as exc:
            raise LogConfigError(f"Invalid value for errorlog: {cfg.errorlog!r}: {exc.strerror}") from None
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    if cfg.syslog:
        handlers.append(syslog_handler(cfg, ERROR_LOGGER))
    log = logging.getLogger(ERROR_LOGGER)
    previous = (list(log.handlers), log.level)
    for handler in log.handlers:
        log.removeHandler(handler)
    for handler in handlers:
        log.addHandler(handler)
    log.setLevel(LEVELS.get(str(cfg.loglevel).lower(), logging.INFO))
    log.propagate = False
    try:
        _apply_logconfig(cfg)
    except LogConfigError:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        for handler in previous[0]:
            log.addHandler(handler)
        log.setLevel(previous[1])
        raise
    for handler in previous[0]:
        if handler not in log.handlers:
            handler.close()
    _give_log_files(cfg, log)
    if cfg.capture_output and not _is_stdio(cfg.errorlog):
        # The app's print() and stray tracebacks go to the error log file, as in gunicorn.
        fd = handlers[0].stream.fileno()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    return log


def _log_file_owner(cfg):
    """(uid, gid) the log files must belong to so that workers running as another user
    (``user``/``group``) can open and reopen them; None when nothing needs changing."""
    if os.geteuid() != 0:
        return None
    uid = getattr(cfg, "user", None)
    gid = getattr(cfg, "group", None)
    if uid is None or gid is None or (uid, gid) == (os.geteuid(), os.getegid()):
        return None
    return uid, gid


def _create_owned(paths, owner) -> None:
    for path in paths:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.fchown(fd, *owner)
        finally:
            os.close(fd)


def _give_log_files(cfg, log: logging.Logger) -> None:
    """As gunicorn: the master (root) creates the log files and gives them to the workers'
    user, who could not create them in a root-owned directory, nor open a root-owned file.
    Remembered on the error logger, so that USR1 (reopen_log_files, in the master before the
    workers) creates and gives the new files a log rotation needs."""
    owner = _log_file_owner(cfg)
    paths = []
    if owner is not None:
        paths = [p for p in (cfg.errorlog, cfg.accesslog) if not _is_stdio(p)]
        try:
            _create_owned(paths, owner)
        except OSError as exc:
            raise LogConfigError(f"Cannot give the log file {exc.filename!r} to the workers' "
                                 f"user ({owner[0]}:{owner[1]}): {exc.strerror}") from None
    log.unicornd_owned_files = (paths, owner) if paths else None


def make_logger(cfg, log: logging.Logger):
    """The logger object the server talks to: the built-in one, or an instance of the
    configured ``logger_class`` (gunicorn's Logger interface: ``__init__(cfg)``, the level
    methods and ``access(resp, req, environ, request_time)``), which then receives every server
    message and every access log call."""
    spec = getattr(cfg, "logger_class", "gunicorn.glogging.Logger")
    if spec in (None, "gunicorn.glogging.Logger"):
        return log
    from unicornd.config.validators import import_object
    try:
        cls = import_object(spec) if isinstance(spec, str) else spec
        return cls(cfg)
    except Exception as exc:
        raise LogConfigError(f"Invalid value for logger_class: {spec!r}: {type(exc).__name__}: {exc}") from None


def setup_error_log(errorlog: str = "-", loglevel: str = "info") -> logging.Logger:
    """The error log before the settings are known (or valid): stderr or a file."""
    log = logging.getLogger(ERROR_LOGGER)
    log.propagate = False
    _reset(log)
    handler = logging.StreamHandler(sys.stderr) if _is_stdio(errorlog) else logging.FileHandler(errorlog)
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    log.addHandler(handler)
    log.setLevel(LEVELS.get(str(loglevel).lower(), logging.INFO))
    return log


def reopen_log_files(log: logging.Logger = None) -> None:
    """USR1 (logrotate moved the files away): open every log file again at its path."""
    if log is not None and not isinstance(log, logging.Logger):
        reopen = getattr(log, "reopen_files", None)  # a logger_class of one's own
        if callable(reopen):
            reopen()
        log = None
    loggers = [log or logging.getLogger(ERROR_LOGGER), logging.getLogger(ACCESS_LOGGER)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
            elif hasattr(handler, "reopen"):
                handler.reopen()
    owned = getattr(logging.getLogger(ERROR_LOGGER), "unicornd_owned_files", None)
    if owned is not None and os.geteuid() == 0:
        # The master, before it signals the workers: new files (after a rotation) are theirs.
        try:
            _create_owned(*owned)
        except OSError as exc:
            logging.getLogger(ERROR_LOGGER).error("Cannot give the log file %r to the workers' "
                                                  "user: %s", exc.filename, exc.strerror)


def error_log() -> logging.Logger:
    return logging.getLogger(ERROR_LOGGER)


class RateLimiter:
    """At most ``lines`` log lines per ``window`` seconds (one worker's), so that a flood of
    bad requests cannot fill the disk; counts what it held back, for the next line to say."""

    def __init__(self, lines: int, window: float, clock=time.monotonic):
        self.lines = lines
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()  # gthread's pool threads share it
        self._start = None
        self._count = 0
        self._suppressed = 0

    def allow(self):
        """(whether to log this one, how many were held back since the last one logged)."""
        with self._lock:
            now = self.clock()
            if self._start is None or now - self._start >= self.window:
                self._start, self._count = now, 0
            if self._count >= self.lines:
                self._suppressed += 1
                return False, 0
            self._count += 1
            suppressed, self._suppressed = self._suppressed, 0
            return True, suppressed


class ErrorStream:
    """``wsgi.errors``: what the app writes here lands in the error log's stream."""

    def __init__(self, log: logging.Logger):
        self._log = log

    def _streams(self):
        handlers = getattr(self._log, "handlers", None)
        if handlers is None:  # a logger_class of one's own: the built-in error log's streams
            handlers = logging.getLogger(ERROR_LOGGER).handlers
        for handler in handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None:
                yield stream

    def write(self, data):
        for stream in self._streams():
            stream.write(data)
            stream.flush()

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        for stream in self._streams():
            stream.flush()

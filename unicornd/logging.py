"""The error log, formatted as gunicorn's so existing log parsers keep working.

Access logs, syslog, statsd and log config files come later (they are refused by the config
until then); this module grows with them.
"""

import logging
import sys

ERROR_LOGGER = "unicornd.error"
_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S %z"
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


def setup_error_log(errorlog: str = "-", loglevel: str = "info") -> logging.Logger:
    """Point the error log at stderr (``-``) or a file, at the given level; idempotent."""
    log = logging.getLogger(ERROR_LOGGER)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    if errorlog in (None, "-", ""):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(errorlog)
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    log.addHandler(handler)
    log.setLevel(LEVELS.get(str(loglevel).lower(), logging.INFO))
    return log


def reopen_log_files(log: logging.Logger) -> None:
    """USR1 (logrotate moved the file away): open the files again at their paths."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()


def error_log() -> logging.Logger:
    return logging.getLogger(ERROR_LOGGER)


class ErrorStream:
    """``wsgi.errors``: what the app writes here lands in the error log's stream."""

    def __init__(self, log: logging.Logger):
        self._log = log

    def _streams(self):
        for handler in self._log.handlers:
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

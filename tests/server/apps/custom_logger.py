"""A logger class of one's own, in the shape of gunicorn's Logger (for --logger-class tests)."""

import os


class FileLogger:
    def __init__(self, cfg):
        self.path = os.environ["CUSTOM_LOG"]

    def _write(self, level, msg, *args):
        with open(self.path, "a") as f:
            f.write(f"{level} {msg % args if args else msg}\n")

    def critical(self, msg, *args, **kwargs):
        self._write("CRITICAL", msg, *args)

    def error(self, msg, *args, **kwargs):
        self._write("ERROR", msg, *args)

    def warning(self, msg, *args, **kwargs):
        self._write("WARNING", msg, *args)

    def info(self, msg, *args, **kwargs):
        self._write("INFO", msg, *args)

    def debug(self, msg, *args, **kwargs):
        pass

    def exception(self, msg, *args, **kwargs):
        self._write("EXCEPTION", msg, *args)

    def access(self, resp, req, environ, request_time):
        with open(self.path, "a") as f:
            f.write(f"ACCESS {resp.status} {resp.status_code} {req.method} {req.uri} {req.path} "
                    f"{req.version} {resp.sent} {request_time.total_seconds():.6f}\n")


class NotALogger:
    def __init__(self, cfg):
        pass

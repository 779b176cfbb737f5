"""``reload``: restart a worker when a source file it loaded changes (development only).

A daemon thread in each worker watches every Python source file in ``sys.modules`` (re-read
as the app imports more) and the files of ``reload_extra_files`` (glob patterns expanded
when the worker starts). On a change it calls back once; the worker logs the file and stops
gracefully, and the master starts a fresh worker, which imports the new code.

Two engines: inotify (Linux, through libc with ctypes, no extra package) watches the
directories of those files, so editors that save by writing a new file and renaming it are
seen too; polling compares modification times every half second and works everywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import select
import signal
import struct
import sys
import threading
import time
import traceback

POLL_INTERVAL = 0.5


def module_files() -> set[str]:
    """The source files of the modules imported so far (``.py``, not their ``.pyc``)."""
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        if path.endswith((".pyc", ".pyo")):
            path = path[:-1]
        files.add(os.path.abspath(path))
    return files


def expand(patterns) -> set[str]:
    """``reload_extra_files``: plain paths as they are (they may not exist yet), globs expanded."""
    files = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            files.update(os.path.abspath(p) for p in glob.glob(pattern, recursive=True))
        else:
            files.add(os.path.abspath(pattern))
    return files


class _Watcher(threading.Thread):
    def __init__(self, extra_files=(), callback=None):
        super().__init__(name="unicornd-reloader", daemon=True)
        self.extra = set(expand(extra_files))
        self.callback = callback
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        # Files are found after the app imported them; one edited between the worker's start
        # and its discovery here is a change too (its mtime is later than this).
        self.started_ns = time.time_ns()
        self.seen: set[str] = set()

    def add_file(self, path: str) -> None:
        with self._lock:
            self.extra.add(os.path.abspath(path))

    def files(self) -> set[str]:
        with self._lock:
            return module_files() | self.extra

    def changed_since_start(self, files) -> str | None:
        """Record files seen for the first time; the first one edited since the start, if any."""
        for path in files - self.seen:
            self.seen.add(path)
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                continue
            if self.started_ns < mtime <= time.time_ns():
                return path
        return None

    def changed(self, path: str) -> None:
        if not self.stopped.is_set():
            self.stopped.set()
            self.callback(path)

    def stop(self) -> None:
        self.stopped.set()


class PollingReloader(_Watcher):
    engine = "poll"

    def run(self) -> None:
        mtimes: dict[str, float | None] = {}
        while not self.stopped.is_set():
            files = self.files()
            path = self.changed_since_start(files)
            if path is not None:
                self.changed(path)
                return
            for path in files:
                try:
                    mtime = os.stat(path).st_mtime_ns
                except OSError:
                    mtime = None
                if path not in mtimes:
                    mtimes[path] = mtime
                elif mtimes[path] != mtime:
                    self.changed(path)
                    return
            self.stopped.wait(POLL_INTERVAL)


# inotify(7), through the C library.
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x80, 0x100, 0x200
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


def _libc():
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True)
    for fn in ("inotify_init1", "inotify_add_watch"):
        if not hasattr(libc, fn):
            raise OSError(f"no {fn} in the C library")
    libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    return libc


def inotify_available() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        _libc()
    except (OSError, AttributeError):
        return False
    return True


class InotifyReloader(_Watcher):
    engine = "inotify"

    def __init__(self, extra_files=(), callback=None):
        super().__init__(extra_files, callback)
        self.libc = _libc()
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.dirs: dict[int, str] = {}  # watch descriptor -> directory

    def _watch(self, files) -> None:
        known = set(self.dirs.values())
        for directory in {os.path.dirname(f) for f in files} - known:
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(directory), _MASK)
            if wd >= 0:
                self.dirs[wd] = directory

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                files = self.files()
                self._watch(files)  # before the check: nothing is missed in between
                path = self.changed_since_start(files)
                if path is not None:
                    self.changed(path)
                    return
                ready, _, _ = select.select([self.fd], [], [], POLL_INTERVAL)
                if not ready:
                    continue
                try:
                    data = os.read(self.fd, 64 * 1024)
                except BlockingIOError:
                    continue
                offset = 0
                while offset + _EVENT.size <= len(data):
                    wd, _mask, _cookie, size = _EVENT.unpack_from(data, offset)
                    raw = data[offset + _EVENT.size: offset + _EVENT.size + size]
                    offset += _EVENT.size + size
                    name = os.fsdecode(raw.rstrip(b"\0"))
                    directory = self.dirs.get(wd)
                    if directory is None or not name:
                        continue
                    path = os.path.join(directory, name)
                    if path in files:
                        self.changed(path)
                        return
        finally:
            os.close(self.fd)


def make_reloader(engine: str, extra_files=(), callback=None) -> _Watcher:
    if engine == "inotify" or (engine == "auto" and inotify_available()):
        return InotifyReloader(extra_files, callback)
    return PollingReloader(extra_files, callback)


def start_for_worker(worker) -> _Watcher:
    """Start watching in a worker; a change logs the file and stops the worker gracefully."""

    def changed(path):
        worker.log.info("Worker reloading: %s modified", path)
        if path.endswith(".py"):
            # A .pyc is checked against its source's mtime in whole seconds and its size: an
            # edit within the same second that keeps the size would be missed by the next worker.
            try:
                os.unlink(importlib.util.cache_from_source(path))
            except (OSError, ValueError, NotImplementedError):
                pass
        # The graceful stop the master would ask for: the handler runs in the main thread and
        # the signal wakes the worker's loop; the master replaces a worker that exits.
        os.kill(os.getpid(), signal.SIGTERM)

    reloader = make_reloader(worker.cfg.reload_engine, worker.cfg.reload_extra_files, changed)
    reloader.start()
    worker.log.debug("Watching for code changes (%s)", reloader.engine)
    return reloader


def broken_app(reloader, exc: BaseException):
    """When the app fails to load under ``reload``: serve the error, watch the files involved."""
    if isinstance(exc, SyntaxError) and exc.filename:
        reloader.add_file(exc.filename)
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if os.path.isfile(filename):
            reloader.add_file(filename)
    text = "".join(traceback.format_exception(exc)).encode("utf-8", "replace")
    body = b"The application failed to load (unicornd --reload); fix it and save:\n\n" + text

    def app(environ, start_response):
        start_response("500 Internal Server Error", [
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app

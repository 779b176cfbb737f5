"""``spew``: print every line executed in a worker, as ``[pid] file:line: source``, to stderr.

Installed with ``sys.settrace`` (and ``threading.settrace`` for threads started later, such as
gthread's pool) when the worker starts serving. For debugging only: it is very slow.
"""

from __future__ import annotations

import linecache
import os
import sys
import threading


def make_tracer(out=None):
    out = out or sys.stderr
    pid = os.getpid()

    def tracer(frame, event, arg):
        if event == "line":
            filename = frame.f_code.co_filename
            lineno = frame.f_lineno
            line = linecache.getline(filename, lineno, frame.f_globals).rstrip()
            try:
                out.write(f"[{pid}] {filename}:{lineno}: {line}\n")
            except (OSError, ValueError):
                pass
        return tracer

    return tracer


def install(out=None) -> None:
    tracer = make_tracer(out)
    threading.settrace(tracer)
    sys.settrace(tracer)

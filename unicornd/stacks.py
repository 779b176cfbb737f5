"""Stacks of every thread (and greenlet, where a worker class has them), for the error log."""

import sys
import threading
import traceback


def format_all_stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f'Thread "{names.get(ident, ident)}" (most recent call last):\n'
                     + "".join(traceback.format_stack(frame)).rstrip())
    return "\n".join(parts)

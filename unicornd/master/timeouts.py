"""The timeout decision: is a booted worker hung? One pure function, no I/O.

The master calls it once per tick for every serving worker with what the worker last wrote to
its scoreboard slot (a ``SlotView``) and the time; it answers with the reason to kill (the tail
of the ``WORKER TIMEOUT (pid N) ...`` log line) or None. Tests call it with plain values.
"""

from unicornd.master.scoreboard import BUSY


def hung_reason(view, now: float, timeout: float, *, written_since: float = 0.0):
    """Why the worker behind ``view`` should be killed, or None while it is alive.

    ``written_since``: when the master forked this worker. A heartbeat older than that was not
    written by this worker (a slot it never wrote to yet, or a cleared one): no verdict on it.
    """
    if not timeout or timeout <= 0:
        return None
    heartbeat = view.heartbeat
    if heartbeat < written_since:
        return None
    if view.state == BUSY and view.request_start >= written_since \
            and now - view.request_start > timeout:
        return f"{view.method} {view.path} after {now - view.request_start:.1f} s"
    if now - heartbeat > timeout:
        return f"no heartbeat for {now - heartbeat:.1f} s"
    return None

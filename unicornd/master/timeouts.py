"""The timeout decision: is a booted worker hung? Pure functions, no I/O.

The master calls ``hung_reason`` once per tick for every serving worker with what the worker
last wrote to its scoreboard slot (a ``SlotView``) and the time; it answers with the reason to
kill (the tail of the ``WORKER TIMEOUT (pid N) ...`` log line) or None. Tests call it with
plain values.

What "hung" means (docs/workers.md, "Liveness and timeouts"):

- the worker's loop is silent for ``timeout`` seconds: its heartbeat stopped (gthread: the main
  thread; gevent/eventlet: the hub has not run). The sync worker's loop *is* its one request
  (the slot's mode is SERIAL): while it is busy, only the request is judged;
- or a request made no progress for ``timeout`` seconds while it was not waiting on its
  client. Progress is starting, or reading from or writing to the client: a stream that writes
  is alive however long it lasts. A request waiting on its client (a slow upload, a reader that
  does not read) is bounded by the socket timeouts, not by this. A request that asked for an
  upgrade (a websocket) hands its socket to the app, whose library owns its timeouts: it is
  never a candidate.

One stalled request is the whole worker for sync, so the worker is killed. A gthread thread
cannot be stopped alone: the worker logs it (``request_stalled``) and is replaced only when
every thread is stalled. A gevent/eventlet worker stops the stalled request's greenlet itself
and serves on; the master steps in only when the hub is silent (or, in the unlikely case,
when all ``worker_connections`` are stalled).
"""

from unicornd.master.scoreboard import BUSY, SERIAL


def request_stalled(progress: float, now: float, timeout: float) -> bool:
    """A candidate request (not waiting on its client, not taken over) whose last progress
    was at ``progress`` is stalled at ``now``. (Used by the workers on their own requests.)"""
    return bool(timeout) and timeout > 0 and now - progress > timeout


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
    busy = view.state == BUSY and view.request_start >= written_since
    if not (busy and view.mode & SERIAL) and now - heartbeat > timeout:
        return f"no heartbeat for {now - heartbeat:.1f} s"
    if not busy:
        return None
    capacity = max(1, view.capacity)
    # Every request the worker can run at once is a candidate, and even the one that moved
    # last has not moved for `timeout`: nothing is left to serve.
    if view.candidates >= capacity and request_stalled(view.recent, now, timeout):
        reason = (f"{view.method} {view.path} after {now - view.request_start:.1f} s, "
                  f"no progress for {now - view.progress:.1f} s")
        if capacity > 1:
            reason += f" (all {capacity} of its requests stalled)"
        return reason
    return None

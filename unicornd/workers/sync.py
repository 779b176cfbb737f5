"""The sync worker: one request at a time; one request per connection, then close.

One request per connection, as gunicorn's sync worker: a sync worker that waited on an idle
keep-alive client could serve nobody else meanwhile.

The app slot is never lent to a slow client. A connection whose request head has not fully
arrived (an idle browser preconnect, a slowloris client) waits in this worker's poll set, not
in a blocking read; it is served once its head is complete, or answered 408 when
``header_timeout`` runs out. Likewise, closing after a response while the client may still be
sending (an unread body, pipelined bytes) must not reset the connection (RFC 9112 §9.6), nor
park the worker until the client closes (gunicorn 27 waits up to 2 s per connection for that):
such a socket is half-closed and drained from the poll set between other connections.
"""

import select
import time

from unicornd.closing import begin_linger, drain, fin_with_response, release_taken_over
from unicornd.connection import LINGER, Connection
from unicornd.workers.base import Worker

IDLE_WAKE_SECONDS = 1.0


class SyncWorker(Worker):
    keep_alive = False
    serial = True  # its loop is the request: timed by the request's progress (timeouts.py)

    def run(self) -> None:
        listeners = self.listeners
        poller = select.poll()
        for listener in listeners:
            listener.sock.setblocking(False)
            poller.register(listener.fileno(), select.POLLIN)
        poller.register(self._wakeup_r, select.POLLIN)
        self._poller = poller
        self._lingering = {}  # fd -> (socket, deadline)
        self._reading = {}    # fd -> (Connection whose head is incomplete, deadline)
        ctx = self.ctx
        max_reading = max(1, self.cfg.worker_connections)
        close_follows = fin_with_response(ctx)

        while self.alive:
            for listener in listeners:
                lsock = listener.sock
                address = listener.address
                lfd = listener.fileno()
                while self.alive and len(self._reading) < max_reading:
                    accepted = self.accept_from(lsock, lfd)
                    if accepted is None:
                        break
                    conn = Connection(ctx, accepted[0], accepted[1], address, close_follows)
                    if conn.read_head_nonblocking():
                        self._serve(conn)
                    else:
                        fd = conn.sock.fileno()
                        self._reading[fd] = (conn, self.head_deadline(time.monotonic()))
                        poller.register(fd, select.POLLIN)
                    if self._lingering or self._reading:
                        self._wait(0.0)  # busy: tend the connections set aside, between others
                    if len(listeners) > 1:
                        break  # take turns between listeners
            if not self.tick():
                break
            self._wait(IDLE_WAKE_SECONDS)
        for fd in list(self._reading):
            self._drop_reading(fd).sock.close()
        self._close_lingering(force=True)

    def _serve(self, conn) -> None:
        try:
            linger = conn.serve() == LINGER
        except Exception:
            self.log.exception("Error handling a connection from %s", conn.peer)
            linger = False
        if conn.taken_over:
            release_taken_over(conn.sock)
        if linger:
            self._close(conn.sock, True)
        else:
            conn.sock.close()

    def _close(self, sock, linger: bool) -> None:
        if not linger:
            sock.close()
            return
        deadline = begin_linger(sock)
        if not deadline:
            sock.close()
            return
        fd = sock.fileno()
        self._lingering[fd] = (sock, deadline)
        self._poller.register(fd, select.POLLIN)

    def _wait(self, timeout: float) -> None:
        if self._lingering or self._reading:
            now = time.monotonic()
            soonest = min([deadline for _, deadline in self._lingering.values()]
                          + [deadline for _, deadline in self._reading.values()])
            timeout = max(0.0, min(timeout, soonest - now))
        try:
            events = self._poller.poll(timeout * 1000)
        except InterruptedError:
            return
        for fd, _ in events:
            if fd == self._wakeup_r:
                self.drain_wakeup()
            elif fd in self._reading:
                conn = self._reading[fd][0]
                if conn.read_head_nonblocking():
                    self._drop_reading(fd)
                    self._serve(conn)
            elif fd in self._lingering:
                if drain(self._lingering[fd][0]):
                    self._drop_lingering(fd)
        if self._reading:
            now = time.monotonic()
            for fd, (conn, deadline) in list(self._reading.items()):
                if deadline <= now:
                    self._drop_reading(fd)
                    self._close(conn.sock, conn.time_out_head() == LINGER)
        if self._lingering:
            self._close_lingering(force=False)

    def _drop_reading(self, fd):
        conn, _ = self._reading.pop(fd)
        self._poller.unregister(fd)
        return conn

    def _close_lingering(self, force: bool) -> None:
        now = time.monotonic()
        for fd, (_, deadline) in list(self._lingering.items()):
            if force or deadline <= now:
                self._drop_lingering(fd)

    def _drop_lingering(self, fd) -> None:
        sock, _ = self._lingering.pop(fd)
        self._poller.unregister(fd)
        sock.close()

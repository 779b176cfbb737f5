"""The sync worker: accept one connection, serve one request, close, accept the next.

One request per connection, as gunicorn's sync worker: a sync worker that waited on an idle
keep-alive client could serve nobody else meanwhile.

Closing after a response while the client may still be sending (an unread body, pipelined
bytes) must not reset the connection (RFC 9112 §9.6), nor park the worker until the client
closes (gunicorn 27 waits up to 2 s per connection for that). So such a socket is half-closed
and set aside; the accept loop drains and closes it when it becomes readable or its grace
ends, between other connections.
"""

import errno
import os
import select
import time

from unicornd.connection import LINGER, Connection, drain, lingering_shutdown
from unicornd.workers.base import Worker

LINGER_SECONDS = 2.0
IDLE_WAKE_SECONDS = 1.0
_ACCEPT_BACKOFF_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class SyncWorker(Worker):
    keep_alive = False

    def run(self) -> None:
        listeners = self.listeners
        poller = select.poll()
        for listener in listeners:
            listener.sock.setblocking(False)
            poller.register(listener.fileno(), select.POLLIN)
        poller.register(self._wakeup_r, select.POLLIN)
        self._poller = poller
        self._lingering = {}  # fd -> (socket, deadline)
        ctx = self.ctx
        backoff_logged = False

        while self.alive:
            for listener in listeners:
                accept = listener.sock.accept
                address = listener.address
                while self.alive:
                    try:
                        sock, peer = accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        if exc.errno in _ACCEPT_BACKOFF_ERRNOS:
                            if not backoff_logged:
                                backoff_logged = True
                                self.log.error("accept() failed: %s; backing off", exc)
                            time.sleep(0.1)
                        break
                    self._serve(ctx, sock, peer, address)
                    if self._lingering:
                        self._wait(0.0)  # busy: tend set-aside sockets between connections
                    if len(listeners) > 1:
                        break  # take turns between listeners
            if not self.master_alive():
                self.log.info("Parent changed, shutting down: %s", self)
                return
            self.notify()
            self._wait(IDLE_WAKE_SECONDS)
        self._close_lingering(force=True)

    def _serve(self, ctx, sock, peer, address) -> None:
        conn = Connection(ctx, sock, peer, address)
        try:
            linger = conn.serve() == LINGER
        except Exception:
            self.log.exception("Error handling a connection from %s", peer)
            linger = False
        sock = conn.sock  # the TLS socket, when serve() wrapped it
        if not linger:
            sock.close()
            return
        lingering_shutdown(sock)
        if drain(sock):
            sock.close()
            return
        fd = sock.fileno()
        self._lingering[fd] = (sock, time.monotonic() + LINGER_SECONDS)
        self._poller.register(fd, select.POLLIN)

    def _wait(self, timeout: float) -> None:
        if self._lingering:
            now = time.monotonic()
            soonest = min(deadline for _, deadline in self._lingering.values())
            timeout = max(0.0, min(timeout, soonest - now))
        try:
            events = self._poller.poll(timeout * 1000)
        except InterruptedError:
            return
        for fd, _ in events:
            if fd == self._wakeup_r:
                try:
                    os.read(fd, 4096)
                except OSError:
                    pass
            elif fd in self._lingering:
                if drain(self._lingering[fd][0]):
                    self._drop_lingering(fd)
        if self._lingering:
            self._close_lingering(force=False)

    def _close_lingering(self, force: bool) -> None:
        now = time.monotonic()
        for fd, (_, deadline) in list(self._lingering.items()):
            if force or deadline <= now:
                self._drop_lingering(fd)

    def _drop_lingering(self, fd) -> None:
        sock, _ = self._lingering.pop(fd)
        self._poller.unregister(fd)
        sock.close()

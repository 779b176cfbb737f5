"""The gevent and eventlet workers: one greenlet per connection, one implementation.

The standard library is monkey-patched (``greenpatch``), so ``Connection.serve()`` runs on a
blocking-style socket that yields to the hub whenever it would block. A library adapter (a
subclass: ``ggevent.GeventWorker``, ``geventlet.EventletWorker``) supplies only spawn, kill,
sleep, wait-for-readable, a semaphore, its socket class and a count of the hub's polls.

- One acceptor greenlet per listener takes a slot of a ``worker_connections`` semaphore before
  each ``accept()``: at the cap it stops accepting, and further connections wait in the
  kernel's backlog (or go to another worker). It yields after every ACCEPT_BATCH accepts
  in a row, so neither a burst of new connections nor the ones being served starve.
- A connection's greenlet runs ``serve(park_when_idle=True)``; between requests it waits for
  the next one up to ``keepalive`` seconds (a new connection: ``max(keepalive, 5)``). Turns
  are fair: a request that never waited sends its connection back through the hub's poll
  (and pipelined requests yield between them); one that waited serves the next at once.
- The main greenlet is the heartbeat: it reports to the master every second and wakes at once
  on a signal (the base worker's wakeup pipe).
- Graceful stop (``alive`` False): acceptors are killed, requests in progress finish (up to
  ``graceful_timeout``; a request that starts meanwhile is answered with ``Connection:
  close``), an idle connection closes once it has been idle for a second (its client may be
  sending its next request right now), then ``run()`` returns.
"""

import gc
import socket

from greenlet import getcurrent
import time
import traceback

from unicornd.closing import RECV_SIZE, STOP_GRACE_SECONDS, begin_linger, release_taken_over
from unicornd.connection import IDLE, LINGER, Connection
from unicornd.stacks import format_all_stacks
from unicornd.workers import greenpatch
from unicornd.workers.base import ConcurrentRequests, Worker

TICK_SECONDS = 1.0
# Connections accepted in a row before the acceptor yields to the ones being served: one at a
# time starves a backlog (eventlet runs a yielded greenlet once per hub cycle), too many
# starves the served.
ACCEPT_BATCH = 64


def format_greenlet_stacks() -> str:
    """Where every suspended greenlet is (the running one is in the thread stacks)."""
    try:
        from greenlet import greenlet
    except ImportError:
        return ""
    parts = []
    for obj in gc.get_objects():
        if isinstance(obj, greenlet):
            frame = obj.gr_frame
            if frame is None:
                continue
            parts.append(f"Greenlet {obj!r} (most recent call last):\n"
                         + "".join(traceback.format_stack(frame)).rstrip())
    return "\n".join(parts)


class _Readable:
    __slots__ = ("wait_read", "fd")

    def __init__(self, wait_read, fd):
        self.wait_read = wait_read
        self.fd = fd

    def wait(self, timeout) -> bool:
        return self.wait_read(self.fd, timeout)

    def close(self) -> None:
        pass


class GreenletWorker(ConcurrentRequests, Worker):
    """The shared implementation; subclasses set ``library`` and the adapter methods."""

    keep_alive = True
    multithread = False
    kernel_timeouts = False  # a cooperative socket times out itself (io_timeout)
    library = None

    # -- the adapter (a subclass implements these) --------------------------------------

    def spawn(self, fn, *args):
        raise NotImplementedError

    def kill(self, green) -> None:
        raise NotImplementedError

    def sleep(self, seconds) -> None:
        raise NotImplementedError

    def wait_read(self, fd, timeout) -> bool:
        """Wait until fd is readable (True) or timeout seconds pass (False)."""
        raise NotImplementedError

    def readable(self, fd):
        """A waiter for one connection's fd, used for each of its waits: ``wait(timeout)``
        (True once readable, False after timeout seconds) and ``close()``, called before the
        socket is closed. A library whose waits cost a new watcher each may keep one."""
        return _Readable(self.wait_read, fd)

    def wait_write(self, fd, timeout) -> bool:
        """Wait until fd is writable (True) or timeout seconds pass (False; None: no limit).
        Its presence tells the connection the sockets are cooperative (sendfile on them)."""
        raise NotImplementedError

    def semaphore(self, n):
        raise NotImplementedError

    def green_socket(self, sock):
        """A cooperative socket on a duplicate of a listener's fd."""
        raise NotImplementedError

    def hub_turns(self) -> int:
        """How many times the hub has polled so far: unchanged means the running greenlet
        has not waited since it last looked."""
        raise NotImplementedError

    def settle_taken_over(self, sock) -> None:
        """After the shared release of a socket the app took over (connection.release_taken_
        over: a bounded wait for the peer's close, then shutdown), before it is closed: what
        this library needs for a reader of the app still waiting on it."""

    def after_fork(self) -> None:
        pass

    # -----------------------------------------------------------------------------------

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        # A connection's socket operations (reading a request, sending a response) time out
        # after this; waiting for the app (long-poll, streaming) does not count. header_timeout,
        # as the kernel timeouts of the sync and gthread workers: a stalled body gets its 408
        # then. With neither header_timeout nor timeout, none. A socket the app takes over (a
        # websocket) carries none either (ClientSocket.hand_over): its library owns its timeouts.
        if cfg.header_timeout:
            self.io_timeout = float(cfg.header_timeout)
        else:
            self.io_timeout = float(cfg.timeout) if cfg.timeout and cfg.timeout > 0 else None
        self.nconns = 0
        self._serving = {}  # Connection -> its greenlet, while it is served
        self._acceptors = []

    def init_process(self) -> None:
        if greenpatch.PATCHED is None:
            # The CLI's early peek did not see this class (e.g. a config file computes it):
            # patch now, in the worker; modules the master imported keep unpatched objects.
            greenpatch.patch(self.library)
            self.log.warning("%s monkey-patching happened in the worker, after the config and "
                             "app were imported: give the worker class on the command line, in "
                             "UNICORND_CMD_ARGS or as worker_class = '%s' in the config file",
                             self.library, self.library)
        super().init_process()

    def request_finished(self, req, conn=None, ex=None) -> None:
        super().request_finished(req, conn, ex)
        if conn is not None and conn.pipelined:
            # Pipelined requests are served back to back without waiting on the socket: a
            # client that keeps the pipe full would hold the worker. Everyone else first.
            self.sleep(0)

    def serving_connections(self) -> list:
        return list(self._serving.items())

    def stalled(self, entry, now: float) -> None:
        """A request made no progress for ``timeout``: its greenlet alone is stopped, with
        its request and stack in the log; the worker and its other connections serve on."""
        green = entry.owner
        if not entry.ex.reported:
            entry.ex.reported = True
            req = entry.req
            frame = getattr(green, "gr_frame", None)
            where = "".join(traceback.format_stack(frame)).rstrip() if frame is not None else "?"
            self.log.critical(
                "WORKER TIMEOUT (pid %s) %s %s after %.1f s, no progress for %.1f s: its %s is "
                "stopped, the worker serves on. Its stack:\n%s", self.pid, req.method, req.path,
                now - entry.started, now - entry.conn.io.progress, "greenlet", where)
        self.kill(green)

    def stacks(self) -> str:
        """Thread stacks and every suspended greenlet's, for the timeout forensics."""
        return f"{format_all_stacks()}\n{format_greenlet_stacks()}"

    # -- the main greenlet: heartbeat and stop ---------------------------------------------

    def run(self) -> None:
        self.after_fork()
        self._sem = self.semaphore(self.max_conns)
        socks = []
        for listener in self.listeners:
            lsock = self.green_socket(listener.sock)
            socks.append(lsock)
            self._acceptors.append(self.spawn(self._accept_loop, lsock, listener.address))
        try:
            while self.alive:
                if not self.tick():
                    break
                if self.wait_read(self._wakeup_r, TICK_SECONDS):
                    self.drain_wakeup()
            for green in self._acceptors:
                self.kill(green)
            for lsock in socks:
                lsock.close()
            deadline = time.monotonic() + self.graceful_timeout
            while self.nconns and time.monotonic() < deadline and self.master_alive():
                self.notify()
                self.sleep(0.05)
        finally:
            for lsock in socks:
                lsock.close()

    # -- acceptors -------------------------------------------------------------------------

    def _accept_loop(self, lsock, address) -> None:
        sem = self._sem
        spawn = self.spawn
        serve = self._serve_connection
        lfd = lsock.fileno()
        batch = 0
        while self.alive:
            sem.acquire()
            try:
                accepted = self.accept_from(lsock, lfd)
            except BaseException:
                sem.release()  # killed at a stop
                raise
            if accepted is None:
                sem.release()
                continue
            self.nconns += 1
            spawn(serve, accepted[0], accepted[1], address)
            batch += 1
            if batch >= ACCEPT_BATCH:
                # A long backlog: let the connections in progress run before accepting more.
                # (accept() itself yields once the backlog is empty.)
                batch = 0
                self.sleep(0)

    # -- one greenlet per connection ---------------------------------------------------------

    def _serve_connection(self, sock, peer, address) -> None:
        conn = None
        readable = None
        result = IDLE
        try:
            sock.settimeout(self.io_timeout)
            conn = Connection(self.ctx, sock, peer, address)
            self._serving[conn] = getcurrent()  # (its requests in flight: serving_connections)
            sock = conn.sock  # (with TLS, the wrapped socket)
            readable = self.readable(sock.fileno())
            wait = self.first_request_seconds
            hub_turns = self.hub_turns
            turn = hub_turns()
            while True:
                # A request that waited on something (the hub polled meanwhile) has had its
                # turn delayed already: if the next request is here, serve it now rather than
                # after the hub's next poll, behind every other connection ready. One that
                # did not wait goes to the back of the line, so a fast client cannot hog the
                # worker (a yield instead of a poll doubled the tail at c=1000).
                if not (hub_turns() != turn and self._arrived(conn)) and \
                        not self._wait_request(readable, wait):
                    break
                turn = hub_turns()
                # (the head is usually all there: _read_head only when it is not)
                if not conn.read_head_nonblocking() and not self._read_head(conn, readable):
                    result = conn.time_out_head()  # 408 at header_timeout
                    break
                result = conn.serve(True)
                if result != IDLE:
                    break
                wait = self.keepalive_seconds
            if result == LINGER:
                self._linger(sock, readable)
        except Exception:
            self.log.exception("Error handling a connection from %s", peer)
        finally:
            if conn is not None:
                self._serving.pop(conn, None)
            if readable is not None:
                readable.close()
            try:
                if conn is not None and conn.taken_over:
                    release_taken_over(sock, self.sleep)
                    self.settle_taken_over(sock)
                sock.close()
            except OSError:
                pass
            self.nconns -= 1
            self._sem.release()

    @staticmethod
    def _arrived(conn) -> bool:
        """Has any of the next request arrived (nothing is waited for)?"""
        if conn.ctx.ssl_context is not None:
            return False  # (the TLS layer's own buffer was drained by serve() before IDLE)
        return conn.read_head_nonblocking() or conn.pipelined

    def _read_head(self, conn, readable) -> bool:
        """Take in the rest of the request head as it arrives (``conn.read_head_nonblocking()``
        found it incomplete); False if header_timeout ran out first. (A greenlet waiting is
        cheap, but a slowloris client still gets its 408 on time.)"""
        deadline = self.head_deadline(time.monotonic())
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not readable.wait(remaining):
                return False
            if conn.read_head_nonblocking():
                return True

    def _wait_request(self, readable, seconds) -> bool:
        """A new or idle keep-alive connection: True when a request arrives, False to close
        (after ``seconds``; during a stop, once idle for STOP_GRACE_SECONDS)."""
        # The common case, a request within the first wait, reads no clock (this runs for
        # every request on a kept-alive connection). A wait never ends before its time, so
        # one that ran out began at least ``first`` seconds ago: counting the idle time from
        # now - first closes the connection a little late at worst, never early.
        first = seconds if seconds < TICK_SECONDS else TICK_SECONDS  # (min(): a call per request)
        if not self.alive:
            first = min(first, STOP_GRACE_SECONDS)
        if readable.wait(first):
            return True
        idle_since = time.monotonic() - first
        deadline = idle_since + seconds
        while True:
            limit = deadline if self.alive else min(deadline, idle_since + STOP_GRACE_SECONDS)
            remaining = limit - time.monotonic()
            if remaining <= 0:
                return readable.wait(0)
            if readable.wait(min(remaining, TICK_SECONDS)):
                return True

    def _linger(self, sock, readable) -> None:
        """Half-close, then read and drop what the client still sends (until EOF, 2 s)."""
        deadline = begin_linger(sock)
        if not deadline:
            return
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not readable.wait(remaining):
                    return
                if not sock.recv(RECV_SIZE):
                    return
        except (OSError, socket.timeout, ValueError):
            return

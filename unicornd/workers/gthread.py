"""The gthread worker: a pool of threads runs requests; one thread accepts and watches.

The main thread owns an epoll instance holding the listeners, the signal wakeup pipe, a
hand-back pipe from the pool, and every connection the worker holds. A connection is armed
with EPOLLONESHOT: when it becomes readable the main thread hands it to the pool and the
kernel disarms it, so exactly one thread owns it at a time. A pool thread runs
``Connection.serve(park_when_idle=True)``, which answers every request already received
(pipelined requests in order) and returns once the connection waits for its next request;
the thread then re-arms it in epoll itself (one ``epoll_ctl``, no round trip through the main
thread). An idle keep-alive connection therefore costs no thread, only an epoll entry.

Limits:

- ``keepalive``: an idle connection is closed that many seconds after its last response
  (0 turns keep-alive off). A new connection that sends nothing gets ``max(keepalive, 5)``.
- ``worker_connections``: the connections a worker holds (idle, in the pool, or lingering).
  At the cap the listeners leave the epoll set, so further connections wait in the kernel's
  backlog (or go to another worker) instead of being accepted and dropped.
- With ``max_workers`` (the master scales the workers on their load), the listeners also
  leave the epoll set as soon as every thread has a connection to serve (being served or
  queued for a thread), and come back when one is free: a worker takes no more than it can
  start, the rest go to the other workers, and the requests in flight that the master reads
  are where the load really is. Without it, one worker whose listener wakes first may take
  every connection and queue them behind its threads. (Left at once, not at the next
  accept: with EPOLLEXCLUSIVE a worker that is woken and declines would leave the
  connection in the backlog with no other worker woken for it.)

Deadlines are checked by a sweep over the held connections, at most once a second or when
the nearest deadline is due; every deadline is at least a second away when set, so none is
missed.

Graceful stop (``alive`` False): the listeners leave the epoll set; idle connections are
closed at once, except those whose last response left less than STOP_GRACE_SECONDS (1 s) ago,
kept that long because their client may be sending its next request right now (a closed-loop
client under load always is): such a request is answered, with ``Connection: close``, instead of
failing on a closed connection. Requests in the pool finish, lingering closes complete, then
``run()`` returns.
"""

import os
import queue
import select
import socket
import sys
import threading
import time
import traceback
from collections import deque

from unicornd.connection import (CLOSE, IDLE, LINGER, Connection, drain, lingering_shutdown,
                                 release_taken_over)
from unicornd.workers.base import (ACCEPT_BACKOFF_ERRNOS, LINGER_SECONDS, STOP_GRACE_SECONDS,
                                   AcceptBackoff, ConcurrentRequests, Worker)

TICK_SECONDS = 1.0

_IN = select.EPOLLIN
_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT
_LISTEN = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_plain_recv = socket.socket.recv

# Client states.
NEW = 0  # accepted, waiting in epoll for its first bytes
PARKED = 1  # idle keep-alive, waiting in epoll
ACTIVE = 2  # queued for, or being served by, a pool thread
LINGERING = 3  # half-closed by us, the main thread drains it until EOF or its deadline
CLOSED = 4


class _Client:
    """One accepted socket and where it is in its life."""

    __slots__ = ("sock", "fd", "peer", "address", "conn", "state", "deadline", "idle_since",
                 "registered", "parking", "head_deadline")

    def __init__(self, sock, fd, peer, address, now, deadline):
        self.sock = sock
        self.fd = fd
        self.peer = peer
        self.address = address
        self.conn = None  # the Connection, made by the first pool thread that serves it
        self.state = NEW
        self.deadline = deadline
        self.idle_since = now
        self.registered = False
        self.parking = False
        self.head_deadline = None  # set while a request head has partly arrived


def _has_input(sock) -> bool:
    """Bytes (or EOF) are waiting to be read, without blocking."""
    try:
        # The plain socket's recv: a TLS socket refuses flags, and raw bytes count too.
        _plain_recv(sock, 1, _PEEK)
        return True  # data, or b"" for EOF: either way serve() should read it
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # an error: let serve() meet it and close


class ThreadWorker(ConcurrentRequests, Worker):
    keep_alive = True
    multithread = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.nthreads = max(1, cfg.threads)
        self._inflight_lock = threading.Lock()  # pool threads finish requests concurrently
        self._clients = {}  # fd -> _Client: every connection held (the worker_connections count)
        # Held to add a client and to remove one: an app that closed the socket it took over
        # (a websocket) frees the fd number while its client is still in _clients, and the
        # next accept() may get it; removing "the client at that fd" must not remove that one.
        self._clients_lock = threading.Lock()
        self._handback = deque()  # clients a pool thread passes to the main thread (lingering)
        self._queue = None
        self._ep = None
        self._pipe_r = self._pipe_w = -1
        self._paused = False
        # With max_workers: connections handed to the pool and not yet done with (queued or
        # held by a thread), under _inflight_lock; at nthreads the worker stops accepting.
        self._holding = 0
        self._accept_backoff = AcceptBackoff(self.log)
        self._pool = []

    def capacity(self) -> int:
        return self.nthreads

    def stalled(self, entry, now: float) -> None:
        """A thread cannot be stopped alone: say so once, with where it is. The master
        replaces the worker when every thread is stalled (master/timeouts.py)."""
        if entry.reported:
            return
        entry.reported = True
        req = entry.req
        frame = sys._current_frames().get(entry.owner)
        where = "".join(traceback.format_stack(frame)).rstrip() if frame is not None else "?"
        name = next((t.name for t in self._pool if t.ident == entry.owner), "?")
        self.log.critical(
            "REQUEST STALLED (pid %s) %s %s after %.1f s, no progress for %.1f s in thread %s: "
            "a thread cannot be stopped alone; the worker is replaced once all its %d threads "
            "are stalled. Its stack:\n%s", self.pid, req.method, req.path, now - entry.started,
            now - entry.conn.progress, name, self.nthreads, where)

    # -- the main thread ---------------------------------------------------------------

    def run(self) -> None:
        if self.max_conns < self.nthreads:
            self.log.warning("worker_connections (%d) is below threads (%d): at most %d threads "
                             "will ever be busy", self.max_conns, self.nthreads, self.max_conns)
        self._ep = ep = select.epoll()
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        ep.register(self._wakeup_r, _IN)
        ep.register(self._pipe_r, _IN)
        self._listeners = {}
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self._listeners[listener.fileno()] = listener
        self._set_accepting(True)
        self._queue = queue.SimpleQueue()
        for i in range(self.nthreads):
            t = threading.Thread(target=self._pool_thread, name=f"unicornd-thread-{i + 1}", daemon=True)
            t.start()
            self._pool.append(t)
        try:
            self._loop()
            self._drain_and_stop()
            for _ in self._pool:
                self._queue.put(None)
            until = time.monotonic() + 1.0
            for t in self._pool:
                t.join(max(0.0, until - time.monotonic()))
        finally:
            for fd in (self._pipe_r, self._pipe_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            ep.close()

    def _loop(self) -> None:
        ep = self._ep
        clients = self._clients
        listeners = self._listeners
        put = self._to_pool
        next_sweep = 0.0
        while self.alive:
            timeout = next_sweep - time.monotonic()
            try:
                events = ep.poll(timeout if timeout > 0 else 0)
            except InterruptedError:
                events = ()
            for fd, _ in events:
                client = clients.get(fd)
                if client is not None:
                    state = client.state
                    if state == PARKED or state == NEW:
                        client.state = ACTIVE
                        put(client)
                    elif state == LINGERING:
                        self._tend_lingering(client)
                elif fd in listeners:
                    self._accept(listeners[fd])
                elif fd == self._pipe_r or fd == self._wakeup_r:
                    self._read_pipe(fd)
                else:
                    self._forget_fd(fd)
            if self._paused and len(clients) < self.max_conns and self.alive \
                    and not self._saturated():
                self._set_accepting(True)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = self._sweep(now)
                self.notify()
                if not self.master_alive():
                    self.log.info("Parent changed, shutting down: %s", self)
                    self.alive = False

    def _read_pipe(self, fd) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return
        if fd == self._pipe_r:
            handback = self._handback
            while handback:
                client = handback.popleft()
                self._arm(client, _IN)  # lingering: level-triggered until EOF or deadline

    def _forget_fd(self, fd) -> None:
        """An event for no connection of ours: never read it (it may be a new connection's
        number, its request not yet ours to take); stop watching it."""
        try:
            self._ep.unregister(fd)
        except OSError:
            pass

    def _arm(self, client, events) -> bool:
        try:
            if client.registered:
                self._ep.modify(client.fd, events)
            else:
                self._ep.register(client.fd, events)
                client.registered = True
            return True
        except OSError as exc:
            self.log.debug("cannot watch connection from %s: %s", client.peer, exc)
            self._close(client)
            return False

    def _wake(self) -> None:
        try:
            os.write(self._pipe_w, b"\0")
        except OSError:
            pass  # full: the main thread is awake anyway

    def _set_accepting(self, on: bool) -> None:
        ep = self._ep
        if on:
            self._paused = False
            for fd in self._listeners:
                try:
                    ep.register(fd, _LISTEN)
                except FileExistsError:
                    pass
        else:
            # Flag first: a pool thread closing a connection from now on wakes us to resume.
            self._paused = True
            for fd in self._listeners:
                try:
                    ep.unregister(fd)
                except (FileNotFoundError, OSError):
                    pass

    def _saturated(self) -> bool:
        """With max_workers: every thread has a connection to serve, held or queued."""
        return self.load_slot is not None and self._holding >= self.nthreads

    def _to_pool(self, client) -> None:
        """(Main thread) a connection with bytes to read goes to the pool."""
        if self.load_slot is not None:
            with self._inflight_lock:
                self._holding += 1
            if self._holding >= self.nthreads and not self._paused:
                self._set_accepting(False)  # now, not when the next connection wakes us
        self._queue.put(client)

    def _thread_free(self) -> None:
        """(Pool thread) done with a connection: the main thread may accept again."""
        with self._inflight_lock:
            self._holding -= 1
        if self._paused:
            self._wake()

    def _accept(self, listener) -> None:
        if not self.alive:
            return  # stopping (or at max_requests): what is accepted already is all it serves
        clients = self._clients
        if len(clients) >= self.max_conns or self._saturated():
            self._set_accepting(False)
            # A connection may have closed meanwhile: look again with the flag set.
            if len(clients) < self.max_conns and self.alive and not self._saturated():
                self._set_accepting(True)
            return
        try:
            sock, peer = listener.sock.accept()
        except BlockingIOError:
            if self._unsettled:
                self.queue_empty(listener.fileno())
            return
        except (InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            if exc.errno in ACCEPT_BACKOFF_ERRNOS:
                time.sleep(self._accept_backoff.failed(exc))
                return
            raise
        if self._unsettled:
            self.settle_timeouts(listener.fileno(), sock)
        fd = sock.fileno()
        now = time.monotonic()
        client = _Client(sock, fd, peer, listener.address, now, now + self.first_request_seconds)
        with self._clients_lock:
            clients[fd] = client
        # Served once it has bytes to read: a client that connects and says nothing holds no thread.
        self._arm(client, _ONESHOT_IN)
        if len(clients) >= self.max_conns:
            self._set_accepting(False)
            if len(clients) < self.max_conns and self.alive:
                self._set_accepting(True)

    def _sweep(self, now: float) -> float:
        """Close what is past its deadline; returns when to sweep next."""
        soonest = now + TICK_SECONDS
        expired = []
        for client in list(self._clients.values()):
            state = client.state
            if state == ACTIVE:
                continue
            if client.deadline <= now:
                expired.append(client)
            elif client.deadline < soonest:
                soonest = client.deadline
        for client in expired:
            if client.state == LINGERING:
                self._close(client)
            else:
                self._take_idle(client)
        return soonest

    def _take_idle(self, client) -> None:
        """Close an idle (NEW/PARKED) connection now, unless a request is already waiting on it:
        that one is served (during a graceful stop, with Connection: close)."""
        if (client.state != PARKED and client.state != NEW) or client.parking:
            return  # a pool thread has it, or is still arming it: look again next time
        if client.head_deadline is not None and client.conn is not None:
            # header_timeout ran out on a half-sent head: 408, then a lingering close.
            try:
                self._ep.unregister(client.fd)
            except OSError:
                pass
            client.registered = False
            client.conn.time_out_head()
            lingering_shutdown(client.sock)
            if drain(client.sock):
                self._close(client)
            else:
                client.state = LINGERING
                client.deadline = time.monotonic() + LINGER_SECONDS
                self._arm(client, _IN)  # level-triggered until EOF or deadline
            return
        if _has_input(client.sock):
            # Out of band: disarm it first, so no event hands it to the pool a second time.
            try:
                self._ep.unregister(client.fd)
            except OSError:
                pass
            client.registered = False
            client.state = ACTIVE
            self._to_pool(client)
            return
        self._close(client)

    def _tend_lingering(self, client) -> None:
        if drain(client.sock):
            self._close(client)

    def _close(self, client) -> None:
        client.state = CLOSED
        # Forget it before closing: once closed, accept() may reuse the fd number. Not if the
        # fd is another connection's already (the app closed this one's socket itself).
        with self._clients_lock:
            if self._clients.get(client.fd) is not client:
                return
            del self._clients[client.fd]
        try:
            client.sock.close()
        except OSError:
            pass
        if self._paused and threading.current_thread() is not threading.main_thread():
            self._wake()

    def _drain_and_stop(self) -> None:
        """Graceful stop: no new connections; requests in progress finish; idle connections
        close at once, except one whose last response left less than STOP_GRACE_SECONDS ago:
        its client may be sending the next request already, which is then answered with
        ``Connection: close`` rather than met by a closed connection."""
        self._set_accepting(False)
        clients = self._clients
        deadline = time.monotonic() + self.graceful_timeout
        ep = self._ep
        while clients:
            now = time.monotonic()
            if now >= deadline or not self.master_alive():
                break
            self.notify()
            soonest = now + TICK_SECONDS
            for client in list(clients.values()):
                state = client.state
                if state == LINGERING:
                    if client.deadline <= now:
                        self._close(client)
                    else:
                        soonest = min(soonest, client.deadline)
                elif state == PARKED or state == NEW:
                    until = min(client.deadline, client.idle_since + STOP_GRACE_SECONDS)
                    if until <= now:
                        self._take_idle(client)
                    else:
                        soonest = min(soonest, until)
            try:
                events = ep.poll(max(0.0, soonest - time.monotonic()))
            except InterruptedError:
                events = ()
            for fd, _ in events:
                client = clients.get(fd)
                if client is not None:
                    if client.state == LINGERING:
                        self._tend_lingering(client)
                    elif client.state == PARKED or client.state == NEW:
                        client.state = ACTIVE
                        self._to_pool(client)
                elif fd == self._pipe_r or fd == self._wakeup_r:
                    self._read_pipe(fd)
                elif fd not in self._listeners:
                    self._forget_fd(fd)
        for client in list(clients.values()):
            if client.state != ACTIVE:
                self._close(client)

    # -- the pool ------------------------------------------------------------------------

    def _pool_thread(self) -> None:
        get = self._queue.get
        ctx = self.ctx
        log = self.log
        counting, held = self.load_slot is not None, False
        while True:
            if held:
                self._thread_free()  # done with the previous connection
            client = get()
            held = counting
            if client is None:
                return
            try:
                conn = client.conn
                if conn is None:
                    conn = client.conn = Connection(ctx, client.sock, client.peer, client.address)
                while True:
                    if not conn.read_head_nonblocking():
                        # Part of a head: no thread waits for the rest (slowloris), epoll does,
                        # until header_timeout, when the main thread answers 408.
                        if client.head_deadline is None:
                            client.head_deadline = time.monotonic() + (self.cfg.header_timeout or 1e9)
                        if self._park(client, client.head_deadline):
                            result = IDLE
                            break
                        result = conn.serve(True)  # not watched: read it here after all
                    else:
                        client.head_deadline = None
                        result = conn.serve(True)
                    # With TLS the first serve() wraps the socket (the plain one is detached):
                    # from then on, close and watch the TLS socket (same fd).
                    client.sock = conn.sock
                    if result != IDLE:
                        break
                    if self._park(client):
                        break
                    # Not watched: a request already sent is answered, else it closes now.
                    if not _has_input(client.sock):
                        result = CLOSE
                        break
            except Exception:
                log.exception("Error handling a connection from %s", client.peer)
                if client.conn is not None:
                    client.sock = client.conn.sock
                result = CLOSE
            if result == IDLE:
                continue
            if client.conn is not None and client.conn.taken_over:
                release_taken_over(client.sock)
            elif result == LINGER:
                lingering_shutdown(client.sock)
                if not drain(client.sock):
                    client.state = LINGERING
                    client.deadline = time.monotonic() + LINGER_SECONDS
                    self._handback.append(client)
                    self._wake()
                    continue
            self._close(client)

    def _park(self, client, deadline=None) -> bool:
        """Back into epoll until its next request (while stopping, for STOP_GRACE_SECONDS at
        most); False if that failed.

        No lock: only a pool thread moves a connection into PARKED, and only the main thread
        moves it out (an event, an expired deadline, a stop). ``parking`` tells the main
        thread not to close it while the epoll_ctl is under way (the fd must stay ours).
        """
        client.parking = True
        client.idle_since = now = time.monotonic()
        client.deadline = deadline if deadline is not None else now + self.keepalive_seconds
        client.state = PARKED
        try:
            if client.registered:
                self._ep.modify(client.fd, _ONESHOT_IN)
            else:
                self._ep.register(client.fd, _ONESHOT_IN)
                client.registered = True
        except (OSError, ValueError):
            # Not watched (or the worker is going away): serve() meets whatever comes.
            client.state = ACTIVE
            return False
        finally:
            client.parking = False
        if not self.alive:
            self._wake()  # stopping: the main thread closes it after the stop grace
        return True

"""The gthread worker: a pool of threads that wait on one epoll set and serve what it reports.

Every connection the worker holds, and the listeners, are in one epoll instance. The pool
threads are its followers: each waits in ``epoll_wait`` for one event and handles it itself,
with no hand-off: a listener's event is an ``accept()``; a connection's is served by
``Connection.serve(park_when_idle=True)``, which answers every request already received
(pipelined requests in order) and returns once the connection waits for its next request; the
thread then re-arms it (one ``epoll_ctl``) and waits again. A connection is armed with
EPOLLONESHOT: the kernel reports it to one thread and disarms it, so exactly one thread owns it
at a time; an idle keep-alive connection costs no thread, only an epoll entry. (Handing each
ready connection from an accepting thread to a queue cost two thread wake-ups a request.)

The main thread runs no request: it takes signals, reports to the master (the heartbeat) and
sweeps deadlines. A waiting connection is taken by a pool thread (its event) or by the main
thread (its deadline) only through ``_claim``, under one lock: a connection whose deadline
passes just as its next request arrives is either served or closed, never both.

Limits:

- ``keepalive``: an idle connection is closed that many seconds after its last response
  (0 turns keep-alive off). A new connection that sends nothing gets ``max(keepalive, 5)``.
- ``worker_connections``: the connections a worker holds (idle, being served, or lingering).
  At the cap the listeners leave the epoll set, so further connections wait in the kernel's
  backlog (or go to another worker) instead of being accepted and dropped.

Deadlines are checked by a sweep over the held connections, at most once a second or when
the nearest deadline is due; every deadline is at least a second away when set, so none is
missed.

Graceful stop (``alive`` False): the listeners leave the epoll set; idle connections are
closed at once, except those whose last response left less than STOP_GRACE_SECONDS (1 s) ago,
kept that long because their client may be sending its next request right now (a closed-loop
client under load always is): such a request is answered, with ``Connection: close``, instead of
failing on a closed connection. Requests in progress finish, lingering closes complete, then
the pool threads leave and ``run()`` returns.
"""

import os
import select
import sys
import threading
import time
import traceback
from threading import get_ident

from unicornd.closing import STOP_GRACE_SECONDS, begin_linger, drain, input_waiting, release_taken_over
from unicornd.connection import CLOSE, IDLE, LINGER, Connection
from unicornd.workers.base import ConcurrentRequests, Worker
from unicornd.workers.thread_gate import ThreadGate

TICK_SECONDS = 1.0
# Connections accepted for one event of a listener. The listener takes its turn among the
# ready connections (one event per turn): one accept a turn, and a burst of new connections
# (1000 at once) waits in the backlog for seconds behind the requests being served.
ACCEPT_BATCH = 64

_IN = select.EPOLLIN
_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT
_LISTEN = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)

# Client states.
NEW = 0  # accepted, waiting in epoll for its first bytes
PARKED = 1  # idle keep-alive, waiting in epoll
ACTIVE = 2  # taken (_claim): being served by a pool thread, or closed by the main thread
LINGERING = 3  # half-closed by us, drained on each event until EOF or its deadline
CLOSED = 4


class _Client:
    """One accepted socket and where it is in its life."""

    __slots__ = ("sock", "fd", "peer", "address", "conn", "state", "deadline", "idle_since",
                 "registered", "parking", "head_deadline", "owner")

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
        self.owner = None  # the ident of the pool thread serving it (while ACTIVE)


class ThreadWorker(ConcurrentRequests, Worker):
    keep_alive = True
    multithread = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.nthreads = max(1, cfg.threads)
        self._inflight_lock = threading.Lock()  # pool threads finish requests concurrently
        self._clients = {}  # fd -> _Client: every connection held (the worker_connections count)
        # Held to add or remove a client, and to take one out of a waiting state (_claim).
        # (An app that closed the socket it took over (a websocket) frees the fd number while
        # its client is still in _clients, and the next accept() may get it: removing "the
        # client at that fd" must not remove that one.)
        self._lock = threading.Lock()
        self._accept_lock = threading.Lock()  # listeners in or out of the epoll set
        self._ep = None
        self._stop_r = self._stop_w = -1  # readable: the pool threads leave
        self._main_r = self._main_w = -1  # readable: the main thread looks again (stopping)
        self._pool_stop = False
        self._paused = False
        self._pool = []
        self._gate = ThreadGate(self.nthreads)

    def capacity(self) -> int:
        return self.nthreads

    def serving_connections(self) -> list:
        # (list() of a dict's values is taken whole under the interpreter lock: no thread
        # adds or removes a client meanwhile)
        return [(client.conn, client.owner) for client in list(self._clients.values())
                if client.state == ACTIVE and client.conn is not None]

    def load_count(self, in_flight: int) -> int:
        """A worker whose running threads are all busy is full, even with threads parked: they
        run only once those block (thread_gate). An app that never waits keeps one thread
        busy, and that is all the worker can do; counted as one of ``threads``, the
        autoscaler would never see it full."""
        return in_flight if in_flight < len(self._gate.running) else self.nthreads

    def stalled(self, entry, now: float) -> None:
        """A thread cannot be stopped alone: say so once, with where it is. The master
        replaces the worker when every thread is stalled (master/timeouts.py)."""
        if entry.ex.reported:
            return
        entry.ex.reported = True
        req = entry.req
        frame = sys._current_frames().get(entry.owner)
        where = "".join(traceback.format_stack(frame)).rstrip() if frame is not None else "?"
        name = next((t.name for t in self._pool if t.ident == entry.owner), "?")
        self.log.critical(
            "REQUEST STALLED (pid %s) %s %s after %.1f s, no progress for %.1f s in thread %s: "
            "a thread cannot be stopped alone; the worker is replaced once all its %d threads "
            "are stalled. Its stack:\n%s", self.pid, req.method, req.path, now - entry.started,
            now - entry.conn.io.progress, name, self.nthreads, where)

    # -- the main thread: signals, heartbeat, deadlines ------------------------------------

    def run(self) -> None:
        if self.max_conns < self.nthreads:
            self.log.warning("worker_connections (%d) is below threads (%d): at most %d threads "
                             "will ever be busy", self.max_conns, self.nthreads, self.max_conns)
        self._ep = ep = select.epoll()
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._main_r, self._main_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Level-triggered and never read: once written, every pool thread sees it.
        ep.register(self._stop_r, _IN)
        self._listeners = {}
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self._listeners[listener.fileno()] = listener
        self._set_accepting(True)
        self._waker = select.poll()
        self._waker.register(self._wakeup_r, select.POLLIN)
        self._waker.register(self._main_r, select.POLLIN)
        for i in range(self.nthreads):
            t = threading.Thread(target=self._pool_thread, args=(i,), name=f"unicornd-thread-{i + 1}",
                                 daemon=True)
            t.start()
            self._pool.append(t)
        try:
            self._loop()
            self._drain_and_stop()
            self._pool_stop = True
            os.write(self._stop_w, b"\0")
            self._gate.close()
            until = time.monotonic() + 1.0
            for t in self._pool:
                t.join(max(0.0, until - time.monotonic()))
        finally:
            for fd in (self._stop_r, self._stop_w, self._main_r, self._main_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            ep.close()

    def _wait_main(self, seconds: float) -> None:
        """The main thread waits for a signal, a nudge from a pool thread, or ``seconds``
        (less while pool threads are parked: it looks whether the running ones are blocked)."""
        gate = self._gate
        gate.rebalance()
        check = gate.check_in()
        if check is not None and check < seconds:
            seconds = check
        try:
            events = self._waker.poll(max(0.0, seconds) * 1000)
        except InterruptedError:
            return
        for fd, _ in events:
            if fd == self._wakeup_r:
                self.drain_wakeup()
            else:
                try:
                    while os.read(fd, 4096):
                        pass
                except OSError:
                    pass

    def _nudge_main(self) -> None:
        try:
            os.write(self._main_w, b"\0")
        except OSError:
            pass  # full: the main thread is awake anyway

    def _loop(self) -> None:
        next_sweep = 0.0
        while self.alive:
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = self._sweep(now)
                self.tick()
                continue
            self._wait_main(next_sweep - now)

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
                if self._claim(client, lingering=True):
                    self._close(client)
            else:
                self._take_idle(client)
        return soonest

    def _take_idle(self, client) -> None:
        """Close an idle (NEW/PARKED) connection now, unless a request is already waiting on it:
        that one is served (during a graceful stop, with Connection: close)."""
        if client.parking or not self._claim(client):
            return  # a pool thread has it, or is still arming it: look again next time
        if client.head_deadline is not None and client.conn is not None:
            # header_timeout ran out on a half-sent head: 408, then a lingering close.
            client.conn.time_out_head()
            self._linger(client)
            return
        if input_waiting(client.sock):
            # Its request came just now: a pool thread serves it (the main thread runs no
            # request). Armed again, it is reported at once; the deadline gives it time.
            client.deadline = time.monotonic() + TICK_SECONDS
            client.state = PARKED
            self._arm(client)
            return
        self._close(client)

    def _drain_and_stop(self) -> None:
        """Graceful stop: no new connections; requests in progress finish; idle connections
        close at once, except one whose last response left less than STOP_GRACE_SECONDS ago:
        its client may be sending the next request already, which is then answered with
        ``Connection: close`` rather than met by a closed connection."""
        self._set_accepting(False)
        clients = self._clients
        deadline = time.monotonic() + self.graceful_timeout
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
                        if self._claim(client, lingering=True):
                            self._close(client)
                    else:
                        soonest = min(soonest, client.deadline)
                elif state == PARKED or state == NEW:
                    until = min(client.deadline, client.idle_since + STOP_GRACE_SECONDS)
                    if until <= now:
                        self._take_idle(client)
                    else:
                        soonest = min(soonest, until)
            if clients:
                self._wait_main(min(soonest, deadline) - time.monotonic())
        for client in list(clients.values()):
            if self._claim(client) or self._claim(client, lingering=True):
                self._close(client)

    # -- connections changing hands ---------------------------------------------------------

    def _claim(self, client, lingering=False) -> bool:
        """Take a connection out of its waiting state (idle: NEW or PARKED; or LINGERING) to
        act on it: True for exactly one of the threads that try."""
        with self._lock:
            state = client.state
            if lingering:
                if state != LINGERING:
                    return False
            elif state != PARKED and state != NEW:
                return False
            client.state = ACTIVE
            return True

    def _watch(self, client) -> None:
        """Arm it for one readable event (OSError if that failed). ``registered`` is set
        before the epoll_ctl: once armed, another thread may take it at once and re-arm it."""
        if not client.registered:
            client.registered = True
            try:
                self._ep.register(client.fd, _ONESHOT_IN)
                return
            except FileExistsError:
                pass
        self._ep.modify(client.fd, _ONESHOT_IN)

    def _arm(self, client) -> bool:
        """Watch it (again) for one readable event; False, and closed, if that failed."""
        try:
            self._watch(client)
            return True
        except (OSError, ValueError) as exc:
            self.log.debug("cannot watch connection from %s: %s", client.peer, exc)
            self._close(client)
            return False

    def _linger(self, client) -> None:
        """Close it the lingering way: at once if the peer is done, else watched (a pool thread
        drains it on each event) until EOF or its deadline (the sweep closes it then)."""
        deadline = begin_linger(client.sock)
        if not deadline:
            self._close(client)
            return
        client.deadline = deadline
        client.state = LINGERING
        self._arm(client)

    def _close(self, client) -> None:
        client.state = CLOSED
        # Forget it before closing: once closed, accept() may reuse the fd number. Not if the
        # fd is another connection's already (the app closed this one's socket itself).
        with self._lock:
            if self._clients.get(client.fd) is not client:
                return
            del self._clients[client.fd]
        try:
            client.sock.close()
        except OSError:
            pass
        if self._paused:
            self._resume_accepting()
        if not self.alive:
            self._nudge_main()  # stopping: the main thread looks whether all are gone

    def _set_accepting(self, on: bool) -> None:
        ep = self._ep
        with self._accept_lock:
            if on:
                self._paused = False
                for fd in self._listeners:
                    try:
                        ep.register(fd, _LISTEN)
                    except FileExistsError:
                        pass
            else:
                self._paused = True
                for fd in self._listeners:
                    try:
                        ep.unregister(fd)
                    except (FileNotFoundError, OSError):
                        pass

    def _resume_accepting(self) -> None:
        """A connection closed while accepting was paused at the cap: accept again."""
        if len(self._clients) < self.max_conns and self.alive:
            with self._accept_lock:
                if not self._paused or not self.alive:
                    return
            self._set_accepting(True)

    def _accept(self, listener) -> None:
        if not self.alive:
            # Stopping (or at max_requests): what is accepted already is all it serves. (The
            # listener is level-triggered: out of the set now, or every thread spins on it.)
            self._set_accepting(False)
            self._nudge_main()
            return
        clients = self._clients
        if len(clients) >= self.max_conns:
            self._set_accepting(False)
            # A connection may have closed meanwhile: look again with the flag set.
            self._resume_accepting()
            return
        lsock, lfd, address = listener.sock, listener.fileno(), listener.address
        lock = self._lock
        for _ in range(ACCEPT_BATCH):
            accepted = self.accept_from(lsock, lfd)
            if accepted is None:
                return
            sock, peer = accepted
            fd = sock.fileno()
            now = time.monotonic()
            client = _Client(sock, fd, peer, address, now, now + self.first_request_seconds)
            with lock:
                clients[fd] = client
            # Served once it has bytes to read: a client that connects and says nothing holds
            # no thread.
            self._arm(client)
            if len(clients) >= self.max_conns:
                self._set_accepting(False)
                self._resume_accepting()
                return

    def _forget_fd(self, fd) -> None:
        """An event for no connection of ours: never read it (it may be a new connection's
        number, its request not yet ours to take); stop watching it."""
        try:
            self._ep.unregister(fd)
        except OSError:
            pass

    # -- the pool ------------------------------------------------------------------------

    def _pool_thread(self, i: int) -> None:
        poll = self._ep.poll
        clients = self._clients
        listeners = self._listeners
        stop_r = self._stop_r
        gate = self._gate
        busy = gate.busy
        clock = time.monotonic
        gate.register(i)
        if i not in gate.running:
            gate.park(i)  # (thread_gate: one runs until it blocks)
        while not self._pool_stop:
            try:
                events = poll(-1, 1)  # one event a thread: the others take the next ones
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return  # the epoll set is closed: the worker is exiting
            for fd, _ in events:
                busy[i] = clock()
                gate.events += 1
                if gate.dozing:
                    gate.dozing = False
                    self._nudge_main()  # it looks again while this event is served
                try:
                    client = clients.get(fd)
                    if client is not None:
                        state = client.state
                        if state == LINGERING:
                            if self._claim(client, lingering=True):
                                if drain(client.sock):
                                    self._close(client)
                                else:
                                    client.state = LINGERING
                                    self._arm(client)
                        elif self._claim(client):
                            self._serve(client)
                    elif fd in listeners:
                        self._accept(listeners[fd])
                    elif fd == stop_r:
                        return
                    else:
                        self._forget_fd(fd)
                except Exception:
                    # (serve() answers the app's errors itself: this is ours.) The thread
                    # must not end on it: the worker would serve on with one thread fewer.
                    self.log.exception("Error in %s", threading.current_thread().name)
                busy[i] = 0.0
            if gate.should_park(i):
                if gate.dozing or gate.all_run:
                    gate.dozing = gate.all_run = False
                    self._nudge_main()  # it looks whether the threads left get blocked
                gate.park(i)

    def _serve(self, client) -> None:
        """Serve the requests that came on a connection, until it waits for its next one
        (parked again) or must close."""
        client.owner = get_ident()
        try:
            conn = client.conn
            if conn is None:
                conn = client.conn = Connection(self.ctx, client.sock, client.peer, client.address)
                client.sock = conn.sock  # (with TLS, the wrapped socket: the same fd)
            while True:
                if not conn.read_head_nonblocking():
                    # Part of a head: no thread waits for the rest (slowloris), epoll does,
                    # until header_timeout, when the main thread answers 408.
                    if client.head_deadline is None:
                        client.head_deadline = self.head_deadline(time.monotonic())
                    if self._park(client, client.head_deadline):
                        return
                    result = conn.serve(True)  # not watched: read it here after all
                else:
                    client.head_deadline = None
                    result = conn.serve(True)
                if result != IDLE:
                    break
                if self._park(client):
                    return
                # Not watched: a request already sent is answered, else it closes now.
                if not input_waiting(client.sock):
                    result = CLOSE
                    break
        except Exception:
            self.log.exception("Error handling a connection from %s", client.peer)
            result = CLOSE
        if client.conn is not None and client.conn.taken_over:
            release_taken_over(client.sock)
        elif result == LINGER:
            self._linger(client)
            return
        self._close(client)

    def _park(self, client, deadline=None) -> bool:
        """Back into epoll until its next request (while stopping, for STOP_GRACE_SECONDS at
        most); False if that failed.

        From PARKED, a pool thread (its event) or the main thread (its deadline) takes it
        with ``_claim``; ``parking`` tells the main thread not to close it while the
        epoll_ctl is under way (the fd must stay ours). A pool thread may take it at once.
        """
        client.parking = True
        client.idle_since = now = time.monotonic()
        client.deadline = deadline if deadline is not None else now + self.keepalive_seconds
        client.state = PARKED
        try:
            self._watch(client)
        except (OSError, ValueError):
            # Not watched (or the worker is going away): serve() meets whatever comes.
            if self._claim(client):
                client.parking = False
                return False
            client.parking = False
            return True  # (another thread took it meanwhile: it is that thread's)
        client.parking = False
        if not self.alive:
            self._nudge_main()  # stopping: the main thread closes it after the stop grace
        return True

"""What every worker class does in its child process: signals, app load, graceful exit.

A subclass only says how it accepts connections and schedules ``Connection.serve()``.
"""

import _socket
import contextlib
import os
import random
import signal
import socket
import sys
import time
import traceback

from unicornd.app_loading import AppImportError, load_app
from unicornd.context import ServerContext
from unicornd.logging import reopen_log_files
from unicornd.master.listeners import set_client_timeouts
from unicornd.master.process import rss, set_owner
from unicornd.master.scoreboard import OVER_MEMORY_AT_BOOT, SERIAL, WANTS_RECYCLE
from unicornd.master.timeouts import request_stalled
from unicornd.metrics.statsd import from_config as statsd_from_config
from unicornd.reloader import broken_app
from unicornd.stacks import format_all_stacks
from unicornd.tls import make_ssl_context

# Exit codes the master understands, the same as gunicorn's.
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4

# Signals the master handles that a fresh worker must not inherit handlers for.
_MASTER_SIGNALS = ("SIGHUP", "SIGQUIT", "SIGINT", "SIGTERM", "SIGTTIN", "SIGTTOU",
                   "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCHLD")


# accept() failing (out of fds, buffers...): wait this long before the next try, don't spin.
ACCEPT_BACKOFF_SECONDS = 0.1
ACCEPT_LOG_EVERY_SECONDS = 60.0
FIRST_REQUEST_SECONDS = 5.0
# With header_timeout 0 (off), a request head may take this long (about 31 years): a deadline
# still, so that every class computes and compares its waits the same way.
NO_HEAD_DEADLINE_SECONDS = 1e9


class AcceptBackoff:
    """accept() failing for lack of fds: the caller waits a little before trying again, and
    the log gets one line a minute at most, however often it is retried, not a storm."""

    __slots__ = ("log", "last_logged", "failures")

    def __init__(self, log):
        self.log = log
        self.last_logged = None
        self.failures = 0

    def failed(self, exc) -> float:
        """Note the failure; returns how long to wait before accepting again."""
        now = time.monotonic()
        self.failures += 1
        if self.last_logged is None or now - self.last_logged >= ACCEPT_LOG_EVERY_SECONDS:
            more = f" ({self.failures - 1} more since the last report)" if self.last_logged else ""
            self.log.error("accept() failed: %s; backing off%s", exc, more)
            self.last_logged = now
            self.failures = 0
        return ACCEPT_BACKOFF_SECONDS


class AppLoadFailed(Exception):
    """The app could not be imported in this worker; the master halts with APP_LOAD_ERROR."""


def _set_parent_death_signal(sig: int) -> None:
    """Linux: have the kernel signal us if the master dies, even while we block in accept."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Worker:
    """Base worker. Subclasses set ``keep_alive``/``multithread`` and implement ``run()``."""

    keep_alive = True
    multithread = False
    # The request runs on the worker's loop (sync): no heartbeat while busy, the request's own
    # progress is written to the slot as it happens (ServerContext.mirror).
    serial = False
    # Accepted sockets rely on the kernel's SO_RCVTIMEO/SO_SNDTIMEO (set on the listener) for
    # their I/O timeouts; False for classes whose cooperative sockets time out themselves.
    kernel_timeouts = True

    # The slot's state (busy with a request, idle) is written as each request starts and
    # ends; a class running several at once turns it busy as a request starts on an idle slot
    # and writes the rest at its tick (ConcurrentRequests.show_requests).
    state_per_request = True

    def __init__(self, age, ppid, listeners, cfg, log, slot=None, app=None):
        self.age = age
        self.ppid = ppid
        self.listeners = listeners
        self.cfg = cfg
        self.log = log
        self.pid = None
        self.alive = True
        self.booted = False
        self.app = app  # set when the master preloaded it
        self.ctx = None
        self.slot = slot  # this worker's scoreboard slot (a SlotWriter), or None
        # With max_workers, requests in flight are counted in the slot (the master scales on
        # them); without, the request path does not pay for it.
        self.load_slot = slot if getattr(cfg, "max_workers", 0) else None
        self.statsd = statsd_from_config(cfg)  # per-request statsd (its socket made on first use)
        self.nr = 0
        self.max_requests = sys.maxsize
        self.recycle_soon_at = sys.maxsize
        if cfg.max_requests > 0:
            self.max_requests = cfg.max_requests + random.randint(0, max(0, cfg.max_requests_jitter))
            # The master starts the replacement a little before the limit (surge), so that
            # capacity holds when this worker stops at the limit itself.
            self.recycle_soon_at = max(1, self.max_requests * 3 // 4)
        self.recycle_asked = False
        self.reopen_logs = False
        self._wakeup_r = self._wakeup_w = -1
        self.reloader = None  # cfg.reload: the thread watching the app's files
        self._unsettled = set()  # listeners whose accepted sockets may lack the kernel timeouts
        self._accept_backoff = AcceptBackoff(log)
        self._socket_kinds = {}  # listener fd -> the (family, type, proto) of its connections

    def __repr__(self):
        return f"<{type(self).__name__} {self.pid}>"

    # -- in the child ------------------------------------------------------------------

    def init_process(self) -> None:
        """Called in the forked child: set up, load the app, then serve until told to stop."""
        self.pid = os.getpid()
        self._init_signals()
        _set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.ppid:
            return  # the master died while we forked
        # Before the app loads (which takes a while): connections the kernel completes from
        # now on inherit the timeouts; those completed earlier are seen to by settle_timeouts().
        for listener in self.listeners:
            set_client_timeouts(listener, self.cfg.header_timeout)
        self._unsettled = {listener.fileno() for listener in self.listeners
                           if not getattr(listener, "timeouts_from_listen", False)
                           } if self.cfg.header_timeout and self.kernel_timeouts else set()
        # Read the TLS key while still privileged: it is often readable by root only.
        ssl_context = make_ssl_context(self.cfg)
        set_owner(self.cfg.user, self.cfg.group, self.cfg.initgroups)
        if self.cfg.reload:  # before the app loads, so that a broken app is watched too
            from unicornd.reloader import start_for_worker
            self.reloader = start_for_worker(self)
        if self.app is None:
            self.app = self.load_app()
        self.ctx = ServerContext(self.cfg, self.app, self.log, self, multithread=self.multithread,
                                 keep_alive=self.keep_alive, ssl_context=ssl_context)
        self.cfg.post_worker_init(self)
        self.booted = True
        if self.slot is not None:
            if self.cfg.max_worker_memory and rss(self.pid) > self.cfg.max_worker_memory:
                # Recycling for memory cannot help when a fresh worker is already above it.
                self.slot.raise_flag(OVER_MEMORY_AT_BOOT)
            self.slot.set_mode(SERIAL if self.serial else 0, self.capacity())
            if self.serial:
                self.ctx.mirror = self.slot
            self.slot.idle(time.monotonic())
        if self.cfg.spew:
            from unicornd.spew import install
            install()
        self.run()

    def settle_timeouts(self, listener_fd: int, sock) -> None:
        """A socket accepted from ``listener_fd`` by a worker class that relies on the kernel's
        timeouts (sync, gthread). A listener bound by this master had them before listen();
        one from systemd or an old master may have queued connections before it had them
        (while this worker booted): those did not inherit them and would wait on their client
        forever: until this worker has once found the listener's queue empty (``queue_empty``),
        each socket gets them itself; after that, every connection is younger than them."""
        if listener_fd in self._unsettled:
            set_client_timeouts(sock, self.cfg.header_timeout)

    def queue_empty(self, listener_fd: int) -> None:
        """accept() on this listener found nothing waiting (EAGAIN)."""
        self._unsettled.discard(listener_fd)

    def load_app(self):
        try:
            return load_app(self.cfg)
        except AppImportError as exc:
            self.log.error("%s", exc)
            if self.cfg.reload:
                return broken_app(self.reloader, exc)
            raise AppLoadFailed(str(exc)) from None
        except SystemExit:
            raise
        except BaseException as exc:
            if self.cfg.reload:  # serve the error until the file is fixed, as gunicorn does
                self.log.error("Exception while loading the application %r:\n%s",
                               self.cfg.wsgi_app or self.cfg.paste, traceback.format_exc().rstrip())
                return broken_app(self.reloader, exc)
            # The real traceback, as the user's own code raised it.
            self.log.error("Exception while loading the application %r:\n%s",
                           self.cfg.wsgi_app, traceback.format_exc().rstrip())
            raise AppLoadFailed(self.cfg.wsgi_app) from None

    def _init_signals(self) -> None:
        for name in _MASTER_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                signal.signal(sig, signal.SIG_DFL)
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.signal(signal.SIGABRT, self.handle_abort)
        # A graceful stop must not break the request being served.
        signal.siginterrupt(signal.SIGTERM, False)
        # The master held these back across fork (spawn_worker): what came meanwhile lands now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [getattr(signal, n) for n in _MASTER_SIGNALS])

    def handle_term(self, signum, frame):
        self.alive = False

    def handle_quit(self, signum, frame):
        self.alive = False
        self.cfg.worker_int(self)
        sys.exit(0)

    def stacks(self) -> str:
        """Where this worker is, for the timeout forensics (a class may add its own tasks)."""
        return format_all_stacks()

    def handle_usr1(self, signum, frame):
        # Reopened from the worker's loop (notify), not here: the log's lock may be held.
        self.reopen_logs = True

    def handle_abort(self, signum, frame):
        """The master timed us out: say where every thread is, then go."""
        self.alive = False
        try:
            self.log.error("Worker %s stacks at timeout:\n%s", self.pid, self.stacks())
        finally:
            self.cfg.worker_abort(self)
        # Killed while still loading the app: a boot failure, which halts rather than loops.
        sys.exit(1 if self.booted else WORKER_BOOT_ERROR)

    # -- what the master sees (the scoreboard); cheap, called on every request ---------------

    def notify(self) -> None:
        """Heartbeat: the worker's loop is alive. Also where pending USR1 work is done."""
        if self.slot is not None:
            self.slot.heartbeat(time.monotonic())
        access = self.ctx.access_log if self.ctx is not None else None
        if access is not None:
            access.flush()  # idle, or a second has passed: the buffered lines go out
        if self.reopen_logs:
            self.reopen_logs = False
            reopen_log_files(self.log)
            if access is not None:
                access.reopen(access.path)

    def capacity(self) -> int:
        """How many requests this worker runs at once (for the timeout decision)."""
        return 1

    def request_started(self, req, conn=None) -> None:
        if self.slot is not None:
            now = time.monotonic()
            self.slot.busy(now, req.method, req.path)
            if self.load_slot is not None:
                self.load_slot.in_flight(now, 1)

    def request_refused(self, status: int) -> None:
        """A request refused before the app saw it (a bad or timed-out head): counted by its
        status, as the requests are (Prometheus by status class, statsd by status)."""
        if self.slot is not None:
            self.slot.count_status(status)
        if self.statsd is not None:
            self.statsd.refused(status)

    def request_finished(self, req, conn=None, ex=None) -> None:
        """``ex``: the request's Exchange (its status and start), None if it never began."""
        self.nr += 1
        now = time.monotonic()
        if ex is not None:
            status, duration = ex.status_code, now - ex.started
        else:
            status, duration = 0, None
        slot = self.slot
        if slot is not None:
            if self.state_per_request:
                slot.finished(now, status, duration)
            else:
                slot.count(status, duration)
            if self.load_slot is not None:  # (a class running several: those still running)
                self.load_slot.in_flight(now, self.requests_in_flight())
        if self.statsd is not None and duration is not None:
            self.statsd.request(status, duration)
        if self.nr >= self.recycle_soon_at and not self.recycle_asked:
            self.ask_recycle(f"served {self.nr} of its {self.max_requests} requests (max_requests)")
        if self.nr >= self.max_requests and self.alive:
            # The limit bounds a per-request leak: no new request is taken from here on; what
            # is in flight finishes, then the worker exits (its replacement is already up).
            self.log.info("Autorestarting worker after current request.")
            self.alive = False

    def requests_in_flight(self) -> int:
        """Requests in progress once the one finishing has ended (none, here: one at a time)."""
        return 0

    def ask_recycle(self, why: str) -> None:
        """Ask the master for a replacement; this worker serves on until the master stops it
        (or, for max_requests, until it reaches the limit)."""
        self.recycle_asked = True
        self.log.info("Worker %s asks to be recycled: %s", self.pid, why)
        if self.slot is not None:
            self.slot.raise_flag(WANTS_RECYCLE)
        else:
            self.alive = False

    def master_alive(self) -> bool:
        return os.getppid() == self.ppid

    # -- policy every class applies the same way (a class only schedules the waits) ---------

    def tick(self) -> bool:
        """About once a second, from the worker's loop: the heartbeat (and pending USR1
        work), then whether the master is still there. False, with ``alive`` False, once it
        is gone: nobody would supervise this worker any more."""
        self.notify()
        if self.master_alive():
            return True
        self.log.info("Parent changed, shutting down: %s", self)
        self.alive = False
        return False

    def drain_wakeup(self) -> None:
        """Empty the signal wake-up pipe (the signal's handler has run; the byte only woke
        the loop)."""
        try:
            while os.read(self._wakeup_r, 4096):
                pass
        except OSError:
            pass

    def sleep(self, seconds: float) -> None:
        """Wait without holding up the worker (a greenlet class waits the green way)."""
        time.sleep(seconds)

    def accept_from(self, lsock, listener_fd: int):
        """Accept one connection: ``(sock, peer)``, or None if there is none now (the queue is
        empty, a signal came, the client already left). Out of fds or buffers, or any other
        error: wait ACCEPT_BACKOFF_SECONDS and say so in the log (once a minute), never spin
        and never die on it."""
        try:
            if isinstance(lsock, _socket.socket):  # (a green socket is not one)
                # socket.accept() makes the new socket from the listener's family and type
                # properties (enum conversions each time): a third of its cost, and the sync
                # worker accepts once per request.
                fd, peer = lsock._accept()
                family, kind, proto = self._socket_kinds.get(listener_fd) or self._socket_kind(lsock)
                sock = socket.socket(family, kind, proto, fd)
            else:
                sock, peer = lsock.accept()  # (a cooperative socket: it waits the green way)
        except BlockingIOError:
            if self._unsettled:
                self.queue_empty(listener_fd)
            return None
        except (InterruptedError, ConnectionAbortedError):
            return None
        except OSError as exc:
            self.sleep(self._accept_backoff.failed(exc))
            return None
        if self._unsettled:
            self.settle_timeouts(listener_fd, sock)
        return sock, peer

    def _socket_kind(self, lsock):
        kind = self._socket_kinds[lsock.fileno()] = (int(lsock.family), int(lsock.type), lsock.proto)
        return kind

    def head_deadline(self, now: float) -> float:
        """When a request head that started to arrive at ``now`` is answered 408 instead."""
        return now + (self.cfg.header_timeout or NO_HEAD_DEADLINE_SECONDS)

    def run(self) -> None:
        raise NotImplementedError


_NO_LOCK = contextlib.nullcontext()  # (for the per-tick readers of a class without a lock)


def _started(entry) -> float:
    return entry.ex.started


class InFlight:
    """A request in progress in a worker that runs several at once, as the heartbeat sees it:
    made at the tick from the connections being served, not per request. ``ex`` is the
    request's Exchange (``ex.reported``: its stall was logged already)."""

    __slots__ = ("conn", "ex", "owner")

    def __init__(self, conn, ex, owner):
        self.conn = conn  # its Connection: progress, waiting, app_owned (conn.io)
        self.ex = ex
        self.owner = owner  # the thread ident or greenlet serving it

    @property
    def started(self) -> float:
        return self.ex.started

    @property
    def req(self):
        return self.ex.req


class ConcurrentRequests:
    """For worker classes with several requests in flight at once (threads, greenlets): the
    scoreboard slot shows the oldest one. Put it before Worker in the bases; a thread pool sets
    ``_inflight_lock`` to a real lock (None: one thread, no lock; not even a nullcontext in
    the per-request path, whose ``with`` costs two Python calls per use).

    Nothing is recorded per request: a request in flight is a connection being served whose
    ``conn.ex`` is set, and the class says which connections those are
    (``serving_connections``), read once a tick. (An entry made and dropped per request cost
    about 5% of a kept-alive request's instructions.)

    Every heartbeat also looks at the requests in progress (``watch_requests``): how many
    could be hung (not waiting on their client, not on a socket the app took over) and when
    they last progressed goes to the slot, for the master's timeout decision; one that made
    no progress for ``timeout`` is handed to ``stalled()``, which a class implements (gthread
    logs it, gevent/eventlet stop its greenlet).
    """

    _inflight_lock = None
    state_per_request = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        # The same connection timing for every keep-alive worker class. keepalive = 0 turns
        # keep-alive off (as gunicorn); the base reads keep_alive to build the ServerContext.
        self.keep_alive = cfg.keepalive > 0
        self.keepalive_seconds = float(cfg.keepalive)
        # A new connection gets a little longer than an idle one for its first request.
        self.first_request_seconds = max(float(cfg.keepalive), FIRST_REQUEST_SECONDS)
        self.max_conns = max(1, cfg.worker_connections)
        self.graceful_timeout = cfg.graceful_timeout
        self._running = 0  # requests in flight, counted only for the autoscaler's load slot

    def capacity(self) -> int:
        return self.max_conns

    def serving_connections(self) -> list:
        """(Connection, owner) for every connection a thread or greenlet is serving now
        (owner: the thread ident or greenlet); those whose ``ex`` is set have a request in
        flight. Called once a tick, from the main thread (or greenlet)."""
        raise NotImplementedError

    def in_flight(self) -> list:
        """The requests in progress now (InFlight), oldest first."""
        found = []
        for conn, owner in self.serving_connections():
            ex = conn.ex  # (read once: the request may end meanwhile)
            if ex is not None:
                found.append(InFlight(conn, ex, owner))
        found.sort(key=_started)
        return found

    def request_started(self, req, conn=None) -> None:
        slot = self.slot
        if slot is not None and slot.is_idle():
            # Busy at once when the first request comes; back to idle (and to the oldest
            # request) at the tick: one read of the slot per request, a write per second.
            slot.busy(time.monotonic(), req.method, req.path)
        if self.load_slot is not None:
            with self._inflight_lock or _NO_LOCK:
                self._running += 1
                self.load_slot.in_flight(time.monotonic(), self.load_count(self._running))

    def requests_in_flight(self) -> int:
        return self.load_count(self._running)  # (called with _inflight_lock held)

    def load_count(self, in_flight: int) -> int:
        """The requests in flight as the autoscaler should count them (of ``capacity()``)."""
        return in_flight

    def request_refused(self, status: int) -> None:
        with self._inflight_lock or _NO_LOCK:
            Worker.request_refused(self, status)

    def request_finished(self, req, conn=None, ex=None) -> None:
        lock = self._inflight_lock
        if lock is not None:
            lock.acquire()
        try:
            if self.load_slot is not None:
                self._running -= 1
            Worker.request_finished(self, req, conn, ex)  # counting and recycling
        finally:
            if lock is not None:
                lock.release()

    def notify(self) -> None:
        super().notify()
        now = time.monotonic()
        running = self.in_flight()
        self.show_requests(now, running)
        if self.cfg.timeout and self.cfg.timeout > 0:
            self.watch_requests(now, running)

    def show_requests(self, now: float, running: list) -> None:
        """The slot's state, at each tick: busy with the oldest request in flight, or idle.
        (Written as each request starts and ends, it cost a few microseconds of each; it goes
        busy when a request starts on an idle slot, idle only here: the master's timeout
        decision and ``unicornd status`` read it at their own pace, a second or more.)"""
        slot = self.slot
        if slot is None:
            return
        if not running:
            slot.idle(now)
        else:
            oldest = running[0]
            slot.serving(oldest.started, oldest.req.method, oldest.req.path)

    def watch_requests(self, now: float, entries: list) -> None:
        timeout = self.cfg.timeout
        count = 0
        stalest = None
        oldest = newest = 0.0
        for entry in entries:
            conn = entry.conn
            if conn is None or conn.io.waiting or conn.io.app_owned:
                continue
            progress = conn.io.progress
            if progress < entry.ex.started:
                # (the request began a moment ago and has not noted it yet: ClientSocket.started;
                # the connection's progress is still its previous request's, maybe long idle)
                progress = entry.ex.started
            if not count or progress < oldest:
                oldest, stalest = progress, entry
            if progress > newest:
                newest = progress
            count += 1
            if request_stalled(progress, now, timeout):
                self.stalled(entry, now)
        slot = self.slot
        if slot is not None:
            if stalest is not None:
                slot.name_request(stalest.started, stalest.req.method, stalest.req.path)
            slot.progress(oldest, newest, count)

    def stalled(self, entry, now: float) -> None:
        """A request made no progress for ``timeout`` (called on every heartbeat until it
        ends; ``entry.ex.reported`` is False the first time)."""
        raise NotImplementedError

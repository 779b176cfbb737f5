"""Which of the gthread worker's pool threads may take events: one that is not blocked.

CPython runs one thread's Python at a time (the GIL). Pool threads that all wait on one epoll
set and all have work are all runnable, and every system call one makes (each recv, each
send) hands the GIL to another: a thread switch each, and under load about a third of the
worker's CPU went to them (hello at c=100, ``--threads 4``: 6,400 requests per worker
CPU-second, 18,000 with ``--threads 1``). Threads pay only when a request waits on something
(a database, a sleep, an upstream): then another thread should take the next event.

So one pool thread runs at first and the others are parked. A running thread serving one
event for BLOCKED_AFTER seconds and asleep in the kernel (a wait on a socket, a lock, a
sleep) is taken as blocked; one found runnable (on a CPU, or waiting for one) only after
RUNNABLE_BLOCKED_AFTER: a thread the scheduler has merely preempted is not waiting
on anything, and another thread let in beside it only contends with it for the interpreter
lock and takes the CPU from its sibling workers. When every running thread is blocked,
the main thread admits a parked one (while threads are parked and events come, it looks every
CHECK_SECONDS). A thread that ends its event while another running thread is not blocked
parks itself: that one takes the next event. A request that blocks delays the ones ready
behind it by BLOCKED_AFTER + CHECK_SECONDS at most (a CPU-bound one: RUNNABLE_BLOCKED_AFTER +
CHECK_SECONDS), then runs in parallel with them as before.

The decisions are plain methods on recorded times and thread states (``clock`` and
``runnable`` are injected), so they are tested in-process; the only blocking call is ``park()``.
"""

import os
import threading
import time

# A request served for this long, its thread asleep, is waiting on something.
BLOCKED_AFTER = 0.001
# A thread still runnable after serving one event this long (CPU-bound work, or a machine too
# busy to run it) is taken as blocked too, so a long computation still lets another thread
# serve the requests ready behind it (sharing the GIL with it, as without the gate). Longer
# than the scheduler keeps a thread off its CPU (a few slices of a few ms each on a busy
# machine): under CPU contention a pool thread is often off its CPU for over BLOCKED_AFTER,
# and a second thread let in then cost the worker its fair share of the CPU against its
# siblings (hello at 1000 connections, 2 workers: 325 admissions in 5 s, p99 76-95 ms
# against 47-63 ms with one thread; none since).
RUNNABLE_BLOCKED_AFTER = 0.02
# How often the main thread looks while threads are parked and events come: a thread blocked
# at B (BLOCKED_AFTER into its event) is seen by B + CHECK_SECONDS. Each look takes the GIL
# from the running pool thread, which must then wait to be scheduled again: on a busy machine
# that is a tail. (hello at 1000 connections, 2 workers, 6 rounds: p99 75 ms against gevent's
# 54 looking when each event could first be blocked, about every millisecond; 60 against 56
# every 5 ms; 51 against 61 with --threads 1, which never looks.)
CHECK_SECONDS = 0.005
# With no event for this long, the main thread stops looking; the next event wakes it (a pipe
# write). Looking costs a wake-up every CHECK_SECONDS, waking costs about three system calls.
QUIET_SECONDS = 0.005


class ThreadGate:
    """``busy[i]``: when pool thread i began its current event (0.0: it is polling or parked).
    ``running``: the threads admitted to take events."""

    def __init__(self, nthreads: int, clock=time.monotonic, runnable=None):
        self.nthreads = nthreads
        self.clock = clock
        # runnable(i): is pool thread i on a CPU or waiting for one (not asleep)?
        self.runnable = runnable if runnable is not None else self._runnable
        self.native_ids = [0] * nthreads  # (register: each pool thread's own)
        self.busy = [0.0] * nthreads
        self.running = {0}
        self.closed = False
        self.events = 0  # events begun (a change, not an exact count: threads add racily)
        # The main thread stopped looking; what wakes it (a pipe write from a pool thread):
        self.dozing = False  # no events lately: the next event begun, or a thread parking
        self.all_run = False  # every thread runs (none to admit): only a thread parking
        self._seen_events = 0
        self._quiet_since = clock()
        self._lock = threading.Lock()
        # One binary semaphore per thread: locked while it has no admission to consume.
        self._wake = [threading.Lock() for _ in range(nthreads)]
        for lock in self._wake:
            lock.acquire()

    def _taking(self, i: int, now: float) -> bool:
        """Thread i (running) can take the next event: it is polling, or not blocked."""
        began = self.busy[i]
        if began == 0.0:
            return True
        served = now - began
        if served < BLOCKED_AFTER:
            return True
        return served < RUNNABLE_BLOCKED_AFTER and self.runnable(i)

    def register(self, i: int) -> None:
        """Called by pool thread i as it starts: where its scheduling state can be read."""
        self.native_ids[i] = threading.get_native_id()

    def _runnable(self, i: int) -> bool:
        """Thread i's state in /proc is R (running or runnable). Only read for a thread that
        has served one event for over BLOCKED_AFTER. Where it cannot be read (not Linux, or
        not registered), False: such a thread is blocked after BLOCKED_AFTER, as before."""
        tid = self.native_ids[i]
        if not tid:
            return False
        try:
            fd = os.open(f"/proc/self/task/{tid}/stat", os.O_RDONLY)
        except OSError:
            return False
        try:
            stat = os.read(fd, 512)
        except OSError:
            return False
        finally:
            os.close(fd)
        # "tid (comm) S ...": comm may hold spaces and parentheses; the state follows the last.
        # (A thread waiting for the GIL is asleep too; but os.open and os.read release it, so
        # such a thread is mostly running again when its state is read: 0 admissions measured.)
        end = stat.rfind(b")")
        return end >= 0 and stat[end + 2:end + 3] == b"R"

    # -- pool threads ----------------------------------------------------------------------

    def should_park(self, i: int) -> bool:
        """Thread i ended its event: True (and out of ``running``) if another running thread
        can take the next event, so this one parks."""
        if len(self.running) < 2:
            return False
        with self._lock:
            now = self.clock()
            for j in self.running:
                if j != i and self._taking(j, now):
                    self.running.discard(i)
                    return True
            return False

    def park(self, i: int) -> None:
        """Wait until the main thread admits thread i again (or the gate closes)."""
        self._wake[i].acquire()

    # -- the main thread -------------------------------------------------------------------

    def rebalance(self) -> int | None:
        """Admit a parked thread if every running one is blocked; returns its index."""
        with self._lock:
            if self.closed or len(self.running) >= self.nthreads:
                return None
            now = self.clock()
            for j in self.running:
                if self._taking(j, now):
                    return None
            i = next(j for j in range(self.nthreads) if j not in self.running)
            self.running.add(i)
            self._wake[i].release()
            return i

    def check_in(self) -> float | None:
        """After rebalance: seconds until the main thread should look again, or None when it
        need not. With every thread running (always so with one thread) there is none to
        admit: it waits (``all_run``) until a pool thread parks; an event begun then must not
        wake it, or every event costs a pipe write and a wake-up of the main thread. With no
        event for QUIET_SECONDS it dozes (``dozing``): the next pool thread that begins an
        event or parks wakes it."""
        if self.closed:
            return None
        if len(self.running) >= self.nthreads:
            self.all_run = True
            # should_park takes a thread out of running, then its caller reads all_run: one of
            # the two sees the other's write.
            if len(self.running) >= self.nthreads:
                return None
            self.all_run = False
        now = self.clock()
        if self._active():
            self._quiet_since = now
            return CHECK_SECONDS
        if now - self._quiet_since < QUIET_SECONDS:
            return CHECK_SECONDS
        self.dozing = True
        # A pool thread sets busy, then reads dozing; this sets dozing, then reads busy: one of
        # the two sees the other's write, so an event that began just now is not missed.
        if self._active():
            self.dozing = False
            return CHECK_SECONDS
        return None

    def _active(self) -> bool:
        """Did an event begin since the last look, or is one being served?"""
        events = self.events
        if events != self._seen_events:
            self._seen_events = events
            return True
        with self._lock:
            return any(self.busy[j] for j in self.running)

    def close(self) -> None:
        """Every parked thread returns from park() (the worker is stopping)."""
        with self._lock:
            self.closed = True
            for j in range(self.nthreads):
                if j not in self.running:
                    self.running.add(j)
                    self._wake[j].release()

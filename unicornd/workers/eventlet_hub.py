"""eventlet's epoll hub, with a connection's fd registered once for the connection's life.

eventlet waits for a socket with ``trampoline()``: a listener added to the hub (epoll_ctl ADD),
a timer on the hub's heap for the timeout, a switch to the hub, then the listener removed
(epoll_ctl DEL) and the timer cancelled. On a kept-alive connection that is two epoll_ctl calls
and a timer per request. Here a connection's waits go through a ``Watch`` instead:

- its fd stays in the epoll set (level-triggered, as eventlet's own) from its first wait until
  the connection closes. An event that nobody takes (the connection's greenlet is busy, the app
  has not read its body yet) unregisters the fd, so the hub never spins on it; the next wait
  registers it again.
- a wait's timeout is a deadline in a dict; one hub timer, at the earliest deadline, expires
  whatever is due (at most SWEEP_GRANULARITY late when many fall due together).
- the hub's poll loop switches straight into the waiting greenlet.

eventlet's own listeners (a green socket's recv/send, the app's green threads) still work on a
watched fd: they share its registration (``add``/``register`` compute the mask from both).
A watched fd that eventlet learns was reused (``mark_as_reopened``: the app closed the socket,
a new one got its number) is dropped, so a closed and reused fd gets no stale events.
"""

import errno
import sys
import time

from greenlet import getcurrent

from eventlet.hubs import epolls, hub as basehub

READ = basehub.READ
WRITE = basehub.WRITE
SWEEP_GRANULARITY = 0.01  # seconds between two sweeps of the wait deadlines, at least
_INF = float("inf")


# What of eventlet's hub this one builds on (not all of it public): an eventlet whose hub lacks
# one of them gets its own hub, which works everywhere, an epoll_ctl pair per wait dearer.
# (Its masks, listeners and poll object are made in __init__: Hub() checks those.)
_HUB_METHODS = ("schedule_call_global", "squelch_exception", "squelch_generic_exception",
                "remove_descriptor", "_obsolete", "register", "add", "block_detect_pre",
                "block_detect_post")
_HUB_ATTRIBUTES = ("listeners", "poll", "READ_MASK", "WRITE_MASK", "EXC_MASK", "SYSTEM_EXCEPTIONS",
                   "debug_blocking")


def is_available() -> bool:
    return epolls.is_available() and all(hasattr(epolls.Hub, name) for name in _HUB_METHODS)


class Watch:
    """One connection's fd: ``wait(timeout)`` (True once readable, False after timeout
    seconds), ``close()`` before the socket is closed (the greenlet worker's ``readable``)."""

    __slots__ = ("hub", "fd", "waiter", "armed", "mask", "closed", "plain")

    def __init__(self, hub, fd):
        self.hub = hub
        self.fd = fd
        self.waiter = None  # the greenlet waiting for this fd to be readable
        self.armed = False  # read interest wanted (False after an event nobody took)
        self.mask = 0  # what the epoll set holds for fd now (0: not registered)
        self.closed = False
        self.plain = None  # a greenlet seen waiting here without a switch_out (eventlet's hook)

    def wait(self, timeout) -> bool:
        if self.closed:
            return True  # (the caller's read finds out what happened to the socket)
        if timeout is not None and timeout <= 0:
            # A trampoline with timeout 0 timed out before the hub polled again, too.
            return False
        hub = self.hub
        if not self.armed:
            self.armed = True
            if not hub.update(self):
                return True  # the fd is gone: let the caller's read say so
        current = getcurrent()
        self.waiter = current
        if timeout is not None:
            deadline = hub.clock() + timeout
            hub.sleepers[self] = deadline
            if deadline < hub.sweep_at:
                hub._schedule_sweep(deadline)
        try:
            # True from the poll loop, False from the sweep; anything else (a stray switch)
            # counts as readable: every caller reads without blocking next.
            loop = hub.greenlet
            if current.parent is loop and current is self.plain and not loop.dead:
                # What eventlet's hub.switch() would do for this greenlet: nothing but the
                # switch (its parent is the hub's greenlet already, it has no switch_out).
                return loop.switch() is not False
            if getattr(current, "switch_out", None) is None:
                self.plain = current
            return hub.switch() is not False
        finally:
            self.waiter = None
            if timeout is not None:
                hub.sleepers.pop(self, None)

    def close(self) -> None:
        self.hub.unwatch(self)


class Hub(epolls.Hub):
    def __init__(self, clock=None):
        super().__init__(clock=clock)
        missing = [name for name in _HUB_ATTRIBUTES if not hasattr(self, name)]
        if missing:
            raise RuntimeError(f"eventlet's epoll hub has no {', '.join(missing)}, which "
                               "unicornd's eventlet hub needs")
        self.watched = {}  # fd -> Watch
        self.sleepers = {}  # Watch -> deadline of its waiter
        self.sweep_at = _INF
        self.sweep_timer = None
        self.turns = 0  # polls so far (the greenlet worker's hub_turns)
        self._read_exc = self.READ_MASK | self.EXC_MASK
        self._write_exc = self.WRITE_MASK | self.EXC_MASK

    # -- watches ---------------------------------------------------------------------------

    def watch(self, fd) -> Watch:
        w = Watch(self, fd)
        old = self.watched.get(fd)
        if old is not None:
            self.drop(old)  # its socket was closed without close(): stale
        self.watched[fd] = w
        return w

    def update(self, w) -> bool:
        """Make the epoll set hold what ``w`` and eventlet's listeners on its fd want; False if
        the fd is no longer open."""
        fd = w.fd
        mask = 0
        if w.armed or self.listeners[READ].get(fd):
            mask = self._read_exc
        if self.listeners[WRITE].get(fd):
            mask |= self._write_exc
        if mask == w.mask:
            return True
        poll = self.poll
        try:
            if not mask:
                poll.unregister(fd)
            elif not w.mask:
                try:
                    poll.register(fd, mask)
                except FileExistsError:  # left there by someone: take it over
                    poll.modify(fd, mask)
            else:
                try:
                    poll.modify(fd, mask)
                except FileNotFoundError:  # taken out by someone: put it back
                    poll.register(fd, mask)
        except (OSError, ValueError):
            w.mask = 0
            return False
        w.mask = mask
        return True

    def unwatch(self, w) -> None:
        """The connection is closing its socket: take fd out of the epoll set, unless an
        eventlet listener still waits on it (the app's reader of a socket it took over)."""
        if w.closed:
            return
        w.closed = True
        fd = w.fd
        if self.watched.get(fd) is w:
            del self.watched[fd]
        if w.mask:
            w.armed = False
            try:
                # eventlet's own: the mask of its listeners on fd, or unregister.
                epolls.Hub.register(self, fd)
            except (OSError, ValueError):
                pass
            w.mask = 0

    def drop(self, w) -> None:
        """fd was closed behind the watch's back (and maybe reused): forget it without touching
        the epoll set, whose entry for fd (if any) is no longer the watch's; wake its waiter."""
        w.closed = True
        w.mask = 0
        if self.watched.get(w.fd) is w:
            del self.watched[w.fd]
        self._wake_soon(w)

    def _wake_soon(self, w) -> None:
        """Wake w's waiter (True: its read says what became of the socket) from the hub's next
        turn, unless something else has woken it by then."""
        waiter = w.waiter
        if waiter is not None:
            self.schedule_call_global(0, self._wake, w, waiter)

    @staticmethod
    def _wake(w, waiter) -> None:
        if w.waiter is waiter:
            w.waiter = None
            waiter.switch(True)

    # -- deadlines -------------------------------------------------------------------------

    def add_deadline(self, w, deadline) -> None:
        self.sleepers[w] = deadline
        if deadline < self.sweep_at:
            self._schedule_sweep(deadline)

    def _schedule_sweep(self, at) -> None:
        if self.sweep_timer is not None:
            self.sweep_timer.cancel()
        self.sweep_at = at
        self.sweep_timer = self.schedule_call_global(max(0.0, at - self.clock()), self._sweep)

    def _sweep(self) -> None:
        self.sweep_timer = None
        self.sweep_at = _INF
        now = self.clock()
        sleepers = self.sleepers
        due = [w for w, deadline in sleepers.items() if deadline <= now]
        for w in due:
            deadline = sleepers.get(w)
            if deadline is None or deadline > now:
                continue  # woken meanwhile (and waiting again)
            del sleepers[w]
            waiter = w.waiter
            if waiter is not None:
                w.waiter = None
                try:
                    waiter.switch(False)
                except self.SYSTEM_EXCEPTIONS:
                    raise
                except BaseException:
                    self.squelch_generic_exception(sys.exc_info())
        if sleepers:
            nearest = max(min(sleepers.values()), now + SWEEP_GRANULARITY)
            if nearest < self.sweep_at:
                self._schedule_sweep(nearest)

    # -- eventlet's hub interface, aware of the watches -----------------------------------------

    def add(self, evtype, fileno, cb, tb, mac):
        w = self.watched.get(fileno)
        if w is None:
            return super().add(evtype, fileno, cb, tb, mac)
        listener = basehub.BaseHub.add(self, evtype, fileno, cb, tb, mac)
        if not self.update(w):
            # As eventlet's: a listener on a bad fd is not kept.
            basehub.BaseHub.remove(self, listener)
            raise OSError(errno.EBADF, "Bad file descriptor")
        return listener

    def register(self, fileno, new=False):
        w = self.watched.get(fileno)
        if w is None:
            return super().register(fileno, new)
        self.update(w)

    def remove_descriptor(self, fileno):
        # eventlet gives up on fd (a listener's callback raised): it leaves the epoll set. The
        # socket may still be good: its watch registers it again at its next wait.
        w = self.watched.get(fileno)
        if w is not None:
            w.mask = 0
            w.armed = False
            self._wake_soon(w)
        super().remove_descriptor(fileno)

    def _obsolete(self, fileno):
        w = self.watched.get(fileno)
        if w is not None:
            self.drop(w)
        return super()._obsolete(fileno)

    def wait(self, seconds=None):
        self.turns += 1
        readers = self.listeners[READ]
        writers = self.listeners[WRITE]
        watched = self.watched
        if not readers and not writers and not watched:
            if seconds:
                time.sleep(seconds)
            return
        try:
            presult = self.poll.poll(seconds)
        except InterruptedError:
            return
        if self.debug_blocking:
            self.block_detect_pre()
        read_mask = self.READ_MASK
        write_mask = self.WRITE_MASK
        exc_mask = self.EXC_MASK
        read_exc = self._read_exc
        write_exc = self._write_exc
        callbacks = set()
        woken = []
        for fileno, event in presult:
            w = watched.get(fileno)
            if w is not None:
                if event & read_exc:
                    reader = readers.get(fileno)
                    if reader is not None:
                        callbacks.add((reader, fileno))
                    if w.waiter is not None:
                        woken.append(w)
                    elif reader is None and w.armed:
                        # Nobody takes it: stop polling fd (level-triggered, it would be
                        # reported on every poll) until the next wait.
                        w.armed = False
                        self.update(w)
                if event & write_exc:
                    writer = writers.get(fileno)
                    if writer is not None:
                        callbacks.add((writer, fileno))
                    elif w.mask & write_mask:
                        self.update(w)
                continue
            # eventlet's poll hub, for the fds it alone watches
            if event & read_mask:
                callbacks.add((readers.get(fileno, basehub.noop), fileno))
            if event & write_mask:
                callbacks.add((writers.get(fileno, basehub.noop), fileno))
            if event & exc_mask:
                callbacks.add((readers.get(fileno, basehub.noop), fileno))
                callbacks.add((writers.get(fileno, basehub.noop), fileno))

        SYSTEM_EXCEPTIONS = self.SYSTEM_EXCEPTIONS
        for listener, fileno in callbacks:
            try:
                listener.cb(fileno)
            except SYSTEM_EXCEPTIONS:
                raise
            except BaseException:
                self.squelch_exception(fileno, sys.exc_info())
        for w in woken:
            waiter = w.waiter
            if waiter is not None:  # (not woken by something else meanwhile)
                w.waiter = None
                try:
                    waiter.switch(True)
                except SYSTEM_EXCEPTIONS:
                    raise
                except BaseException:
                    self.squelch_generic_exception(sys.exc_info())

        if self.debug_blocking:
            self.block_detect_post()

"""The gevent worker: ``-k gevent`` (gunicorn's ``gunicorn.workers.ggevent.GeventWorker``).

Only the gevent adapter; the worker itself is ``unicornd.workers.greenlet``.
"""

import os

try:
    import gevent
    import gevent.lock
    import gevent.socket
    from greenlet import getcurrent
except ImportError as exc:  # reported by load_worker_class with the extra to install
    raise ImportError(str(exc), name="gevent") from None

from unicornd.workers.greenlet import GreenletWorker


class _Readable:
    """One connection's waits for input. Each wait starts the connection's io watcher (made
    once) and a timer, both calling the waiting greenlet's switch, and switches to the hub:
    gevent's wait_on_watcher would make a Timeout (a Python object around a timer, started
    and cancelled in Python) and a Waiter for every wait, which cost more than the rest of
    the wait together (a microbenchmark: 7-9 us a wait against 3.7 us). No timer at all, the
    deadlines swept by the main greenlet's tick, would save less than it costs: a deadline to
    compute and register for every wait (~0.3 us) against the timer (~0.4 us), and 408s and
    keep-alive closes a second late."""

    __slots__ = ("io", "hub", "timer")

    def __init__(self, io, hub):
        self.io = io
        self.hub = hub
        self.timer = hub.loop.timer

    def wait(self, timeout) -> bool:
        switch = getcurrent().switch
        io = self.io
        # A new timer for each wait: made, started and closed in C it costs ~0.4 us. (A
        # libev timer fixed at one delay cannot simply be restarted: once fired or stopped it
        # keeps only what was left of it. A repeating one restarted with again() can, for
        # ~0.2 us less a wait, at the price of a special case for a wait of 0.)
        # Priority below the io watcher's: when both fire in one turn of the loop (a wait of
        # 0 on a readable socket), input wins, as with gevent's Timeout (priority -1 too).
        timer = self.timer(timeout, priority=-1)
        io.start(switch, True)
        # update: measured from now, not from the loop's clock of this turn's start, which
        # may be well behind after other greenlets ran (the timeout never comes early; as
        # gevent's Timeout does).
        timer.start(switch, False, update=True)
        try:
            # Back here when the io watcher (True) or the timer (False) fires, or with the
            # exception of a kill. Both are stopped before anything else runs in this
            # greenlet, so neither can switch into it later (stopping a watcher also drops
            # its call if it fired in the same turn of the loop).
            return self.hub.switch()
        finally:
            io.stop()
            timer.close()

    def close(self) -> None:
        self.io.close()


class GeventWorker(GreenletWorker):
    library = "gevent"

    def spawn(self, fn, *args):
        return gevent.spawn_raw(fn, *args)

    def kill(self, green) -> None:
        gevent.kill(green)

    def sleep(self, seconds) -> None:
        gevent.sleep(seconds)

    def wait_read(self, fd, timeout) -> bool:
        try:
            gevent.socket.wait_read(fd, timeout)
            return True
        except gevent.socket.timeout:
            return False

    def readable(self, fd):
        # One io watcher for all of a connection's waits: gevent.socket.wait_read would
        # make (and check the fd of: an fcntl) a new one for every request.
        return _Readable(self._loop.io(fd, 1), self._hub)

    def wait_write(self, fd, timeout) -> bool:
        try:
            gevent.socket.wait_write(fd, timeout)
            return True
        except gevent.socket.timeout:
            return False

    def semaphore(self, n):
        return gevent.lock.Semaphore(n)

    def green_socket(self, sock):
        return gevent.socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))

    def hub_turns(self) -> int:
        return self._loop.iteration

    def after_fork(self) -> None:
        # (libev then checks for a fork with a getpid() at every turn of the loop: gevent
        # sets EVFLAG_FORKCHECK on every loop it makes, whatever flags it is given.)
        gevent.reinit()
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop

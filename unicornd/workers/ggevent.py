"""The gevent worker: ``-k gevent`` (gunicorn's ``gunicorn.workers.ggevent.GeventWorker``).

Only the gevent adapter; the worker itself is ``unicornd.workers.greenlet``.
"""

import os

try:
    import gevent
    import gevent.lock
    import gevent.socket
    from gevent._hub_primitives import wait_on_watcher
except ImportError as exc:  # reported by load_worker_class with the extra to install
    raise ImportError(str(exc), name="gevent") from None

from unicornd.workers.greenlet import GreenletWorker


class _Readable:
    __slots__ = ("io", "hub")

    def __init__(self, io, hub):
        self.io = io
        self.hub = hub

    def wait(self, timeout) -> bool:
        try:
            wait_on_watcher(self.io, timeout, gevent.socket.timeout, self.hub)
            return True
        except gevent.socket.timeout:
            return False

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
        gevent.reinit()
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop

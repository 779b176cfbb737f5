"""The gevent worker: ``-k gevent`` (gunicorn's ``gunicorn.workers.ggevent.GeventWorker``).

Only the gevent adapter; the worker itself is ``unicornd.workers.greenlet``.
"""

import os

try:
    import gevent
    import gevent.lock
    import gevent.socket
except ImportError as exc:  # reported by load_worker_class with the extra to install
    raise ImportError(str(exc), name="gevent") from None

from unicornd.workers.greenlet import GreenletWorker


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
        self._loop = gevent.get_hub().loop

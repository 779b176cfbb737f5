"""The eventlet worker: ``-k eventlet`` (gunicorn 23's ``gunicorn.workers.geventlet.EventletWorker``).

Only the eventlet adapter; the worker itself is ``unicornd.workers.greenlet``.
"""

import os
import socket
import warnings

try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # "Eventlet is deprecated"
        import eventlet
    import eventlet.greenthread
    import eventlet.hubs
    from eventlet.hubs import epolls
    import eventlet.semaphore
    from eventlet.green import socket as green
    from eventlet.greenio.base import socket_accept
except ImportError as exc:  # reported by load_worker_class with the extra to install
    raise ImportError(str(exc), name="eventlet") from None

from unicornd.workers import eventlet_hub
from unicornd.workers.greenlet import GreenletWorker

RELEASE_TURNS = 10  # hub turns a taken-over socket's other reader gets to see its EOF


class _Listener(green.socket):
    """A listening socket whose accept() waits on an eventlet_hub Watch: its fd stays in the
    hub's epoll set while it lives, instead of being added and removed around every wait for
    the next connection (eventlet's accept trampolines)."""

    def __init__(self, hub, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._watch = hub.watch(self.fd.fileno())
        self.close = self._close  # (GreenSocket binds close to the plain socket's)

    def _close(self):
        self._watch.close()  # before the fd goes: its number may be reused at once
        self.fd.close()

    def accept(self):
        if self.act_non_blocking:
            return super().accept()
        fd = self.fd
        while True:
            accepted = socket_accept(fd)
            if accepted is not None:
                client, addr = accepted
                eventlet.hubs.notify_opened(client.fileno())
                client.setblocking(False)
                # (already non-blocking: GreenSocket would make it so a second time)
                return green.socket(client, set_nonblocking=False), addr
            if not self._watch.wait(self.gettimeout()):
                raise socket.timeout("timed out")


class EventletWorker(GreenletWorker):
    library = "eventlet"
    _hub = None  # eventlet_hub's, once forked (None: eventlet's own hub, waits by trampoline)

    def spawn(self, fn, *args):
        return eventlet.greenthread.spawn_n(fn, *args)

    def kill(self, green) -> None:
        eventlet.greenthread.kill(green)

    def sleep(self, seconds) -> None:
        eventlet.sleep(seconds)

    def wait_read(self, fd, timeout) -> bool:
        try:
            eventlet.hubs.trampoline(fd, read=True, timeout=timeout, timeout_exc=socket.timeout)
            return True
        except socket.timeout:
            return False

    def readable(self, fd):
        if self._hub is None:
            return super().readable(fd)
        # The fd stays registered with the hub's epoll for the connection's life: no
        # epoll_ctl and no hub timer per wait (eventlet_hub).
        return self._hub.watch(fd)

    def wait_write(self, fd, timeout) -> bool:
        try:
            eventlet.hubs.trampoline(fd, write=True, timeout=timeout, timeout_exc=socket.timeout)
            return True
        except socket.timeout:
            return False

    def semaphore(self, n):
        return eventlet.semaphore.Semaphore(n)

    def green_socket(self, sock):
        fd = os.dup(sock.fileno())
        if self._hub is None:
            return green.socket(sock.family, sock.type, sock.proto, fileno=fd)
        return _Listener(self._hub, sock.family, sock.type, sock.proto, fileno=fd)

    def settle_taken_over(self, sock) -> None:
        # A green thread of the app (simple-websocket's reader) may still wait on this socket;
        # eventlet would wake it on close() with an error such libraries do not expect
        # (IOClosed, then EOFError). The socket is shut down by now: let that reader see EOF.
        if sock.fileno() < 0:
            return
        hub = eventlet.hubs.get_hub()
        readers = hub.listeners[hub.READ]
        fd = sock.fileno()
        for _ in range(RELEASE_TURNS):
            if fd not in readers:
                return
            eventlet.sleep(0)

    def hub_turns(self) -> int:
        if self._hub is not None:
            return self._hub.turns
        return self._polls

    def after_fork(self) -> None:
        # A hub of its own, not the master's epoll: eventlet's epoll hub with watches
        # (eventlet_hub), unless EVENTLET_HUB chose another one (then eventlet's, as chosen).
        self._hub = None
        chosen = os.environ.get("EVENTLET_HUB")
        if chosen in (None, "epolls") and eventlet.hubs.get_default_hub() is epolls \
                and eventlet_hub.is_available():
            eventlet.hubs.use_hub(eventlet_hub)
            try:
                self._hub = eventlet.hubs.get_hub()
                return
            except RuntimeError as exc:  # an eventlet whose hub is built otherwise
                self.log.warning("%s: eventlet's own epoll hub is used", exc)
        eventlet.hubs.use_hub()
        # eventlet keeps no count of its polls: count the hub's calls to its wait().
        self._polls = 0
        hub = eventlet.hubs.get_hub()
        poll = hub.wait

        def counted_wait(seconds=None):
            self._polls += 1
            return poll(seconds)
        hub.wait = counted_wait

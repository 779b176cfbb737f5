"""The master's side of metrics: its small HTTP server, restart counts, statsd gauges.

``metrics_bind`` (``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH``) serves ``GET /metrics``
(Prometheus text), ``GET /status`` (JSON, what ``unicornd status`` prints), ``GET /healthz``
(200 whenever the loop answers: liveness) and ``GET /readyz`` (200 or 503, the rule in
master/readiness.py). With a pid file,
the same is served on a Unix socket next to it, ``PIDFILE.sock``, mode 0600 (owner only),
which is how ``unicornd status --pid PIDFILE`` finds a running master.

All of it runs inside the master's loop: the listening sockets are added to the loop's
select(); every socket is non-blocking; a client gets a few seconds to send its small request
and read the answer, then it is dropped. A scrape never blocks the loop.
"""

import atexit
import errno
import json
import os
import socket
import stat
import time
import weakref

from unicornd import __version__
from unicornd.master.scoreboard import BUSY
from unicornd.metrics import prometheus, statsd
from unicornd.config.metric_addresses import parse_metrics_bind as parse_bind
from unicornd.master.process import rss

MAX_CLIENTS = 16
CLIENT_SECONDS = 5.0
MAX_REQUEST = 8192
SOCKET_MODE = 0o600




def _bind_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # stale: its server is gone
            else:
                raise OSError(errno.EADDRINUSE, f"{path} is in use by a running server")
            finally:
                probe.close()
        old_umask = os.umask(0o177)  # created 0600: never a moment with wider permissions
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        sock.listen(16)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


def _bind_tcp(family, address) -> socket.socket:
    infos = socket.getaddrinfo(address[0], address[1], family, socket.SOCK_STREAM)
    sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(16)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise



class _Client:
    __slots__ = ("sock", "inbuf", "out", "deadline")

    def __init__(self, sock, deadline):
        self.sock = sock
        self.inbuf = b""
        self.out = None
        self.deadline = deadline


class _Server:
    """One listening socket: where it is, and whether it is bound yet."""

    def __init__(self, spec, family, address, name):
        self.spec, self.family, self.address, self.name = spec, family, address, name
        self.sock = None
        self.path = address if family == socket.AF_UNIX else None
        self.inode = None

    def bind(self):
        if self.family == socket.AF_UNIX:
            self.sock = _bind_unix(self.path)
            self.inode = os.stat(self.path).st_ino
        else:
            self.sock = _bind_tcp(self.family, self.address)

    def url(self):
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if self.family == socket.AF_INET6 else f"http://{host}:{port}"

    def close(self, unlink=True):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if unlink and self.path and self.inode is not None:
            try:
                if os.stat(self.path).st_ino == self.inode:
                    os.unlink(self.path)
            except OSError:
                pass
            self.inode = None


_INSTANCES = weakref.WeakSet()


def _close_in_child():
    for inst in list(_INSTANCES):
        inst.close(unlink=False)


os.register_at_fork(after_in_child=_close_in_child)


class MasterMetrics:
    """Owned by the master; every call is cheap and never raises into the loop."""

    def __init__(self, master):
        self.master = master
        self.log = master.log
        self.pid = os.getpid()
        self.restarts = {reason: 0 for reason in prometheus.RESTART_REASONS}
        self.servers = []
        self.clients = {}  # fd -> _Client
        self._cfg = None
        self.statsd = None
        self.log_counter = None
        self._next_gauge = 0.0
        self._retry_bind = 0.0
        self._warned = set()
        _INSTANCES.add(self)
        atexit.register(self.close)
        self._configure(master.cfg)
        if master.cfg.metrics_bind:
            family, address = parse_bind(master.cfg.metrics_bind)
            self.servers.append(_Server(master.cfg.metrics_bind, family, address, "metrics"))
        if master.pidfile is not None:
            path = master.pidfile.path + ".sock"
            self.servers.append(_Server(path, socket.AF_UNIX, path, "status"))
        for server in self.servers:
            self._bind(server, first=True)

    def _bind(self, server, first=False):
        try:
            server.bind()
        except OSError as exc:
            # A new master of an upgrade (USR2) binds once the old one has let go.
            if not (self.master.master_pid and exc.errno == errno.EADDRINUSE):
                if first:
                    raise OSError(exc.errno, f"Cannot serve {server.name} at {server.spec}: "
                                             f"{exc.strerror or exc}") from None
                return
            if server.spec not in self._warned:
                self._warned.add(server.spec)
                self.log.info("%s endpoint %s is in use (by the old master?); retrying",
                          server.name, server.spec)
            return
        self.log.info("Serving %s at: %s", "/metrics and /status" if server.name == "metrics"
                  else "the status socket", server.url())

    def _configure(self, cfg):
        self._cfg = cfg
        if self.statsd is not None:
            self.statsd.close()
        self.statsd = statsd.from_config(cfg)
        self.log_counter = statsd.ensure_log_counter(self.statsd, self.log_counter, self.log)

    # -- the loop --------------------------------------------------------------------------

    def fds(self):
        """(sockets to watch for reading, for writing) in the loop's select()."""
        rfds = [s.sock for s in self.servers if s.sock is not None] \
            if len(self.clients) < MAX_CLIENTS else []
        wfds = []
        for client in self.clients.values():
            (rfds if client.out is None else wfds).append(client.sock)
        return rfds, wfds

    def tick(self):
        """Once per loop turn: settings reloaded, statsd gauges, expired clients, binds."""
        try:
            master = self.master
            if master.cfg is not self._cfg:
                self._configure(master.cfg)  # a HUP: statsd settings may have changed
            elif self.statsd is not None:
                self.log_counter = statsd.ensure_log_counter(self.statsd, self.log_counter, self.log)
            now = time.monotonic()
            if self.statsd is not None and now >= self._next_gauge:
                self._next_gauge = now + 1.0
                self.statsd.gauge("gunicorn.workers", len(master.workers))
                if self._cfg.enable_backlog_metric:
                    queued = [prometheus.listen_queue(lst.sock) for lst in master.listeners]
                    self.statsd.histogram("gunicorn.backlog",
                                          sum(q[0] for q in queued if q is not None))
            for fd, client in list(self.clients.items()):
                if now > client.deadline:
                    self._drop(fd)
            if now >= self._retry_bind:
                self._retry_bind = now + 1.0
                for server in self.servers:
                    if server.sock is None:
                        self._bind(server)
                self._follow_pidfile()
        except Exception:
            self.log.exception("metrics: error in the master's tick")

    def _follow_pidfile(self):
        """The pid file was renamed (an upgraded master promoted): the socket follows it."""
        pidfile = self.master.pidfile
        for server in self.servers:
            if server.name != "status" or pidfile is None or server.sock is None:
                continue
            want = pidfile.path + ".sock"
            if server.path != want:
                try:
                    os.rename(server.path, want)
                    server.path = server.spec = server.address = want
                except OSError:
                    pass

    def handle(self, readable, writable):
        try:
            for sock in readable:
                server = next((s for s in self.servers if s.sock is sock), None)
                if server is not None:
                    self._accept(sock)
                elif sock.fileno() in self.clients:
                    self._read(self.clients[sock.fileno()])
            for sock in writable:
                client = self.clients.get(sock.fileno())
                if client is not None:
                    self._write(client)
        except Exception:
            self.log.exception("metrics: error serving a request")

    def _accept(self, lsock):
        while len(self.clients) < MAX_CLIENTS:
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            self.clients[sock.fileno()] = _Client(sock, time.monotonic() + CLIENT_SECONDS)

    def _read(self, client):
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client.sock.fileno())
            return
        client.inbuf += data
        if b"\r\n\r\n" in client.inbuf or b"\n\n" in client.inbuf:
            client.out = self._respond(client.inbuf)
            self._write(client)
        elif len(client.inbuf) > MAX_REQUEST:
            client.out = _response(431, "text/plain", b"request too large\n")
            self._write(client)

    def _write(self, client):
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(client.out)
        client.out = client.out[sent:]
        if not client.out:
            self._drop(client.sock.fileno())

    def _drop(self, fd):
        client = self.clients.pop(fd, None)
        if client is not None:
            client.sock.close()

    def _respond(self, raw: bytes) -> bytes:
        line = raw.split(b"\n", 1)[0].decode("latin-1").strip().split()
        if len(line) < 2:
            return _response(400, "text/plain", b"bad request\n")
        method, target = line[0], line[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return _response(405, "text/plain", b"GET only\n", head=False, extra="Allow: GET, HEAD\r\n")
        head = method == "HEAD"
        if target == "/metrics":
            return _response(200, prometheus.CONTENT_TYPE, self.prometheus_text().encode(), head)
        if target == "/status":
            body = json.dumps(self.status(), indent=None).encode() + b"\n"
            return _response(200, "application/json", body, head)
        if target == "/healthz":  # answered at all: the master's loop runs
            return _response(200, "text/plain", b"ok\n", head)
        if target == "/readyz":
            ready, why = self.master.readiness()
            return _response(200 if ready else 503, "text/plain",
                             f"{'ready' if ready else 'not ready'}: {why}\n".encode(), head)
        return _response(404, "text/plain",
                         b"not found: try /metrics, /status, /healthz or /readyz\n", head)

    # -- what is served --------------------------------------------------------------------

    def _live(self):
        board = self.master.scoreboard
        return [(pid, rec, board.read(rec.slot)) for pid, rec in list(self.master.workers.items())]

    def prometheus_text(self) -> str:
        master = self.master
        live = self._live()
        by_state = {}
        for _, _, view in live:
            by_state[view.state] = by_state.get(view.state, 0) + 1
        totals = master.scoreboard.totals([rec.slot for _, rec, _ in live])
        listeners = [(lst.url(master.scheme), lst.sock) for lst in master.listeners]
        return prometheus.render(totals, by_state, self.restarts, listeners, master.num_workers,
                                 master.model.scaling)

    def status(self) -> dict:
        master = self.master
        now = time.monotonic()
        workers = []
        for pid, rec, view in sorted(self._live(), key=lambda item: item[1].age):
            busy = view.state == BUSY
            workers.append({
                "pid": pid, "age": rec.age, "state": view.state_name, "requests": view.requests,
                "method": view.method if busy else None, "path": view.path if busy else None,
                "request_seconds": round(now - view.request_start, 3) if busy else None,
                "booted_seconds": round(now - view.boot_start, 3),
                "rss": rss(pid), "retiring": rec.retiring,
                "load": _share(master.model.scaling.loads.get(pid)),
            })
        totals = master.scoreboard.totals([rec.slot for _, rec, _ in self._live()])
        return {
            "master": {"pid": master.pid, "version": __version__, "proc_name": master.proc_name,
                       "worker_class": master.cfg.worker_class, "workers_target": master.num_workers,
                       "rss": rss(master.pid)},
            "requests": totals.by_status(),
            "restarts": dict(self.restarts),
            "workers": workers,
            "ready": dict(zip(("ready", "why"), master.readiness())),
            "scaling": master.model.scaling.status(now),
        }

    # -- restarts --------------------------------------------------------------------------

    def worker_ended(self, rec) -> None:
        """A worker is gone (reaped): count it as a restart if it was one."""
        from unicornd.master.lifecycle import restart_reason
        reason = restart_reason(rec, self.master.stopping)
        if reason is not None:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def close(self, unlink=True) -> None:
        for fd in list(self.clients):
            self._drop(fd)
        own = os.getpid() == self.pid
        for server in self.servers:
            server.close(unlink=unlink and own)
        if self.statsd is not None and own:
            self.statsd.close()


def _share(load):
    """A worker's load in the autoscaler's last sample (max_workers), or None."""
    return None if load is None else round(load, 2)


def _response(code, ctype, body, head=False, extra=""):
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
              431: "Request Header Fields Too Large", 503: "Service Unavailable"}[code]
    header = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
              f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return header.encode("latin-1") + (b"" if head else body)

"""``preload_app`` with code reload: a fork server (a template process) per generation.

The master never imports the app. With ``preload_app`` it forks, for each generation (each
``HUP`` makes one), a *fork server* that imports the app once, freezes the garbage
collector's view of it (``gc.freeze()``), says it is ready, then forks the generation's
workers on the master's request: they share the app's pages with it, copy-on-write. A
``HUP`` starts a new fork server with the new code and settings; the workers roll over to it
as in any reload; the old one is retired once the rollout is complete (it is kept while the
reload rolls, for a roll-back needs it).

How the master still supervises workers it did not fork: the master is a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``, Linux 3.4+). The fork server forks a short-lived middle
process, which forks the worker and exits at once: the orphaned worker is reparented to the
nearest subreaper, the master, which from then on is its parent in every respect: it gets
``SIGCHLD``, ``waitpid()`` gives it the exit status (boot failures, signals, exit codes go to
the lifecycle model as for any worker), ``kill()`` reaches it, and the worker's own checks
(``getppid()`` is the master; ``PR_SET_PDEATHSIG`` when the master dies) hold as before. The
alternatives were worse: a worker left as the fork server's child cannot be waited for by
the master (no exit status, and it would die with its fork server, so a fork server could
never be retired before its workers); polling pids (``kill(pid, 0)``, pidfds) gives no exit
status and races with pid reuse. The worker waits until it has been reparented (the middle
process's exit would otherwise fire its ``PR_SET_PDEATHSIG``) and until the master has
written its pid into its scoreboard slot (the master knows it: a worker whose fork server
died before answering exits instead of serving unsupervised), then boots as any worker.

What reaches a worker forked this way, and how:

- the listening sockets: sent by the master with every fork request (``SCM_RIGHTS``), so a
  worker listens on what the master listens on *now* (a ``HUP`` that adds or removes a
  ``bind`` entry, a roll-back to an older generation); the fork server holds none itself,
  so a socket the master closed is closed;
- the scoreboard: the shared mapping the fork server inherited from the master at its fork
  (it is mapped once, for the master's whole life); the slot is chosen by the master;
- the settings and the worker class: the generation's, which the fork server was forked with.

Where ``PR_SET_CHILD_SUBREAPER`` does not exist, ``preload_app`` loads the app in the master
as gunicorn does (cli.py), and a ``HUP`` keeps the code (a warning says so).

The message protocol, one datagram per message on a ``SOCK_SEQPACKET`` socket pair (JSON):
fork server -> master ``{"ready": pid}`` or ``{"failed": why}`` once; then, one reply per
request, master -> fork server ``{"age": n, "slot": n, "listeners": [...]}`` with the
listening sockets' fds, answered ``{"pid": worker pid}`` or ``{"error": why}``.
"""

import _socket
import array
import gc
import json
import os
import socket
import sys
import time
import traceback

from unicornd.app_loading import AppImportError, load_app
from unicornd.logging import reopen_log_files
from unicornd.master import rawos
from unicornd.master.lifecycle import PENDING
from unicornd.master.listeners import Listener
from unicornd.proctitle import set_title
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR, _set_parent_death_signal

signal = rawos.signal

LOADING, READY, GONE = "loading", "ready", "gone"
FORK_REPLY_SECONDS = 10.0     # a fork server that does not answer a fork request by then is stuck
REPARENT_SECONDS = 15.0       # a new worker waits this long at most to be the master's known child
_MAX_MESSAGE = 65536
_MAX_FDS = 256
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; False where impossible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _status_text(status) -> str:
    if status is None:
        return "with no known status"
    if os.WIFSIGNALED(status):
        try:
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"killed by signal {os.WTERMSIG(status)}"
    return f"with code {os.WEXITSTATUS(status)}"


class ForkServer:
    """The master's handle on one fork server."""

    __slots__ = ("gen", "pid", "sock", "state", "started_at", "eof")

    def __init__(self, gen, pid, sock, now):
        self.gen = gen
        self.pid = pid
        self.sock = sock          # the master's end of the socket pair
        self.state = LOADING
        self.started_at = now
        self.eof = False          # it closed its end (exited): nothing more to read

    def __repr__(self):
        return f"<ForkServer {self.pid} g{self.gen.number} {self.state}>"

    def receive(self):
        """A message it sent, without waiting: a dict, or None if there is none (yet)."""
        try:
            data = self.sock.recv(_MAX_MESSAGE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return None
        return json.loads(data)

    def fork_worker(self, age, slot, listeners):
        """Ask for a worker; its pid, or a string saying why there is none."""
        meta = [[lst.kind, _path_out(lst.path), lst.spec, lst.timeouts_from_listen]
                for lst in listeners]
        request = json.dumps({"age": age, "slot": slot, "listeners": meta}).encode()
        fds = array.array("i", [lst.fileno() for lst in listeners])
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)] if fds else []
        try:
            self.sock.sendmsg([request], ancillary)
            ready, _, _ = rawos.select([self.sock], [], [], FORK_REPLY_SECONDS)
            if not ready:
                return f"no answer to a fork request in {FORK_REPLY_SECONDS:.0f} s"
            data = self.sock.recv(_MAX_MESSAGE)
        except OSError as exc:
            return f"the fork request failed: {exc}"
        if not data:
            self.eof = True
            return "it exited"
        reply = json.loads(data)
        return reply["pid"] if "pid" in reply else reply.get("error", "no pid")


class ForkServers:
    """The master's fork servers, one per generation in use: started on the first spawn of a
    generation with ``preload_app``, retired when the generation is neither the current one
    nor the one a rolling reload may roll back to."""

    def __init__(self, master):
        self.master = master
        # Whether workers can be reparented to the master: None until a generation with
        # preload_app first needs it (the master becomes a subreaper only then); False when
        # the app was preloaded in the master itself (no subreaper: cli.py).
        self.enabled = None
        self.by_gen = {}               # Generation -> ForkServer (loading or ready)
        self.by_pid = {}               # pid -> ForkServer, until it is reaped

    def serves(self, gen) -> bool:
        if not getattr(gen.cfg, "preload_app", False):
            return False
        if self.enabled is None:
            self.enabled = become_subreaper()
            if not self.enabled:
                self.master.log.warning(
                    "preload_app: this system cannot reparent workers to the master "
                    "(PR_SET_CHILD_SUBREAPER, Linux): each worker imports the app itself")
        return self.enabled

    # -- the process layer's spawn, for a generation served by a fork server ---------------

    def spawn(self, gen):
        """(pid, slot, worker); PENDING while the generation's fork server loads the app
        (started now if there is none); None when the fork failed."""
        server = self.by_gen.get(gen)
        if server is None:
            return self._start(gen)
        if server.state != READY:
            return PENDING
        master = self.master
        cfg = gen.cfg
        age = master.model.age + 1
        slot = master.scoreboard.allocate()
        # The master's own Worker object: pre_fork and child_exit receive it, as they would
        # without a fork server. The worker process makes its own, with the same age and slot.
        worker = gen.worker_class(age, master.pid, master.listeners, cfg, master.log,
                                  slot=master.scoreboard.writer(slot))
        cfg.pre_fork(master, worker)
        result = server.fork_worker(age, slot, master.listeners)
        if not isinstance(result, int):
            master.scoreboard.release(slot)
            master.log.error("Fork server %s could not fork a worker: %s; it is replaced",
                             server.pid, result)
            self._retire(server, kill=True)
            return None
        worker.pid = result
        master.scoreboard.assign(slot, result)
        return result, slot, worker

    def _start(self, gen):
        master = self.master
        try:
            ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        except OSError as exc:
            master.log.error("Cannot start a fork server: %s; retrying shortly", exc)
            return None
        # Held back across fork, as for a worker: the fork server resets the master's
        # handlers before it takes signals.
        signal.pthread_sigmask(signal.SIG_BLOCK, master.signal_numbers)
        try:
            pid = rawos.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, master.signal_numbers)
            ours.close()
            theirs.close()
            master.log.error("fork() failed: %s; retrying shortly", exc)
            return None
        if pid == 0:
            ours.close()
            _run_fork_server(master, gen, theirs)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, master.signal_numbers)
        theirs.close()
        server = ForkServer(gen, pid, ours, time.monotonic())
        self.by_gen[gen] = server
        self.by_pid[pid] = server
        master.log.info("Started fork server (pid %s) to load the app for generation %d",
                        pid, gen.number)
        return PENDING

    # -- events from the master's loop -------------------------------------------------------

    def fds(self):
        """What the master's loop waits on besides its own: fork servers still loading."""
        return [s.sock.fileno() for s in self.by_gen.values() if s.state == LOADING and not s.eof]

    def readable(self, fds) -> None:
        for server in list(self.by_gen.values()):
            if server.sock.fileno() in fds and server.state == LOADING:
                self._receive(server)

    def _receive(self, server) -> None:
        message = server.receive()
        if message is None:
            return
        log = self.master.log
        if "ready" in message:
            server.state = READY
            log.info("Fork server (pid %s) has loaded the app (generation %d) in %.1f s",
                     server.pid, server.gen.number, time.monotonic() - server.started_at)
            self.master.model.step()  # the workers waiting for it are forked now
        elif "failed" in message:
            self._drop(server)
            self.master.model.template_failed(server.gen, message["failed"])

    def exited(self, pid, status) -> bool:
        """A reaped child: True if it was a fork server (then it is dealt with here)."""
        server = self.by_pid.pop(pid, None)
        if server is None:
            return False
        if server.state == LOADING and self.by_gen.get(server.gen) is server:
            self._receive(server)  # it may have said why before it went
        if self.by_gen.get(server.gen) is server:
            self._drop(server)
            how = _status_text(status)
            if server.state == LOADING:
                self.master.model.template_failed(
                    server.gen, f"exited {how} before it had loaded the app")
            else:
                self.master.log.error("Fork server (pid %s) of generation %d exited %s; a new "
                                      "one starts when a worker is next needed", pid,
                                      server.gen.number, how)
        server.sock.close()
        return True

    def tick(self) -> None:
        """Once a second: fork servers past boot_timeout, and those no longer wanted."""
        model = self.master.model
        now = time.monotonic()
        wanted = {model.current}
        if model.reload is not None:
            wanted.add(model.reload[1])
        for gen, server in list(self.by_gen.items()):
            if gen not in wanted:
                self.master.log.info("Retiring fork server (pid %s) of generation %d",
                                     server.pid, gen.number)
                self._retire(server)
                continue
            limit = gen.cfg.boot_timeout
            if server.state == LOADING and limit and now - server.started_at > limit:
                self.master.log.critical("FORK SERVER BOOT TIMEOUT (pid %s) after %.1f s",
                                         server.pid, now - server.started_at)
                self._retire(server, kill=True)
                model.template_failed(gen, "exceeded boot_timeout", WORKER_BOOT_ERROR)

    def stop(self) -> None:
        """The master stops: every fork server goes (it has no request in hand)."""
        for server in list(self.by_gen.values()):
            self._retire(server)

    def close_sockets(self) -> None:
        """In a child of the master: the master's ends of the fork servers' sockets are not
        its own (a fork server retired by closing its socket must see it closed)."""
        for server in self.by_pid.values():
            server.sock.close()

    def _drop(self, server) -> None:
        if self.by_gen.get(server.gen) is server:
            del self.by_gen[server.gen]
        server.state = GONE

    def _retire(self, server, kill=False) -> None:
        """A fork server that is ready exits when the master closes its end of the socket
        (it has nothing in hand). One still importing the app, or stuck (``kill``), gets
        SIGKILL: not SIGTERM, for which the app's import may have set a handler of its own."""
        kill = kill or server.state == LOADING
        self._drop(server)
        server.sock.close()
        if kill:
            try:
                rawos.kill(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _path_out(path):
    """A unix socket's path for JSON: an abstract one (bytes) as ["b", latin-1 text]."""
    return ["b", path.decode("latin-1")] if isinstance(path, bytes) else path


def _path_in(path):
    return path[1].encode("latin-1") if isinstance(path, list) else path


# -- in the fork server ----------------------------------------------------------------------


def _run_fork_server(master, gen, sock) -> None:
    """The fork server's whole life, in the child of the master: never returns."""
    status = 0
    log = master.log
    try:
        master._close_master_fds()             # (the other fork servers' sockets too)
        master._wake_r = master._wake_w = -1   # (a later close must not hit reused numbers)
        _drop_listeners(master.listeners)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # see _serve: logs reopen at each fork
        signal.pthread_sigmask(signal.SIG_UNBLOCK, master.signal_numbers)
        _set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != master.pid:
            os._exit(0)  # the master died while we forked
        set_title("fork server", master.proc_name)
        app = _load(gen.cfg, log)
        if app is None:
            sock.send(json.dumps({"failed": "cannot load the app"}).encode())
            os._exit(APP_LOAD_ERROR)
        # What the app allocated at import is shared with every worker. The collector of a
        # worker would write to each of these objects' headers on every full collection,
        # unsharing their pages: frozen, they are never looked at again.
        gc.collect()
        gc.freeze()
        sock.send(json.dumps({"ready": os.getpid()}).encode())
        _serve(master, gen, app, sock)
    except BaseException:
        log.error("Fork server %s failed:\n%s", os.getpid(), traceback.format_exc().rstrip())
        status = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _drop_listeners(listeners) -> None:
    """The fork server holds no listening socket: the master sends the current ones with
    each fork request. Each inherited one is replaced by /dev/null under the same number,
    so that the socket objects (still referenced, frozen) can never close a reused fd."""
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for listener in listeners:
            os.dup2(devnull, listener.fileno(), inheritable=False)
    finally:
        rawos.close(devnull)


def _load(cfg, log):
    try:
        return load_app(cfg)
    except AppImportError as exc:
        log.error("%s", exc)
    except BaseException:
        log.error("Exception while loading the application %r:\n%s",
                  cfg.wsgi_app or cfg.paste, traceback.format_exc().rstrip())
    return None


def _serve(master, gen, app, sock) -> None:
    """Answer fork requests until the master closes its end or dies."""
    while True:
        ready, _, _ = rawos.select([sock], [], [], 1.0)
        if os.getppid() != master.pid:
            return
        if not ready:
            continue
        data, ancdata, _, _ = sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(_MAX_FDS * 4))
        if not data:
            return  # the master closed its end: retired
        # Log files rotated since the last fork (USR1 is not sent to fork servers): the fork
        # server and the worker it forks write to the files at their paths now.
        reopen_log_files(master.log)
        fds = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
        try:
            reply = _fork_worker(master, gen, app, sock, json.loads(data), fds)
        finally:
            for fd in fds:
                rawos.close(fd)
        sock.send(json.dumps(reply).encode())


def _fork_worker(master, gen, app, sock, request, fds) -> dict:
    """Fork a middle process that forks the worker and exits: the worker is orphaned and
    becomes the master's child (the master is a subreaper). Returns the reply."""
    r, w = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, master.signal_numbers)
    try:
        middle = rawos.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, master.signal_numbers)
        rawos.close(r)
        rawos.close(w)
        return {"error": f"fork() failed: {exc}"}
    if middle == 0:
        code = 1
        try:
            rawos.close(r)
            pid = rawos.fork()
            if pid == 0:
                rawos.close(w)
                _run_worker(master, gen, app, sock, request, fds)
            os.write(w, str(pid).encode())
            code = 0
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, master.signal_numbers)
    rawos.close(w)
    data = b""
    try:
        while chunk := os.read(r, 64):
            data += chunk
    finally:
        rawos.close(r)
        rawos.waitpid(middle, 0)
    if not data:
        return {"error": "the middle process could not fork the worker"}
    return {"pid": int(data)}


def _run_worker(master, gen, app, sock, request, fds) -> None:
    """In the new worker: wait until it is the master's child and the master knows its pid
    (its slot names it), then run as any worker does. A worker whose pid never reached the
    master (the fork server died before it answered) must not serve unsupervised: it exits."""
    try:
        sock.close()
        me = os.getpid()
        slot = request["slot"]
        deadline = time.monotonic() + REPARENT_SECONDS
        while os.getppid() != master.pid or master.scoreboard.read(slot).pid != me:
            if time.monotonic() > deadline:
                os._exit(WORKER_BOOT_ERROR)  # not reparented, or unknown to the master
            rawos.select([], [], [], 0.001)
        listeners = [Listener(socket.socket(fileno=fd), kind, _path_in(path), spec, from_listen)
                     for fd, (kind, path, spec, from_listen) in zip(fds, request["listeners"])]
        cfg = gen.cfg
        worker = gen.worker_class(request["age"], master.pid, listeners, cfg, master.log,
                                  slot=master.scoreboard.writer(request["slot"]), app=app)
    except BaseException:
        os._exit(WORKER_BOOT_ERROR)
    master._run_worker(cfg, worker)  # never returns

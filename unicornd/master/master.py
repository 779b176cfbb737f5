"""The master: binds, forks workers, and carries out what the lifecycle model decides.

Signal handlers only enqueue the signal (the wakeup fd interrupts the loop's sleep); the loop
dispatches each to ``handle_<name>``. Nothing is done inside a handler.

What to do about workers (spawn, retire, time out, recycle, roll a reload forward or back) is
decided by :class:`unicornd.master.lifecycle.Lifecycle`; this module is its process layer:
fork, kill, wait, the clock, systemd notifications and the user's hooks. The master never
forks, reaps or waits through a monkey-patched ``os``/``select``/``signal`` (a gevent or
eventlet app patches the master too): it uses the original functions (``rawos``).
"""

import collections
import errno
import os
import sys
import time
import traceback

from unicornd import __version__
from unicornd.config import ConfigError, load_config
from unicornd.logging import LogConfigError, make_logger, reopen_log_files, setup_logging
from unicornd.master import listeners as lst
from unicornd.master import rawos
from unicornd.master.forkserver import ForkServers
from unicornd.master.lifecycle import HaltServer, Lifecycle
from unicornd.master.pidfile import Pidfile
from unicornd.master.process import has_controlling_terminal, rss
from unicornd.master.readiness import readiness as readiness_of
from unicornd.master.scoreboard import Scoreboard
from unicornd.master.systemd import Notifier, listen_fds
from unicornd.metrics.endpoint import MasterMetrics
from unicornd.proctitle import set_title
from unicornd.tls import make_ssl_context
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR, AppLoadFailed

signal = rawos.signal
SIGNAL_NAMES = {
    getattr(signal, f"SIG{name}"): name.lower()
    for name in ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD")
}
LOOP_WAKE_SECONDS = 1.0
# While draining (TERM with drain_delay) the workers keep serving as they are: no new
# settings, no new master, no stopping them early.
IGNORED_WHILE_DRAINING = ("hup", "usr2", "winch")
OLD_MASTER_ENV = "UNICORND_PID"

__all__ = ["Master", "HaltServer"]


class Master:
    signal_numbers = tuple(SIGNAL_NAMES)  # held back across fork (the fork servers' too)

    def __init__(self, cfg, log, worker_class, *, argv=(), environ=None, app=None):
        self.log = log
        self.argv = list(argv)
        self.environ = dict(os.environ if environ is None else environ)
        self.start_cwd = os.getcwd()
        self.app = app  # preloaded in the master (only where there is no fork server)
        self.forkservers = ForkServers(self)  # preload_app: the app is imported in these
        self.pid = os.getpid()
        self.listeners = []
        self.scoreboard = None
        self.metrics = None  # MasterMetrics: /metrics, /status, statsd gauges, restart counts
        self.pidfile = None
        self.sig_queue = collections.deque(maxlen=64)
        self._wake_r = self._wake_w = -1
        self.reexec_pid = 0         # the new master started by USR2
        self.drain_until = None     # TERM with drain_delay: when the drain ends (monotonic)
        self.master_pid = int(self.environ.pop(OLD_MASTER_ENV, 0) or 0)  # our old master, if any
        self.inherited_fds = self.environ.pop(lst.INHERIT_ENV, None)
        self.inherited_systemd = self.environ.pop(lst.INHERIT_SYSTEMD_ENV, None) == "1"
        for key in (OLD_MASTER_ENV, lst.INHERIT_ENV, lst.INHERIT_SYSTEMD_ENV):
            os.environ.pop(key, None)
        self.systemd_fds = listen_fds(os.environ)
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            self.environ.pop(key, None)  # a re-executed master gets its sockets another way
        self.socket_activated = bool(self.systemd_fds) or self.inherited_systemd
        self.notifier = Notifier(self.environ)
        self.model = Lifecycle(cfg, worker_class, _ProcessLayer(self), log,
                               upgraded_from=self.master_pid)

    # What hooks (gunicorn's ``server``/arbiter), the metrics endpoint and status read.
    @property
    def cfg(self):
        return self.model.cfg

    @property
    def worker_class(self):
        return self.model.current.worker_class

    @property
    def num_workers(self):
        return self.model.target

    @property
    def workers(self):
        return self.model.workers

    @property
    def stopping(self):
        return self.model.stopping

    @property
    def proc_name(self):
        name = self.cfg.proc_name or self.cfg.wsgi_app or self.cfg.default_proc_name
        return name + ".2" if self.master_pid else name

    @property
    def scheme(self):
        return "https" if self.cfg.certfile else "http"

    @property
    def master_name(self):
        return "Master.2" if self.master_pid else "Master"

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        self.log.info("Starting unicornd %s", __version__)
        set_title("master", self.proc_name)
        if self.cfg.pidfile:
            name = self.cfg.pidfile + ".2" if self.master_pid else self.cfg.pidfile
            self.pidfile = Pidfile(name)
            self.pidfile.create(self.pid)
        self.cfg.on_starting(self)
        self._init_signals()
        if self.inherited_fds:
            self.listeners = lst.inherited({lst.INHERIT_ENV: self.inherited_fds}, self.cfg,
                                           systemd=self.inherited_systemd)
        elif self.systemd_fds:
            self.listeners = lst.from_systemd(self.systemd_fds, self.cfg)
            self.log.info("Using %d socket(s) passed by systemd; the bind setting is not used",
                          len(self.listeners))
        else:
            self.listeners = lst.bind_all(self.cfg, self.log)
        for listener in self.listeners:
            self.log.info("Listening at: %s (%s)", listener.url(self.scheme), self.pid)
        self.log.info("Using worker: %s", self.cfg.worker_class)
        self.scoreboard = Scoreboard()
        self.metrics = MasterMetrics(self)
        if self.app is not None:
            self.forkservers.enabled = False  # preloaded here: no fork server (cli.py)

    def _init_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in SIGNAL_NAMES:
            signal.signal(sig, self._enqueue_signal)
        signal.siginterrupt(signal.SIGCHLD, False)

    def _enqueue_signal(self, signum, frame):
        self.sig_queue.append(signum)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the process exit status."""
        try:
            self.start()
        except Exception as exc:
            self.log.error("%s", exc)
            self._remove_pidfile()
            return 1
        try:
            self.cfg.when_ready(self)  # as gunicorn: after binding, before the first fork
            self.model.start()
            while True:
                self.maybe_promote_master()
                self.reap_workers()
                if self.sig_queue:
                    signum = self.sig_queue.popleft()
                    name = SIGNAL_NAMES.get(signum)
                    if name != "chld":
                        self.log.info("Handling signal: %s", name)
                    if self.drain_until is not None and name in IGNORED_WHILE_DRAINING:
                        self.log.warning("%s ignored: the server is draining before it stops",
                                         name.upper())
                        continue
                    getattr(self, f"handle_{name}")()
                    continue
                self.check_drain()
                self.check_workers()
                self.sleep()
        except StopIteration:
            self.log.info("Shutting down: %s", self.master_name)
            self._exit_hooks()
            return 0
        except HaltServer as halt:
            self.log.error("Shutting down: %s", halt.reason)
            self.stop(graceful=False)
            self._exit_hooks()
            return halt.exit_status
        except KeyboardInterrupt:
            self.stop(graceful=False)
            self._exit_hooks()
            return 0
        except Exception:
            self.log.error("Unhandled exception in the master loop:\n%s", traceback.format_exc())
            self.stop(graceful=False)
            self._remove_pidfile()
            return 1

    def _exit_hooks(self):
        self._remove_pidfile()
        self.cfg.on_exit(self)

    def _remove_pidfile(self):
        if self.pidfile is not None:
            self.pidfile.unlink()

    def sleep(self, seconds: float = LOOP_WAKE_SECONDS) -> None:
        if self.drain_until is not None:  # wake when the drain is over
            seconds = max(0.0, min(seconds, self.drain_until - time.monotonic()))
        metrics = self.metrics
        rfds, wfds = (), ()
        if metrics is not None:
            metrics.tick()
            rfds, wfds = metrics.fds()
        loading = self.forkservers.fds()
        try:
            ready, writable, _ = rawos.select([self._wake_r, *rfds, *loading], wfds, [], seconds)
            if loading:
                self.forkservers.readable(ready)
                ready = [fd for fd in ready if fd not in loading]
            if metrics is not None and (len(ready) > (self._wake_r in ready) or writable):
                metrics.handle([s for s in ready if s != self._wake_r], writable)
            if self._wake_r in ready:
                while os.read(self._wake_r, 4096):
                    pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                raise

    # -- signals -------------------------------------------------------------------------

    def handle_chld(self) -> None:
        self.reap_workers()

    def handle_term(self) -> None:
        if self.drain_until is None and self.begin_drain():
            return
        if self.drain_until is not None:
            self.log.info("TERM while draining: the drain ends now")
            self.drain_until = None
        self.stop(graceful=True)
        raise StopIteration

    def handle_int(self) -> None:
        self.stop(graceful=False)
        raise StopIteration

    handle_quit = handle_int

    def handle_ttin(self) -> None:
        self.model.scale(+1)

    def handle_ttou(self) -> None:
        self.model.scale(-1)

    def handle_hup(self) -> None:
        """Reload: new settings and app, new workers, then the old ones retire gracefully."""
        self.log.info("Hang up: %s", self.master_name)
        self.notifier.reloading()
        cwd = os.getcwd()
        try:
            os.chdir(self.start_cwd)
            new_cfg = load_config(self.argv, self.environ)
            from unicornd.workers import load_worker_class
            worker_class = load_worker_class(new_cfg.worker_class)
            make_ssl_context(new_cfg)  # renewed certificates are read by the new workers
            if self.socket_activated:
                listeners = list(self.listeners)  # systemd owns them: they stay as they are
            else:
                listeners = lst.bind_all(new_cfg, self.log, keep=self.listeners)
        except (ConfigError, ValueError, lst.BindError) as exc:
            os.chdir(cwd)
            self.log.error("Reload failed, the current settings stay: %s", exc)
            self.model.reload_failure = f"the new settings did not load: {exc}"
            self.notifier.ready(self.model.status_text())
            return
        from unicornd.cli import apply_process_settings
        apply_process_settings(new_cfg)
        try:
            self.log = self.model.log = make_logger(new_cfg, setup_logging(new_cfg))
        except LogConfigError as exc:
            self.log.error("Reload: the new log settings do not work, the old ones stay: %s", exc)
        for old in self.listeners:
            if old not in listeners:
                self.log.info("No longer listening at: %s", old.url())
                old.close()
        for listener in listeners:
            if listener not in self.listeners:
                self.log.info("Listening at: %s (%s)", listener.url(self.scheme), self.pid)
        self.listeners = listeners
        new_cfg.on_reload(self)
        self.model.begin_reload(new_cfg, worker_class)

    def handle_usr1(self) -> None:
        reopen_log_files(self.log)
        for pid in list(self.workers):
            self._kill(pid, signal.SIGUSR1)

    def handle_usr2(self) -> None:
        """Binary upgrade: exec a new master that inherits the listening sockets."""
        if self.reexec_pid:
            self.log.warning("USR2 signal ignored: a new master (pid %s) already runs", self.reexec_pid)
            return
        if self.master_pid:
            self.log.warning("USR2 signal ignored: this master is itself an upgrade in progress")
            return
        fds = lst.handover_env(self.listeners)
        pid = rawos.fork()
        if pid:
            self.reexec_pid = self.model.upgrade_child = pid
            self.log.info("Started new master, pid %s", pid)
            return
        try:
            signal.set_wakeup_fd(-1)
            self.cfg.pre_exec(self)
            environ = dict(self.environ)
            environ[OLD_MASTER_ENV] = str(self.pid)
            environ[lst.INHERIT_ENV] = fds
            if self.socket_activated:
                environ[lst.INHERIT_SYSTEMD_ENV] = "1"
            os.chdir(self.start_cwd)
            os.execve(sys.executable, [sys.executable, "-m", "unicornd", *self.argv], environ)
        except BaseException:
            self.log.error("Could not exec the new master:\n%s", traceback.format_exc())
        finally:
            os._exit(1)

    def handle_winch(self) -> None:
        """Stop the workers gracefully, keep the master (the middle step of an upgrade)."""
        if not self.cfg.daemon and has_controlling_terminal():
            self.log.debug("SIGWINCH ignored: in an interactive terminal it means a window resize")
            return
        self.log.info("Graceful stop of workers")
        self.model.stop_workers()

    def maybe_promote_master(self) -> None:
        """The old master of an upgrade has gone: this one takes its names."""
        if not self.master_pid or self.master_pid == os.getppid():
            return
        self.log.info("Master has been promoted.")
        self.master_pid = self.model.upgraded_from = 0
        if self.pidfile is not None and self.cfg.pidfile:
            self.pidfile.rename(self.cfg.pidfile)
        set_title("master", self.proc_name)

    # -- the process layer ---------------------------------------------------------------

    def spawn(self, gen):
        """Fork a worker of generation ``gen``: (pid, slot, worker), or None if fork failed
        (PENDING while a fork server loads the app)."""
        if self.forkservers.serves(gen):
            return self.forkservers.spawn(gen)
        cfg = gen.cfg
        age = self.model.age + 1
        slot = self.scoreboard.allocate()
        worker = gen.worker_class(age, self.pid, self.listeners, cfg, self.log,
                                  slot=self.scoreboard.writer(slot), app=self.app)
        cfg.pre_fork(self, worker)
        # Held back across fork: in the child they wait for the worker's own handlers
        # (init_process), so a worker told to stop while booting still runs its hooks.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNAL_NAMES)
        try:
            pid = rawos.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNAL_NAMES)
            self.scoreboard.release(slot)
            self.log.error("fork() failed: %s; retrying shortly", exc)
            return None
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNAL_NAMES)
            worker.pid = pid
            self.scoreboard.assign(slot, pid)
            return pid, slot, worker
        self._run_worker(cfg, worker)

    def _run_worker(self, cfg, worker):
        """In the child: never return into the master's loop."""
        status = 0
        try:
            self._close_master_fds()
            worker.pid = os.getpid()
            set_title("worker", self.proc_name)
            self.log.info("Booting worker with pid: %s", worker.pid)
            cfg.post_fork(self, worker)
            worker.init_process()
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except AppLoadFailed:
            status = APP_LOAD_ERROR
        except BaseException:
            self.log.exception("Exception in worker process")
            status = WORKER_BOOT_ERROR if not worker.booted else 1
        finally:
            try:
                cfg.worker_exit(self, worker)
            except Exception:
                self.log.exception("Exception in worker_exit hook")
            if worker.ctx is not None and worker.ctx.access_log is not None:
                worker.ctx.access_log.flush()
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)

    def _close_master_fds(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in SIGNAL_NAMES:
            signal.signal(sig, signal.SIG_DFL)
        self.forkservers.close_sockets()  # or a fork server would never see the master let go
        for fd in (self._wake_r, self._wake_w):
            if fd < 0:
                continue  # (a worker forked by a fork server: closed there already)
            try:
                os.close(fd)
            except OSError:
                pass

    def _kill(self, pid: int, sig: int) -> bool:
        try:
            rawos.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def forget(self, rec) -> None:
        """A worker is gone: its slot, metrics and the child_exit hook."""
        if self.metrics is not None:
            self.metrics.worker_ended(rec)
        self.scoreboard.release(rec.slot)  # (its counters go to the scoreboard's totals)
        rec.gen.cfg.child_exit(self, rec.worker)

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = rawos.waitpid(-1, rawos.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            if pid == self.reexec_pid:
                self.reexec_pid = 0
            if self.forkservers.exited(pid, status):
                continue
            rec = self.workers.get(pid)
            view = self.scoreboard.read(rec.slot) if rec is not None else None
            self.model.child_exited(pid, status, view)

    def check_workers(self) -> None:
        """A tick: what each worker's slot says, into the model. A worker that is gone without
        our wait() hearing of it (reaped behind our back) is reported as gone."""
        board = self.scoreboard
        views = {}
        for pid, rec in list(self.workers.items()):
            if not rawos.exists(pid):
                self.log.warning("Worker %s is gone without an exit status (reaped elsewhere)",
                                 pid)
                self.model.child_exited(pid, None, board.read(rec.slot))
                continue
            views[pid] = board.read(rec.slot)
        self.model.tick(views)
        self.forkservers.tick()

    # -- readiness, and the drain after TERM (drain_delay) --------------------------------

    def readiness(self):
        """(ready, why): what ``GET /readyz`` answers; the rule is in master/readiness.py."""
        return readiness_of(self.model, self.drain_left())

    def drain_left(self):
        """Seconds of drain still to run after TERM, or None when not draining."""
        if self.drain_until is None:
            return None
        return max(0.0, self.drain_until - time.monotonic())

    def begin_drain(self) -> bool:
        """TERM with drain_delay: /readyz answers 503 from now, the listeners stay open and
        the workers serve on until the delay is over. False when there is nothing to drain:
        no delay set, the server never became ready (no balancer routes here yet), or this
        master is one half of a binary upgrade (the other master serves the same sockets)."""
        delay = self.cfg.drain_delay
        if self.reexec_pid and not rawos.exists(self.reexec_pid):
            self.reexec_pid = self.model.upgrade_child = 0
        model = self.model
        if not delay or not model.ready_sent or model.upgrade_child or model.upgraded_from:
            return False
        self.drain_until = time.monotonic() + delay
        # STOPPING=1 now: systemd starts counting its stop timeout from TERM anyway.
        self.notifier.notify("STOPPING=1", f"STATUS=Draining for {delay} s, then stopping")
        self.log.info("Draining for %s s (drain_delay): serving on while /readyz answers 503, "
                      "then stopping gracefully", delay)
        return True

    def check_drain(self) -> None:
        """The drain is over: stop gracefully, as TERM does without drain_delay."""
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.drain_until = None
            self.log.info("Drain over: closing the listeners")
            self.stop(graceful=True)
            raise StopIteration

    # -- stop ----------------------------------------------------------------------------

    def stop(self, graceful: bool = True) -> None:
        """Close the listeners, then stop the workers: TERM and wait, or QUIT; KILL stragglers."""
        self.drain_until = None  # INT or QUIT while draining: the drain is over too
        if self.reexec_pid and not rawos.exists(self.reexec_pid):
            self.reexec_pid = self.model.upgrade_child = 0
        notify, unlink = self.model.stop_plan()
        if notify:
            self.notifier.stopping()
        # While a new master (USR2) uses the same sockets, their files are its own.
        lst.close_all(self.listeners, unlink=unlink)
        self.listeners = []
        self.forkservers.stop()
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        limit = time.monotonic() + (self.cfg.graceful_timeout if graceful else 2.0)
        for pid in list(self.workers):
            self._kill(pid, sig)
        while self.workers and time.monotonic() < limit:
            self.reap_workers_quietly()
            if self.workers:
                self.sleep(0.05)
        for pid, rec in list(self.workers.items()):
            rec.killed = "graceful_timeout" if graceful else "quick stop"
            self._kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.workers and time.monotonic() < deadline:
            self.reap_workers_quietly()
            if self.workers:
                self.sleep(0.05)

    def reap_workers_quietly(self) -> None:
        try:
            self.reap_workers()
        except HaltServer:
            pass


class _ProcessLayer:
    """What the lifecycle model may do to the world, carried out by the master."""

    def __init__(self, master):
        self.master = master

    def spawn(self, gen):
        return self.master.spawn(gen)

    def kill(self, pid, sig) -> bool:
        return self.master._kill(pid, sig)

    now = staticmethod(time.monotonic)
    rss = staticmethod(rss)

    def notify(self, kind, text) -> None:
        notifier = self.master.notifier
        if kind == "ready":
            notifier.ready(text)
        elif kind == "status":
            notifier.status(text)
        elif kind == "mainpid":
            notifier.mainpid(self.master.pid)

    def forget(self, rec) -> None:
        self.master.forget(rec)

    def hook(self, name, *args) -> None:
        if name == "nworkers_changed":
            self.master.cfg.nworkers_changed(self.master, *args)

"""The master: binds, forks workers, and supervises them from one loop.

Signal handlers only enqueue the signal (the wakeup fd interrupts the loop's sleep); the loop
dispatches each to ``handle_<name>``. Nothing is done inside a handler.

Workers report through the scoreboard (shared memory): each loop tick the master reads every
slot to time out hung requests, to see which new workers have booted (reloads and recycling
wait for that) and which workers asked to be recycled.
"""

import collections
import errno
import os
import select
import signal
import sys
import time
import traceback

from unicornd import __version__
from unicornd.config import ConfigError, load_config
from unicornd.logging import LogConfigError, make_logger, reopen_log_files, setup_logging
from unicornd.master import listeners as lst
from unicornd.master.pidfile import Pidfile
from unicornd.master.process import has_controlling_terminal, rss
from unicornd.master.scoreboard import BOOTING, WANTS_RECYCLE, Scoreboard
from unicornd.master.timeouts import hung_reason
from unicornd.master.systemd import Notifier, listen_fds
from unicornd.metrics.endpoint import MasterMetrics
from unicornd.proctitle import set_title
from unicornd.tls import make_ssl_context
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR, AppLoadFailed

SIGNAL_NAMES = {
    getattr(signal, f"SIG{name}"): name.lower()
    for name in ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD")
}
LOOP_WAKE_SECONDS = 1.0
ABORT_GRACE_SECONDS = 5.0  # after SIGABRT, time for the stack dump before SIGKILL
OLD_MASTER_ENV = "UNICORND_PID"


class HaltServer(Exception):
    def __init__(self, reason, exit_status=1):
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class WorkerRecord:
    """What the master knows of one worker process."""

    __slots__ = ("worker", "pid", "slot", "age", "retiring", "aborted_at", "over_memory")

    def __init__(self, worker, slot):
        self.worker = worker
        self.pid = None
        self.slot = slot
        self.age = worker.age
        self.retiring = False   # being replaced (reload, recycle, TTOU, WINCH): not counted
        self.aborted_at = None  # when SIGABRT was sent for a timeout
        self.over_memory = 0    # consecutive checks above max_worker_memory


class Master:
    def __init__(self, cfg, log, worker_class, *, argv=(), environ=None, app=None):
        self.cfg = cfg
        self.log = log
        self.worker_class = worker_class
        self.argv = list(argv)
        self.environ = dict(os.environ if environ is None else environ)
        self.start_cwd = os.getcwd()
        self.app = app  # preloaded
        self.num_workers = cfg.workers
        self.pid = os.getpid()
        self.workers = {}  # pid -> WorkerRecord
        self.worker_age = 0
        self.listeners = []
        self.scoreboard = None
        self.metrics = None  # MasterMetrics: /metrics, /status, statsd gauges, restart counts
        self.pidfile = None
        self.sig_queue = collections.deque(maxlen=64)
        self._wake_r = self._wake_w = -1
        self.reload_old = None      # pids of the generation a HUP is replacing
        self.reload_prev_cfg = None
        self.recycling = None       # pid of the one worker being recycled
        self.reexec_pid = 0         # the new master started by USR2
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
        self.ready_sent = False
        self.stopping = False

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
            self.manage_workers()
            while True:
                self.maybe_promote_master()
                self.reap_workers()
                if self.sig_queue:
                    signum = self.sig_queue.popleft()
                    name = SIGNAL_NAMES.get(signum)
                    if name != "chld":
                        self.log.info("Handling signal: %s", name)
                    getattr(self, f"handle_{name}")()
                    continue
                self.check_workers()
                self.manage_workers()
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
        metrics = self.metrics
        rfds, wfds = (), ()
        if metrics is not None:
            metrics.tick()
            rfds, wfds = metrics.fds()
        try:
            ready, writable, _ = select.select([self._wake_r, *rfds], wfds, [], seconds)
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
        self.stop(graceful=True)
        raise StopIteration

    def handle_int(self) -> None:
        self.stop(graceful=False)
        raise StopIteration

    handle_quit = handle_int

    def handle_ttin(self) -> None:
        self.num_workers += 1
        self._workers_changed(self.num_workers - 1)

    def handle_ttou(self) -> None:
        if self.num_workers <= 1:
            return
        self.num_workers -= 1
        self._workers_changed(self.num_workers + 1)

    def _workers_changed(self, old: int) -> None:
        self.cfg.nworkers_changed(self, self.num_workers, old)
        self.manage_workers()
        self.notifier.status(self._status())

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
            self.notifier.ready(self._status())
            return
        from unicornd.cli import apply_process_settings
        apply_process_settings(new_cfg)
        try:
            self.log = make_logger(new_cfg, setup_logging(new_cfg))
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
        self.reload_prev_cfg = (self.cfg, self.worker_class)
        self.cfg, self.worker_class = new_cfg, worker_class
        self.num_workers = new_cfg.workers
        new_cfg.on_reload(self)
        self.reload_old = set()
        for pid, rec in self.workers.items():
            if not rec.retiring:
                rec.retiring = True
                self.reload_old.add(pid)
        if self.metrics is not None:
            self.metrics.replacing(self.reload_old, "reload")
        self.manage_workers()

    def handle_usr1(self) -> None:
        reopen_log_files(self.log)
        for pid in list(self.workers):
            self.kill_worker(pid, signal.SIGUSR1)

    def handle_usr2(self) -> None:
        """Binary upgrade: exec a new master that inherits the listening sockets."""
        if self.reexec_pid:
            self.log.warning("USR2 signal ignored: a new master (pid %s) already runs", self.reexec_pid)
            return
        if self.master_pid:
            self.log.warning("USR2 signal ignored: this master is itself an upgrade in progress")
            return
        fds = lst.handover_env(self.listeners)
        pid = os.fork()
        if pid:
            self.reexec_pid = pid
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
        self.num_workers = 0
        for pid, rec in self.workers.items():
            rec.retiring = True
            self.kill_worker(pid, signal.SIGTERM)

    def maybe_promote_master(self) -> None:
        """The old master of an upgrade has gone: this one takes its names."""
        if not self.master_pid or self.master_pid == os.getppid():
            return
        self.log.info("Master has been promoted.")
        self.master_pid = 0
        if self.pidfile is not None and self.cfg.pidfile:
            self.pidfile.rename(self.cfg.pidfile)
        set_title("master", self.proc_name)

    # -- workers -------------------------------------------------------------------------

    def active_workers(self):
        return [rec for rec in self.workers.values() if not rec.retiring]

    def manage_workers(self) -> None:
        if self.stopping:
            return
        active = self.active_workers()
        for _ in range(self.num_workers - len(active)):
            self.spawn_worker()
        if len(active) > self.num_workers:
            by_age = sorted(active, key=lambda rec: rec.age)
            for rec in by_age[: len(active) - self.num_workers]:
                rec.retiring = True
                self.kill_worker(rec.pid, signal.SIGTERM)

    def spawn_worker(self) -> None:
        self.worker_age += 1
        slot = self.scoreboard.allocate()
        worker = self.worker_class(self.worker_age, self.pid, self.listeners, self.cfg, self.log,
                                   slot=self.scoreboard.writer(slot), app=self.app)
        rec = WorkerRecord(worker, slot)
        self.cfg.pre_fork(self, worker)
        # Held back across fork: in the child they wait for the worker's own handlers
        # (init_process), so a worker told to stop while booting still runs its hooks.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNAL_NAMES)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNAL_NAMES)
            self.scoreboard.release(slot)
            self.log.error("fork() failed: %s; retrying on the next tick", exc)
            return
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNAL_NAMES)
            worker.pid = rec.pid = pid
            self.scoreboard.assign(slot, pid)
            self.workers[pid] = rec
            return
        # In the child: never return into the master's loop.
        status = 0
        try:
            self._close_master_fds()
            worker.pid = os.getpid()
            set_title("worker", self.proc_name)
            self.log.info("Booting worker with pid: %s", worker.pid)
            self.cfg.post_fork(self, worker)
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
                self.cfg.worker_exit(self, worker)
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
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def kill_worker(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            self._forget(pid)

    def _forget(self, pid):
        rec = self.workers.pop(pid, None)
        if rec is not None:
            if self.metrics is not None:
                self.metrics.worker_ended(rec)
            self.scoreboard.release(rec.slot)  # (its counters go to the scoreboard's totals)
            if self.recycling == pid:
                self.recycling = None
            self.cfg.child_exit(self, rec.worker)
        return rec

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            if pid == self.reexec_pid:
                self.reexec_pid = 0
                self.log.info("The new master (pid %s) exited: this master carries on", pid)
                continue
            rec = self._forget(pid)
            if rec is None:
                # Not one of ours: as PID 1 (a container) the master inherits every orphan.
                self.log.debug("Reaped process %s, not a worker (status %s)", pid, status)
                continue
            if os.WIFEXITED(status):
                code = os.WEXITSTATUS(status)
                if code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR):
                    # A worker already being replaced (a cancelled reload) is no reason to halt.
                    if self._cancel_reload(rec) or (rec is not None and rec.retiring
                                                    and rec.aborted_at is None):
                        continue
                if code == WORKER_BOOT_ERROR:
                    raise HaltServer("Worker failed to boot.", WORKER_BOOT_ERROR)
                if code == APP_LOAD_ERROR:
                    raise HaltServer("App failed to load.", APP_LOAD_ERROR)
                if code:
                    self.log.error("Worker (pid:%s) exited with code %s", pid, code)
                elif rec is not None:
                    self.log.info("Worker exiting (pid: %s)", pid)
            elif os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                try:
                    name = signal.Signals(sig).name
                except ValueError:
                    name = str(sig)
                if sig == signal.SIGKILL:
                    self.log.error("Worker (pid:%s) was sent SIGKILL! Perhaps out of memory?", pid)
                elif sig == signal.SIGTERM:
                    self.log.info("Worker (pid:%s) was sent %s!", pid, name)
                else:
                    self.log.error("Worker (pid:%s) was sent %s!", pid, name)

    def _cancel_reload(self, rec) -> bool:
        """A new-generation worker of a HUP could not load the app: keep the old generation."""
        if self.reload_old is None or rec is None or rec.pid in self.reload_old:
            return False
        self.log.error("Reload failed: the new workers cannot load the app; the old workers stay")
        for pid, other in self.workers.items():
            if pid in self.reload_old:
                other.retiring = False
            else:
                other.retiring = True
                self.kill_worker(pid, signal.SIGTERM)
        self.cfg, self.worker_class = self.reload_prev_cfg
        self.num_workers = self.cfg.workers
        self.reload_old = None
        self.notifier.ready(self._status())
        return True

    # -- supervision: timeouts, reload completion, recycling ------------------------------

    def check_workers(self) -> None:
        now = time.monotonic()
        cfg = self.cfg
        board = self.scoreboard
        all_booted = True
        wants_recycle = None
        for pid, rec in list(self.workers.items()):
            view = board.read(rec.slot)
            if rec.aborted_at is not None:
                if now - rec.aborted_at > ABORT_GRACE_SECONDS:
                    self.log.error("Worker %s did not exit after its stack dump; killing it", pid)
                    self.kill_worker(pid, signal.SIGKILL)
                continue
            if view.state == BOOTING:
                if not rec.retiring:
                    all_booted = False
                if cfg.boot_timeout and now - view.boot_start > cfg.boot_timeout:
                    self.log.critical("WORKER BOOT TIMEOUT (pid %s) after %.1f s", pid, now - view.boot_start)
                    self._abort(rec, now)
                continue
            reason = hung_reason(view, now, cfg.timeout)
            if reason is not None:
                self.log.critical("WORKER TIMEOUT (pid %s) %s", pid, reason)
                self._abort(rec, now)
                continue
            if rec.retiring:
                continue
            if view.flags & WANTS_RECYCLE:
                wants_recycle = wants_recycle or (rec, "it asked (max_requests)")
            elif cfg.max_worker_memory:
                resident = rss(pid)
                rec.over_memory = rec.over_memory + 1 if resident > cfg.max_worker_memory else 0
                if rec.over_memory >= 2:
                    wants_recycle = wants_recycle or (
                        rec, f"its RSS of {resident >> 20} MiB is above max_worker_memory "
                             f"({cfg.max_worker_memory >> 20} MiB)")
        if self.reload_old is not None and all_booted:
            for pid in self.reload_old:
                if pid in self.workers:
                    self.kill_worker(pid, signal.SIGTERM)
            self.reload_old = None
            self.reload_prev_cfg = None
            self.notifier.ready(self._status())
        if not self.ready_sent and all_booted and len(self.active_workers()) >= self.num_workers:
            self.ready_sent = True
            if self.master_pid:  # a new master after USR2: systemd is to follow this one now
                self.notifier.mainpid(self.pid)
            self.notifier.ready(self._status())
        self._advance_recycling(wants_recycle, all_booted)

    def _status(self) -> str:
        return f"{self.num_workers} workers serving ({self.cfg.worker_class})"

    def _advance_recycling(self, wants, all_booted) -> None:
        """One worker at a time: start its replacement; once that has booted, stop the old one."""
        if self.recycling is not None:
            rec = self.workers.get(self.recycling)
            if rec is not None and not all_booted:
                return  # the replacement is still loading the app: the old worker serves on
            if rec is not None and rec.aborted_at is None:
                self.kill_worker(rec.pid, signal.SIGTERM)
            self.recycling = None
            return
        if wants is None or self.reload_old is not None:
            return
        rec, why = wants
        self.log.info("Recycling worker %s: %s", rec.pid, why)
        if self.metrics is not None:
            self.metrics.replacing([rec.pid], "recycle-memory" if rec.over_memory >= 2
                                   else "recycle-max_requests")
        rec.retiring = True
        self.recycling = rec.pid
        self.manage_workers()  # the replacement starts now; the old one serves until it boots

    def _abort(self, rec, now) -> None:
        rec.aborted_at = now
        rec.retiring = True
        if self.metrics is not None:
            self.metrics.replacing([rec.pid], "timeout")
        self.kill_worker(rec.pid, signal.SIGABRT)

    # -- stop ----------------------------------------------------------------------------

    def stop(self, graceful: bool = True) -> None:
        """Close the listeners, then stop the workers: TERM and wait, or QUIT; KILL stragglers."""
        self.stopping = True
        self.notifier.stopping()
        # While a new master (USR2) uses the same sockets, their files must stay.
        unlink = not self.reexec_pid and not self.master_pid
        lst.close_all(self.listeners, unlink=unlink)
        self.listeners = []
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        limit = time.monotonic() + (self.cfg.graceful_timeout if graceful else 2.0)
        for pid in list(self.workers):
            self.kill_worker(pid, sig)
        while self.workers and time.monotonic() < limit:
            self.reap_workers_quietly()
            if self.workers:
                self.sleep(0.05)
        for pid in list(self.workers):
            self.kill_worker(pid, signal.SIGKILL)
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


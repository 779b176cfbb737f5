"""The master: binds, forks workers, and supervises them from one loop.

Signal handlers only enqueue the signal (the wakeup fd interrupts the loop's sleep); the loop
dispatches each to ``handle_<name>``. Nothing is done inside a handler.
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
from unicornd.master.listeners import bind_all, close_all
from unicornd.proctitle import set_title
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR, AppLoadFailed

SIGNAL_NAMES = {
    getattr(signal, f"SIG{name}"): name.lower()
    for name in ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD")
}
LOOP_WAKE_SECONDS = 1.0


class HaltServer(Exception):
    def __init__(self, reason, exit_status=1):
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class Master:
    def __init__(self, cfg, log, worker_class):
        self.cfg = cfg
        self.log = log
        self.worker_class = worker_class
        self.num_workers = cfg.workers
        self.pid = os.getpid()
        self.workers = {}  # pid -> Worker
        self.worker_age = 0
        self.listeners = []
        self.sig_queue = collections.deque(maxlen=64)
        self._wake_r = self._wake_w = -1
        self.proc_name = cfg.proc_name or cfg.wsgi_app or cfg.default_proc_name

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        self.log.info("Starting unicornd %s", __version__)
        set_title("master", self.proc_name)
        self.cfg.on_starting(self)
        self.listeners = bind_all(self.cfg, self.log)
        for listener in self.listeners:
            self.log.info("Listening at: %s (%s)", listener.url(), self.pid)
        self.log.info("Using worker: %s", self.cfg.worker_class)
        self._init_signals()

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
            return 1
        try:
            self.manage_workers()
            self.cfg.when_ready(self)
            while True:
                self.reap_workers()
                if self.sig_queue:
                    signum = self.sig_queue.popleft()
                    name = SIGNAL_NAMES.get(signum)
                    handler = getattr(self, f"handle_{name}", None)
                    if handler is None:
                        self.log.warning("Ignoring signal SIG%s: not supported yet", name.upper())
                    elif name != "chld":
                        self.log.info("Handling signal: %s", name)
                    if handler is not None:
                        handler()
                    continue
                self.manage_workers()
                self.sleep()
        except StopIteration:
            self.log.info("Shutting down: Master")
            self.cfg.on_exit(self)
            return 0
        except HaltServer as halt:
            self.log.error("Shutting down: %s", halt.reason)
            self.stop(graceful=False)
            self.cfg.on_exit(self)
            return halt.exit_status
        except KeyboardInterrupt:
            self.stop(graceful=False)
            self.cfg.on_exit(self)
            return 0
        except Exception:
            self.log.error("Unhandled exception in the master loop:\n%s", traceback.format_exc())
            self.stop(graceful=False)
            return 1

    def sleep(self) -> None:
        try:
            ready, _, _ = select.select([self._wake_r], [], [], LOOP_WAKE_SECONDS)
            if ready:
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

    # -- workers -------------------------------------------------------------------------

    def manage_workers(self) -> None:
        while len(self.workers) < self.num_workers:
            self.spawn_worker()
        if len(self.workers) > self.num_workers:
            by_age = sorted(self.workers.items(), key=lambda item: item[1].age)
            for pid, _ in by_age[: len(self.workers) - self.num_workers]:
                self.kill_worker(pid, signal.SIGTERM)

    def spawn_worker(self) -> None:
        self.worker_age += 1
        worker = self.worker_class(self.worker_age, self.pid, self.listeners, self.cfg, self.log)
        self.cfg.pre_fork(self, worker)
        pid = os.fork()
        if pid:
            worker.pid = pid
            self.workers[pid] = worker
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
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)

    def _close_master_fds(self) -> None:
        signal.set_wakeup_fd(-1)
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
        worker = self.workers.pop(pid, None)
        if worker is not None:
            self.cfg.child_exit(self, worker)
        return worker

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            worker = self._forget(pid)
            if os.WIFEXITED(status):
                code = os.WEXITSTATUS(status)
                if code == WORKER_BOOT_ERROR:
                    raise HaltServer("Worker failed to boot.", WORKER_BOOT_ERROR)
                if code == APP_LOAD_ERROR:
                    raise HaltServer("App failed to load.", APP_LOAD_ERROR)
                if code:
                    self.log.error("Worker (pid:%s) exited with code %s", pid, code)
                elif worker is not None:
                    self.log.info("Worker exiting (pid: %s)", pid)
            elif os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                try:
                    name = signal.Signals(sig).name
                except ValueError:
                    name = str(sig)
                level = self.log.info if sig == signal.SIGTERM else self.log.error
                level("Worker (pid:%s) was sent %s!", pid, name)

    # -- stop ----------------------------------------------------------------------------

    def stop(self, graceful: bool = True) -> None:
        """Close the listeners, then stop the workers: TERM and wait, or QUIT; KILL stragglers."""
        close_all(self.listeners, unlink=True)
        self.listeners = []
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        limit = time.monotonic() + (self.cfg.graceful_timeout if graceful else 2.0)
        for pid in list(self.workers):
            self.kill_worker(pid, sig)
        while self.workers and time.monotonic() < limit:
            self.reap_workers_quietly()
            if self.workers:
                self._wait_child(0.05)
        for pid in list(self.workers):
            self.kill_worker(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.workers and time.monotonic() < deadline:
            self.reap_workers_quietly()
            if self.workers:
                self._wait_child(0.05)

    def reap_workers_quietly(self) -> None:
        try:
            self.reap_workers()
        except HaltServer:
            pass

    def _wait_child(self, seconds: float) -> None:
        try:
            select.select([self._wake_r], [], [], seconds)
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError, OSError):
            pass

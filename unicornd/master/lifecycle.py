"""The master's decisions: worker records, generations and rollouts, as one model with no I/O.

The master's loop feeds events into :class:`Lifecycle` (a signal's effect, a child that
exited, what the scoreboard says at a tick) and the model acts through an injected process
layer (``ops``: spawn, kill, clock, notify, hooks). Tests drive it in-process with a fake
``ops`` and a fake clock (tests/master/), which is how interleavings of HUP, TTIN/TTOU,
crashes, hangs, failed boots and recycling are checked.

Every worker record carries the *generation* it serves (a generation is one loaded set of
settings and worker class: a HUP makes a new one) and a *phase*::

    booting --(slot says idle/busy)--> serving --(TERM: retire)--> leaving --> (exit)
       |                                 |
       +----(boot_timeout: SIGABRT)------+--(hung: SIGABRT)--> aborted --(grace: SIGKILL)

A serving worker may also be *superseded*: it belongs to an older generation (a reload is
rolling over) or it asked to be recycled (max_requests, max_worker_memory). A superseded
worker keeps serving until a replacement has booted; then it is retired. The rollouts:

- **reload** (HUP): a new generation becomes current; its workers are spawned at once; each
  time one boots, one superseded worker retires. If a worker of the new generation fails to
  boot (app import error, boot error, boot_timeout) before the rollout completes, the reload
  fails: its workers are stopped, the previous generation is current again, the log says so
  once. A later HUP tries again.
- **recycle**: a worker near ``max_requests`` (it flags its slot) or above
  ``max_worker_memory`` is superseded; its replacement starts at once (surge); once that
  has booted the old one retires. A worker that reaches ``max_requests`` stops accepting by
  itself in any case, so the limit bounds a per-request leak.
- **scale** (TTIN/TTOU, WINCH): the target count moves; extra workers retire oldest first.
- **autoscale** (``max_workers``): the target moves between the floor (``workers``) and the
  ceiling, one worker at a time, as master/autoscale.py decides from the load sampled at
  ticks; a worker retired for it is the least busy one. TTIN/TTOU move the floor too.

One place advances all of them: :meth:`Lifecycle.step`, called after every event.

A replacement that cannot boot is retried with back-off while the serving workers serve on.
Only a server that has never had a serving worker (its first boot) halts on a boot failure,
with gunicorn's exit status.

With ``preload_app`` a generation's workers are forked from its *fork server* (a template
process that has imported the app: master/forkserver.py). Until it has, ``ops.spawn``
answers :data:`PENDING` and the workers wait without back-off; a fork server that cannot
load the app (:meth:`Lifecycle.template_failed`) counts as a worker of its generation that
could not boot: the reload fails, or the first boot halts, or a replacement backs off.
"""

import signal

from unicornd.master.autoscale import DOWN, UP, Autoscaler
from unicornd.master.scoreboard import (BOOTING as SLOT_BOOTING, BUSY, FREE, IDLE,
                                        OVER_MEMORY_AT_BOOT, WANTS_RECYCLE)
from unicornd.master.timeouts import hung_reason
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR

BOOTING, SERVING, LEAVING, ABORTED = "booting", "serving", "leaving", "aborted"

ABORT_GRACE_SECONDS = 5.0      # after SIGABRT, time for the stack dump before SIGKILL
KILL_MARGIN_SECONDS = 5.0      # a retired worker past graceful_timeout + this gets SIGKILL
BACKOFF_FIRST_SECONDS = 1.0    # a replacement that failed to boot is retried after 1, 2, 4...
BACKOFF_MAX_SECONDS = 30.0     # ...seconds, at most this
PENDING = "pending"            # ops.spawn: the generation's fork server is still loading the app


class HaltServer(Exception):
    def __init__(self, reason, exit_status=1):
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class Generation:
    """One loaded configuration: settings and worker class. A HUP makes the next one."""

    __slots__ = ("number", "cfg", "worker_class", "memory_recycling")

    def __init__(self, number, cfg, worker_class=None):
        self.number = number
        self.cfg = cfg
        self.worker_class = worker_class
        self.memory_recycling = bool(getattr(cfg, "max_worker_memory", 0))

    def __repr__(self):
        return f"<Generation {self.number}>"


class WorkerRecord:
    """What the master knows of one worker process."""

    __slots__ = ("pid", "gen", "slot", "age", "phase", "spawned_at", "booted_at", "phase_at",
                 "superseded", "why", "over_memory", "killed", "worker")

    def __init__(self, pid, gen, slot, age, now, worker=None):
        self.pid = pid
        self.gen = gen
        self.slot = slot
        self.age = age
        self.worker = worker          # the Worker object (hooks receive it)
        self.phase = BOOTING
        self.spawned_at = now
        self.booted_at = None
        self.phase_at = now           # when the current phase began
        self.superseded = None        # why it is to be replaced ("reload", "max_requests"...)
        self.why = None               # why it is leaving or was aborted
        self.over_memory = 0          # consecutive ticks above max_worker_memory
        self.killed = None            # why the master sent SIGKILL, if it did

    @property
    def retiring(self) -> bool:
        """Being replaced or stopped: not counted as capacity (status, metrics)."""
        return self.phase in (LEAVING, ABORTED) or self.superseded is not None

    def __repr__(self):
        return f"<Worker {self.pid} g{self.gen.number} {self.phase}>"


class Lifecycle:
    """The master's model. ``ops`` is the process layer::

        ops.spawn(gen) -> (pid, slot, worker), None when fork failed, or PENDING (the
                          generation's fork server has not loaded the app yet: try later)
        ops.kill(pid, sig) -> False when the process is already gone
        ops.now() -> monotonic seconds
        ops.rss(pid) -> resident bytes
        ops.notify(kind, text)   kind: ready, status, mainpid (systemd)
        ops.forget(rec)          a worker is gone: free its slot, count it, child_exit hook
        ops.hook(name, *args)    the user's other server hooks (nworkers_changed)

    and ``log`` is a logger.
    """

    def __init__(self, cfg, worker_class, ops, log, *, upgraded_from=0):
        self.ops = ops
        self.log = log
        self.current = Generation(1, cfg, worker_class)
        self.target = cfg.workers
        self.scaling = Autoscaler(cfg)  # max_workers: the floor, the ceiling, when to move
        self.workers = {}              # pid -> WorkerRecord
        self.age = 0
        self.reload = None             # (new generation, previous generation) while rolling
        self.ever_served = False       # a worker has booted: boot failures no longer halt
        self.failures = 0              # consecutive boot failures of the current generation
        self.retry_at = 0.0            # no spawn before this (back-off)
        self.ready_sent = False
        self.stopping = False
        self.reload_failure = None     # why the last reload failed; None once one completes
        self.upgraded_from = upgraded_from   # our old master's pid (we are the USR2 child)
        self.upgrade_child = 0               # the new master we started with USR2

    # -- what the shell reads --------------------------------------------------------------

    @property
    def cfg(self):
        return self.current.cfg

    def serving(self):
        return [r for r in self.workers.values() if r.phase == SERVING]

    def active(self):
        """Current-generation workers booting or serving, not superseded: the capacity the
        target counts."""
        gen = self.current
        return [r for r in self.workers.values()
                if r.gen is gen and r.phase in (BOOTING, SERVING) and r.superseded is None]

    def status_text(self) -> str:
        return f"{self.target} workers serving ({self.cfg.worker_class})"

    # -- events ----------------------------------------------------------------------------

    def start(self) -> None:
        self.step()

    def scale(self, delta: int) -> None:
        """TTIN (+1) / TTOU (-1): one worker more or fewer; never below one."""
        old = self.target
        new = max(1, old + delta) if delta < 0 else old + delta
        if new == old:
            return
        self.target = new
        self.scaling.move_floor(delta, new)
        if self.scaling.enabled:
            kind, signame = ("ttin", "TTIN") if delta > 0 else ("ttou", "TTOU")
            self.scaling.changed(self.ops.now(), UP if delta > 0 else DOWN, kind, new,
                                 f"{signame}: floor {self.scaling.floor}, "
                                 f"ceiling {self.scaling.ceiling}")
        self.ops.hook("nworkers_changed", new, old)
        self.step()
        self.ops.notify("status", self.status_text())

    def stop_workers(self) -> None:
        """WINCH: the workers stop gracefully, the master stays (an upgrade's middle step)."""
        if self.reload is not None:
            # No worker is wanted: a reload rolling meanwhile has nothing to prove itself on.
            self._roll_back("the workers were told to stop (WINCH)")
        self.target = 0
        self.step()

    def begin_reload(self, cfg, worker_class) -> None:
        """HUP with settings that loaded: roll the workers over to a new generation."""
        previous = self.reload[1] if self.reload else self.current
        if self.reload:
            # A HUP while one is rolling: that one's workers that have not booted go now.
            for rec in list(self.workers.values()):
                if rec.gen is self.current and rec.phase == BOOTING:
                    self._retire(rec, "superseded by a newer reload")
        gen = Generation(self.current.number + 1, cfg, worker_class)
        self.reload = (gen, previous)
        self.current = gen
        self.target = self.scaling.configure(cfg, self.target)  # workers, or kept in bounds
        self.failures = 0
        self.retry_at = 0.0
        for rec in self.workers.values():
            if rec.gen is not gen and rec.phase in (BOOTING, SERVING) and rec.superseded is None:
                rec.superseded = "reload"
        self.step()

    def child_exited(self, pid, status, view=None) -> None:
        """A child was reaped with wait status ``status`` (None: gone, status unknown);
        ``view``: what its scoreboard slot said last."""
        if pid == self.upgrade_child:
            self.upgrade_child = 0
            self.log.info("The new master (pid %s) exited: this master carries on", pid)
            return
        rec = self.workers.pop(pid, None)
        if rec is None:
            # Not one of ours: as PID 1 (a container) the master inherits every orphan.
            self.log.debug("Reaped process %s, not a worker (status %s)", pid, status)
            return
        flags = view.flags if view is not None and view.pid == pid else 0
        if rec.booted_at is None and flags is not None and view is not None \
                and view.pid == pid and view.state in (IDLE, BUSY):
            self._booted(rec, self.ops.now())  # it booted and ended between two ticks
        if flags & WANTS_RECYCLE and rec.superseded is None:
            rec.superseded = "max_requests"  # it reached its limit before we saw it ask
        self._log_exit(rec, status)
        self.ops.forget(rec)
        code = _exit_code(status)
        boot_failure = rec.booted_at is None and (
            code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR) or rec.phase == ABORTED)
        if boot_failure and not self.stopping and rec.phase != LEAVING:
            self._boot_failed(rec, code)
        self.step()

    def tick(self, views) -> None:
        """The scoreboard as read now: ``views`` maps pid -> SlotView."""
        now = self.ops.now()
        for rec in list(self.workers.values()):
            view = views.get(rec.pid)
            if view is None:
                continue
            self._observe(rec, view, now)
        if self.scaling.enabled:
            self._sample_load(views, now)
        self.step()

    def template_failed(self, gen, what, code=APP_LOAD_ERROR) -> None:
        """preload_app: the fork server of ``gen`` could not load the app (``what`` says how:
        an import error, boot_timeout, it died; ``code``: the exit status a first boot halts
        with). For the rollouts that is the same as a worker of ``gen`` failing to boot."""
        if self.stopping:
            return
        if self.reload is not None and gen is self.reload[0]:
            self._reload_failed(f"the new fork server {what}")
            self.step()  # the old generation's count may need workers (after a WINCH)
            return
        if gen is not self.current:
            return  # a generation already given up
        delay = self._back_off(code)
        self.log.error("The fork server %s; %d worker(s) serve on; retrying in %.0f s",
                       what, len(self.serving()), delay)

    # -- the one place rollouts advance ------------------------------------------------------

    def step(self) -> None:
        if self.stopping:
            return
        now = self.ops.now()
        active = self.active()
        if self.scaling.enabled and self.reload is None and self.target:
            self._autoscale(now, active)
            active = self.active()
        # Scale down (TTOU, WINCH, a reload to fewer workers): the oldest go first.
        if len(active) > self.target:
            for rec in sorted(active, key=lambda r: r.age)[: len(active) - self.target]:
                self._retire(rec, "fewer workers wanted")
            active = self.active()
        # Spawn what is missing, unless backing off after a failed boot.
        if len(active) < self.target and now >= self.retry_at:
            for _ in range(self.target - len(active)):
                if not self._spawn():
                    break
        # Superseded workers (old generation, recycling) retire one for one as their
        # replacements come up: serving capacity never drops below the target for it.
        serving_current = [r for r in self.active() if r.phase == SERVING]
        superseded = sorted((r for r in self.workers.values()
                             if r.superseded is not None and r.phase == SERVING),
                            key=lambda r: r.age)
        excess = len(serving_current) + len(superseded) - self.target
        for rec in superseded[:max(0, excess)]:
            self._retire(rec, rec.superseded)
        # A reload is complete once the new generation serves at full strength.
        if self.reload is not None and len(serving_current) >= self.target and not any(
                r.superseded == "reload" and r.phase in (BOOTING, SERVING)
                for r in self.workers.values()):
            self.reload = None
            self.reload_failure = None
            self.log.info("Reload complete: %d worker(s) of the new settings serving",
                          len(serving_current))
            self.ops.notify("ready", self.status_text())
        if not self.ready_sent and self.reload is None and self.target \
                and len(serving_current) >= self.target:
            self.ready_sent = True
            if self.upgraded_from:  # a new master after USR2: systemd is to follow this one
                self.ops.notify("mainpid", None)
            self.ops.notify("ready", self.status_text())

    # -- stop ------------------------------------------------------------------------------

    def stop_plan(self):
        """TERM/INT/QUIT: (send STOPPING to systemd?, unlink unix sockets?). While a new
        master (USR2) runs on the same sockets, this one is not the service stopping and
        the socket files are the new master's."""
        self.stopping = True
        handed_over = bool(self.upgrade_child)
        return (not handed_over, not handed_over and not self.upgraded_from)

    # -- inside ----------------------------------------------------------------------------

    def _spawn(self) -> bool:
        result = self.ops.spawn(self.current)
        if result is PENDING:
            return False  # the fork server is loading the app: no back-off, step() retries
        if result is None:
            self.retry_at = self.ops.now() + BACKOFF_FIRST_SECONDS
            return False
        pid, slot, worker = result
        stale = self.workers.pop(pid, None)
        if stale is not None:  # its pid was reused: the old one ended unseen
            self.ops.forget(stale)
        self.age += 1
        self.workers[pid] = WorkerRecord(pid, self.current, slot, self.age, self.ops.now(), worker)
        return True

    def _retire(self, rec, why) -> None:
        """Graceful stop: the worker finishes what it has, then exits."""
        if rec.phase in (LEAVING, ABORTED):
            return
        rec.phase = LEAVING
        rec.phase_at = self.ops.now()
        rec.why = why
        if not self.ops.kill(rec.pid, signal.SIGTERM):
            self._gone(rec)

    def _abort(self, rec, why) -> None:
        """Hung (or too slow to boot): SIGABRT makes it dump its stacks, then it exits."""
        rec.phase = ABORTED
        rec.phase_at = self.ops.now()
        rec.why = why
        if not self.ops.kill(rec.pid, signal.SIGABRT):
            self._gone(rec)

    def _kill(self, rec, why) -> None:
        rec.killed = why
        if not self.ops.kill(rec.pid, signal.SIGKILL):
            self._gone(rec)

    def _gone(self, rec) -> None:
        """kill() said the process no longer exists (reaped elsewhere): forget it."""
        if self.workers.pop(rec.pid, None) is not None:
            self.ops.forget(rec)

    def _observe(self, rec, view, now) -> None:
        cfg = rec.gen.cfg
        if view.pid and view.pid != rec.pid:
            return  # the slot is not (or no longer) this worker's: nothing to judge by
        if rec.phase == ABORTED:
            if now - rec.phase_at > ABORT_GRACE_SECONDS and rec.killed is None:
                self.log.error("Worker %s did not exit after its stack dump; killing it", rec.pid)
                self._kill(rec, "no exit after SIGABRT")
            return
        if rec.phase == LEAVING:
            limit = cfg.graceful_timeout + KILL_MARGIN_SECONDS
            if now - rec.phase_at > limit and rec.killed is None:
                self.log.warning("Worker %s still running %.0f s after it was told to stop "
                                 "(graceful_timeout %s s): killing it", rec.pid,
                                 now - rec.phase_at, cfg.graceful_timeout)
                self._kill(rec, "graceful_timeout")
                return
        if rec.phase == BOOTING:
            if view.state in (IDLE, BUSY) and view.pid == rec.pid:
                self._booted(rec, now)
            elif cfg.boot_timeout and now - rec.spawned_at > cfg.boot_timeout:
                self.log.critical("WORKER BOOT TIMEOUT (pid %s) after %.1f s", rec.pid,
                                  now - rec.spawned_at)
                self._abort(rec, "boot_timeout")
                return
            else:
                return
        if view.state in (FREE, SLOT_BOOTING):
            return  # never written by this worker since it booted: no verdict on it
        reason = hung_reason(view, now, cfg.timeout, written_since=rec.spawned_at)
        if reason is not None:
            self.log.critical("WORKER TIMEOUT (pid %s) %s", rec.pid, reason)
            self._abort(rec, "timeout")
            return
        if rec.phase != SERVING or rec.superseded is not None:
            return
        if view.flags & WANTS_RECYCLE:
            self._supersede(rec, "max_requests", "it is near max_requests")
        elif rec.gen.memory_recycling:
            self._check_memory(rec, view)

    def _sample_load(self, views, now) -> None:
        """A tick: each serving worker's load integral, for the autoscaler. Steady only when
        nothing boots (a replacement, a worker just added) and no reload rolls."""
        serving = []
        for rec in self.workers.values():
            view = views.get(rec.pid)
            if rec.phase == SERVING and view is not None and view.pid == rec.pid:
                serving.append((rec.pid, view.load_seconds(now), view.capacity))
        steady = self.reload is None and self.target > 0 and len(self.active()) == self.target \
            and not any(r.phase == BOOTING for r in self.workers.values())
        self.scaling.observe(now, serving, steady)

    def _autoscale(self, now, active) -> None:
        """max_workers: one worker more or fewer, when the load has asked for it long enough."""
        decision = self.scaling.decide(self.target)
        if decision is None:
            return
        delta, why = decision
        old, new = self.target, self.target + delta
        if delta > 0:
            self.log.info("Scaling up to %d workers: %s", new, why)
            self.target = new  # spawned below, as any missing worker
        else:
            candidates = [r for r in active if r.phase == SERVING]
            if not candidates:
                return
            rec = self.scaling.least_busy(candidates)
            self.log.info("Scaling down to %d workers: %s; retiring worker %s", new, why, rec.pid)
            self.target = new
            self._retire(rec, "scaled down")
        self.scaling.changed(now, UP if delta > 0 else DOWN, "busy" if delta > 0 else "spare",
                             new, why)
        self.ops.hook("nworkers_changed", new, old)
        self.ops.notify("status", self.status_text())

    def _booted(self, rec, now) -> None:
        rec.phase = SERVING
        rec.phase_at = rec.booted_at = now
        self.ever_served = True
        if rec.gen is self.current:
            self.failures = 0
            self.retry_at = 0.0

    def _supersede(self, rec, kind, why) -> None:
        self.log.info("Recycling worker %s: %s", rec.pid, why)
        rec.superseded = kind

    def _check_memory(self, rec, view) -> None:
        cfg = rec.gen.cfg
        resident = self.ops.rss(rec.pid)
        if resident <= cfg.max_worker_memory:
            rec.over_memory = 0
            return
        if view.flags & OVER_MEMORY_AT_BOOT:
            # The worker was over the limit as soon as it had loaded the app: recycling
            # cannot help and would only loop.
            rec.gen.memory_recycling = False
            self.log.warning(
                "max_worker_memory (%d MiB) is below the RSS of a freshly booted worker "
                "(%d MiB): recycling for memory is off until the settings change (raise it)",
                cfg.max_worker_memory >> 20, resident >> 20)
            return
        rec.over_memory += 1
        if rec.over_memory >= 2:
            self._supersede(rec, "memory",
                            f"its RSS of {resident >> 20} MiB is above max_worker_memory "
                            f"({cfg.max_worker_memory >> 20} MiB)")

    def _boot_failed(self, rec, code) -> None:
        what = ("cannot load the app" if code == APP_LOAD_ERROR else
                "exceeded boot_timeout" if rec.why == "boot_timeout" else
                "failed to boot")
        if self.reload is not None and rec.gen is self.reload[0]:
            self._reload_failed(f"the new workers {what}")
            return
        if rec.gen is not self.current:
            return  # a generation already given up: its failures change nothing
        delay = self._back_off(code)
        serving = len(self.serving())
        if self.failures == 1:
            self.log.error("Replacement worker %s %s; %d worker(s) serve on; retrying with "
                           "back-off", rec.pid, what, serving)
        else:
            self.log.info("Replacement worker %s %s (attempt %d); next try in %.0f s",
                          rec.pid, what, self.failures, delay)

    def _back_off(self, code) -> float:
        """A replacement of the current generation (a worker, or its fork server) could not
        boot. On a first boot nothing serves: halt as gunicorn does rather than loop.
        Otherwise back off (1, 2, 4 ... 30 s) while the others serve on: returns the delay."""
        if not self.ever_served:
            if code == APP_LOAD_ERROR:
                raise HaltServer("App failed to load.", APP_LOAD_ERROR)
            raise HaltServer("Worker failed to boot.", WORKER_BOOT_ERROR)
        self.failures += 1
        delay = min(BACKOFF_FIRST_SECONDS * 2 ** (self.failures - 1), BACKOFF_MAX_SECONDS)
        self.retry_at = self.ops.now() + delay
        return delay

    def _reload_failed(self, what) -> None:
        """``what``: which of the new generation failed, and how (for the log and /readyz)."""
        self.log.error("Reload failed: %s; the old workers stay", what)
        self.reload_failure = what
        self._roll_back("reload failed")
        self.ops.notify("ready", self.status_text())

    def _roll_back(self, why) -> None:
        """The generation before the reload is current again; the new one's workers go."""
        gen, previous = self.reload
        self.reload = None
        for rec in list(self.workers.values()):
            if rec.gen is gen:
                if rec.phase in (BOOTING, SERVING):
                    self._retire(rec, why)
            elif rec.superseded == "reload":
                rec.superseded = None
        self.current = previous
        self.target = self.scaling.configure(previous.cfg, self.target)
        self.failures = 0
        self.retry_at = 0.0

    def _log_exit(self, rec, status) -> None:
        pid = rec.pid
        if status is None:
            return
        if _exited(status):
            code = _exit_code(status)
            if code and code not in (WORKER_BOOT_ERROR, APP_LOAD_ERROR):
                self.log.error("Worker (pid:%s) exited with code %s", pid, code)
            elif not code:
                self.log.info("Worker exiting (pid: %s)", pid)
            return
        sig = status & 0x7F
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        if sig == signal.SIGKILL:
            if rec.killed is not None:
                self.log.warning("Worker (pid:%s) was killed by the master (%s)", pid, rec.killed)
            else:
                self.log.error("Worker (pid:%s) was sent SIGKILL! Perhaps out of memory?", pid)
        elif sig == signal.SIGTERM:
            self.log.info("Worker (pid:%s) was sent %s!", pid, name)
        else:
            self.log.error("Worker (pid:%s) was sent %s!", pid, name)


def restart_reason(rec, stopping: bool):
    """Why a worker that ended was replaced, for the restarts metric (None: not a restart)."""
    if rec.phase == ABORTED:
        return "timeout"
    if rec.superseded == "reload":
        return "reload"
    if rec.superseded in ("max_requests", "memory"):
        return "recycle-max_requests" if rec.superseded == "max_requests" else "recycle-memory"
    if rec.phase == LEAVING or stopping:
        return None
    return "crashed"


def _exited(status) -> bool:
    return status is not None and (status & 0x7F) == 0


def _exit_code(status):
    return (status >> 8) & 0xFF if _exited(status) else None

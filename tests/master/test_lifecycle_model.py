"""The master's lifecycle model, in-process: a fake process layer and a fake clock.

A hypothesis rule-based state machine interleaves HUP (good, broken and slow new settings),
TTIN/TTOU, WINCH, crashes, hangs, workers reaped behind the master's back, max_requests under
load, a database that is down at import time, USR2 and TERM, and checks invariants after every
step. The same model drives the real master (unicornd/master/master.py is its process layer),
whose end-to-end tests are in tests/server/test_lifecycle.py.
"""

import signal

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from unicornd.master import lifecycle as lc
from unicornd.master.scoreboard import (BOOTING as SLOT_BOOTING, BUSY, IDLE, SERIAL,
                                        WANTS_RECYCLE, SlotView)
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR

MAX_REQUESTS = 20

# CPU-bound, about 10 s alone on a 2-core machine; far longer when the machine is shared.
pytestmark = pytest.mark.timeout(900)


class Cfg:
    """The settings the model reads, plus how this generation's app behaves at import."""

    def __init__(self, workers=2, behaviour="ok", max_requests=MAX_REQUESTS, max_worker_memory=0,
                 max_workers=0, scale_up_period=5.0, scale_down_period=30.0):
        self.workers = workers
        self.max_workers = max_workers
        self.scale_up_period = scale_up_period
        self.scale_down_period = scale_down_period
        self.behaviour = behaviour  # ok | broken (import error) | slow (import hangs)
        self.timeout = 30
        self.boot_timeout = 10
        self.graceful_timeout = 30
        self.max_requests = max_requests
        self.max_worker_memory = max_worker_memory
        self.worker_class = "sync"


class Log:
    def __init__(self):
        self.lines = []

    def _add(self, level, msg, *args):
        self.lines.append((level, msg % args if args else msg))

    def debug(self, msg, *a): self._add("debug", msg, *a)  # noqa: E704
    def info(self, msg, *a): self._add("info", msg, *a)  # noqa: E704
    def warning(self, msg, *a): self._add("warning", msg, *a)  # noqa: E704
    def error(self, msg, *a): self._add("error", msg, *a)  # noqa: E704
    def critical(self, msg, *a): self._add("critical", msg, *a)  # noqa: E704

    def count(self, text):
        return sum(text in line for _, line in self.lines)


class View:
    """What Scoreboard.read() returns, as plain values."""

    __slots__ = ("pid", "state", "flags", "mode", "heartbeat", "boot_start", "request_start",
                 "requests", "method", "path", "progress", "recent", "candidates", "capacity",
                 "inflight", "load", "load_at")

    def __init__(self):
        self.mode, self.capacity, self.candidates = SERIAL, 1, 0
        self.progress = self.recent = 0.0
        self.inflight, self.load, self.load_at = 0, 0.0, 0.0

    load_seconds = SlotView.load_seconds


class Proc:
    def __init__(self, pid, gen, slot, now, db_down):
        self.pid, self.gen, self.slot = pid, gen, slot
        self.state = SLOT_BOOTING
        self.heartbeat = now
        self.request_start = 0.0
        self.requests = 0
        self.load = 0.0             # request-seconds served (the autoscaler's measure)
        self.flags = 0
        self.hung = False
        self.status = None          # wait status once it has exited
        self.reaped = False         # by the master (told) or behind its back
        self.signals = []
        self.behaviour = "slow" if db_down and gen.cfg.behaviour == "ok" else gen.cfg.behaviour
        self.limit = gen.cfg.max_requests

    @property
    def alive(self):
        return self.status is None

    def exit(self, code=None, sig=None):
        if self.alive:
            self.status = (code << 8) if sig is None else sig


class World:
    """The fake process layer: spawn, kill, clock, notify, forget."""

    def __init__(self):
        self.now = 1000.0
        self.procs = {}
        self.next_pid = 100
        self.slots_in_use = set()
        self.next_slot = 0
        self.notified = []
        self.forgotten = []
        self.db_down = False
        self.kills = []
        self.loaded = False         # every serving worker busy (clients outnumber them)
        self.hooked = []            # (now, name, args) of the hooks the model fired

    def spawn(self, gen):
        self.next_pid += 1
        self.next_slot += 1
        pid, slot = self.next_pid, self.next_slot
        self.slots_in_use.add(slot)
        self.procs[pid] = Proc(pid, gen, slot, self.now, self.db_down)
        return pid, slot, None

    def kill(self, pid, sig):
        proc = self.procs.get(pid)
        if proc is None or proc.reaped:
            return False
        self.kills.append((pid, sig))
        proc.signals.append(sig)
        if not proc.alive:
            return True
        if sig == signal.SIGKILL:
            proc.exit(sig=signal.SIGKILL)
        elif sig == signal.SIGABRT and not proc.hung:
            proc.exit(WORKER_BOOT_ERROR if proc.state == SLOT_BOOTING else 1)
        elif sig == signal.SIGTERM and not proc.hung:
            proc.exit(0)
        return True

    def rss(self, pid):
        return 0

    def notify(self, kind, text):
        self.notified.append(kind)

    def forget(self, rec):
        self.forgotten.append(rec.pid)
        self.slots_in_use.discard(rec.slot)

    def hook(self, name, *args):
        self.hooked.append((self.now, name, args))

    def view(self, proc):
        v = View()
        v.pid, v.state, v.flags, v.heartbeat = proc.pid, proc.state, proc.flags, proc.heartbeat
        v.boot_start, v.request_start, v.requests = 0.0, proc.request_start, proc.requests
        v.load = proc.load
        v.method = v.path = ""
        if proc.hung:  # a sync worker stuck in its one request, no progress since it began
            v.candidates, v.progress, v.recent = 1, proc.request_start, proc.request_start
        return v


class LifecycleMachine(RuleBasedStateMachine):
    @initialize(workers=st.integers(1, 3), headroom=st.sampled_from([None, 0, 1, 3, 3]))
    def boot(self, workers, headroom):
        """``headroom``: max_workers - workers (None: no max_workers, scaling off)."""
        self.world = World()
        self.world.now_fn = None
        self.log = Log()
        ops = self.world
        ops.now = self.world.now  # replaced by a method below
        self.ops = _Ops(self.world)
        self.model = lc.Lifecycle(Cfg(workers, **_scaling(workers, headroom)), None, self.ops,
                                  self.log)
        self.loaded_since = None      # world.loaded since then
        self.unloaded_since = self.world.now
        self.last_flip = None
        self.last_change = None       # world.now of the last change of the worker count
        self.lines_seen = 0
        self.bad_hups = 0
        self.stopped = False
        self.kept = None  # (pids serving when a bad HUP came) until that reload has failed
        self.model.start()
        self._advance(1.0)
        assert len(self.model.serving()) == workers, self.log.lines

    # -- the world moves -----------------------------------------------------------------

    def _deliver_exits(self):
        for proc in list(self.world.procs.values()):
            if not proc.alive and not proc.reaped:
                proc.reaped = True
                self.model.child_exited(proc.pid, proc.status, self.world.view(proc))

    def _advance(self, seconds):
        world = self.world
        world.now += seconds
        for proc in world.procs.values():
            if not proc.alive:
                continue
            if proc.hung:
                proc.load += seconds  # stuck in its request: busy (no heartbeat)
                continue
            if proc.state == SLOT_BOOTING:
                if proc.behaviour == "ok":
                    proc.state = IDLE
                elif proc.behaviour == "broken":
                    proc.exit(APP_LOAD_ERROR)
                    continue
                else:
                    continue  # slow: still importing
            proc.heartbeat = world.now
            if world.loaded:
                proc.load += seconds
        self._deliver_exits()
        views = {}
        for pid in list(self.model.workers):
            proc = world.procs[pid]
            if proc.reaped:  # reaped behind the master's back: the shell reports it so
                self.model.child_exited(pid, None, world.view(proc))
            else:
                views[pid] = world.view(proc)
        self.model.tick(views)
        for pid, view in views.items():
            rec = self.model.workers.get(pid)
            if view.flags & WANTS_RECYCLE and rec is not None and rec.phase == lc.SERVING:
                # Seen at a tick, a worker near its limit is superseded: its replacement
                # (surge) is counted instead of it.
                assert rec.superseded is not None, rec
        self._deliver_exits()

    def _live(self, serving_only=True):
        return sorted(p.pid for p in self.world.procs.values()
                      if p.alive and not p.reaped and (not serving_only or p.state != SLOT_BOOTING))

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: not self.stopped)
    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 11.0, 31.0, 40.0]))
    def time_passes(self, seconds):
        self._advance(seconds)

    @precondition(lambda self: not self.stopped)
    @rule(loaded=st.booleans())
    def load_steps(self, loaded):
        """Clients come (enough to keep every worker busy) or go."""
        world = self.world
        if loaded != world.loaded:
            world.loaded = loaded
            # The state before lasted no time at all (two flips at one moment): the stretch
            # before it goes on.
            resumed = self.last_flip == world.now
            if loaded and not (resumed and self.loaded_since is not None):
                self.loaded_since = world.now
            if not loaded and not (resumed and self.unloaded_since is not None):
                self.unloaded_since = world.now
            self.last_flip = world.now

    @precondition(lambda self: not self.stopped)
    @rule(loaded=st.booleans(), ticks=st.integers(1, 12))
    def a_load_holds(self, loaded, ticks):
        """The clients come or go and stay so while the master ticks once a second (the
        invariants are checked after the whole run, so each tick checks them too)."""
        self.load_steps(loaded)
        for _ in range(ticks):
            self._advance(1.0)
            self.scaling_stays_between_floor_and_ceiling_one_change_per_period()

    @precondition(lambda self: not self.stopped)
    @rule(behaviour=st.sampled_from(["ok", "ok", "broken", "slow"]), workers=st.integers(1, 4),
          headroom=st.sampled_from([None, 0, 2]))
    def hup(self, behaviour, workers, headroom):
        if behaviour != "ok" or self.world.db_down:
            self.bad_hups += 1
            if self.kept is None and self.model.reload is None:
                self.kept = set(r.pid for r in self.model.serving())
        else:
            self.kept = None
        if self.model.reload is None:
            self.reload_since = self.world.now
        self.model.begin_reload(Cfg(workers, behaviour, **_scaling(workers, headroom)), None)
        self._deliver_exits()

    @precondition(lambda self: not self.stopped)
    @rule(delta=st.sampled_from([1, -1]))
    def ttin_ttou(self, delta):
        self.model.scale(delta)
        self._deliver_exits()

    @precondition(lambda self: not self.stopped)
    @rule(data=st.data())
    def a_worker_crashes(self, data):
        live = self._live()
        if live:
            self.world.procs[data.draw(st.sampled_from(live))].exit(1)
            self._deliver_exits()

    @precondition(lambda self: not self.stopped)
    @rule(data=st.data())
    def a_worker_hangs(self, data):
        live = self._live()
        if live:
            proc = self.world.procs[data.draw(st.sampled_from(live))]
            proc.hung = True
            proc.state = BUSY
            proc.request_start = self.world.now

    @precondition(lambda self: not self.stopped)
    @rule(data=st.data())
    def reaped_behind_the_masters_back(self, data):
        """gevent's child watcher in a patched master: the exit status never reaches us."""
        live = self._live(serving_only=False)
        if live:
            proc = self.world.procs[data.draw(st.sampled_from(live))]
            proc.exit(0)
            proc.reaped = True

    @precondition(lambda self: not self.stopped)
    @rule(n=st.integers(1, 40))
    def requests_arrive(self, n):
        """Load: requests go round the serving workers; each stops at its max_requests."""
        for i in range(n):
            live = [self.world.procs[pid] for pid in self._live()
                    if not self.world.procs[pid].hung]
            if not live:
                break
            proc = live[i % len(live)]
            assert proc.requests < proc.limit
            proc.requests += 1
            if proc.requests >= max(1, proc.limit * 3 // 4):
                proc.flags |= WANTS_RECYCLE
            if proc.requests >= proc.limit:
                proc.exit(0)  # the worker stops at its limit by itself
        self._deliver_exits()

    @precondition(lambda self: not self.stopped)
    @rule(down=st.booleans())
    def database(self, down):
        if down and not self.world.db_down and self.model.reload is not None:
            self.bad_hups += 1  # the reload rolling now may fail: its next worker cannot boot
        self.world.db_down = down

    @precondition(lambda self: not self.stopped)
    @rule()
    def winch(self):
        self.model.stop_workers()
        self._deliver_exits()

    @precondition(lambda self: not self.stopped and not self.model.upgrade_child)
    @rule()
    def usr2(self):
        self.model.upgrade_child = 99999

    @precondition(lambda self: not self.stopped)
    @rule()
    def term(self):
        upgrading = bool(self.model.upgrade_child)
        notify_stopping, unlink = self.model.stop_plan()
        assert notify_stopping == (not upgrading)
        assert unlink == (not upgrading)
        self.stopped = True

    @precondition(lambda self: self.stopped)
    @rule(seconds=st.sampled_from([1.0, 31.0]))
    def a_stopping_master_spawns_nothing(self, seconds):
        spawned = self.world.next_pid
        for proc in self.world.procs.values():
            proc.exit(0)
        self._advance(seconds)
        assert self.world.next_pid == spawned

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def scaling_stays_between_floor_and_ceiling_one_change_per_period(self):
        if self.stopped:
            return
        m, world = self.model, self.world
        sc = m.scaling
        if sc.enabled and m.reload is None and m.target:
            assert 1 <= sc.floor <= m.target <= sc.ceiling, (sc.floor, m.target, sc.ceiling)
        new = self.log.lines[self.lines_seen:]
        self.lines_seen = len(self.log.lines)
        scaled = [line for _, line in new if line.startswith("Scaling ")]
        assert len(scaled) <= 1, scaled  # one rule, one moment: at most one change
        for line in scaled:
            up = line.startswith("Scaling up")
            period = sc.up_period if up else sc.down_period
            if self.last_change is not None:
                assert world.now - self.last_change >= period, (line, self.last_change)
            if up:  # every worker busy all along: the clients, or all stuck in requests
                assert (world.loaded and world.now - self.loaded_since >= period) or any(
                    p.hung for p in world.procs.values() if p.alive), line
            else:  # and no scaling down while the clients keep every worker busy
                assert not world.loaded and world.now - self.unloaded_since >= period, line
            assert (world.now, "nworkers_changed") in [(t, n) for t, n, _ in world.hooked]
        if scaled or any(n == "nworkers_changed" and t == world.now for t, n, _ in world.hooked):
            self.last_change = world.now

    @invariant()
    def records_match_the_processes(self):
        if self.stopped:
            return
        world = self.world
        unreaped = {pid for pid, p in world.procs.items() if not p.reaped}
        assert set(self.model.workers) <= set(world.procs)
        assert unreaped <= set(self.model.workers), (unreaped, self.model.workers)
        slots = [r.slot for r in self.model.workers.values()]
        assert len(slots) == len(set(slots))

    @invariant()
    def capacity_is_kept_unless_backing_off(self):
        if self.stopped:
            return
        m = self.model
        assert len(m.active()) >= m.target or m.retry_at > self.world.now, (
            len(m.active()), m.target, self.log.lines[-5:])

    @invariant()
    def a_failed_reload_keeps_the_serving_workers_and_says_so_once(self):
        if self.stopped:
            return
        failed = self.log.count("Reload failed")
        assert failed <= self.bad_hups
        if self.kept is not None and self.model.reload is None:
            for pid in self.kept:
                rec = self.model.workers.get(pid)
                proc = self.world.procs[pid]
                if rec is not None and not proc.hung and proc.alive \
                        and proc.requests < proc.limit * 3 // 4:
                    assert rec.phase == lc.SERVING, (rec, self.log.lines[-6:])
            self.kept = None

    @invariant()
    def a_hung_worker_is_aborted(self):
        if self.stopped:
            return
        for pid, rec in self.model.workers.items():
            proc = self.world.procs[pid]
            if proc.hung and self.world.now - proc.request_start > rec.gen.cfg.timeout + 1:
                assert (pid, signal.SIGABRT) in self.world.kills, (rec, self.log.lines[-4:])

    @invariant()
    def a_reload_completes_or_fails_within_boot_timeout(self):
        if self.stopped or self.model.reload is None:
            return
        limit = self.model.cfg.boot_timeout + lc.ABORT_GRACE_SECONDS + 2 * 40.0
        assert self.world.now - self.reload_since <= limit, self.log.lines[-6:]

    @invariant()
    def the_current_generation_can_boot_or_is_backed_off(self):
        if self.stopped:
            return
        cfg = self.model.cfg
        if self.model.reload is None and cfg.behaviour != "ok" and self.model.target:
            # Only the first settings may be bad for ever... they are not: every bad HUP that
            # has run its course has been rolled back.
            raise AssertionError(f"bad settings became current: {self.log.lines[-6:]}")


def _scaling(workers, headroom):
    if headroom is None:
        return {}
    return {"max_workers": workers + headroom, "scale_up_period": 2.0, "scale_down_period": 6.0}


class _Ops:
    """The World with a clock method (the model calls ops.now())."""

    def __init__(self, world):
        self._world = world

    def now(self):
        return self._world.now

    def __getattr__(self, name):
        return getattr(self._world, name)


LifecycleMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_lifecycle_model = LifecycleMachine.TestCase

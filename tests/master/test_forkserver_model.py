"""The lifecycle model with preload_app's fork servers (master/forkserver.py): spawns that
wait for a fork server to load the app, and fork servers that cannot; then the lifecycle
machine of test_lifecycle_model.py with every generation served by a fork server (the
end-to-end tests are in tests/server/test_forkserver.py)."""

import signal

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from unicornd.master import lifecycle as lc
from unicornd.master.readiness import readiness
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR

from test_lifecycle_model import Cfg, LifecycleMachine, Log, World, _Ops

# The machine is CPU-bound (a few seconds alone on a 2-core machine, longer when shared).
pytestmark = pytest.mark.timeout(900)
from test_lifecycle_units import boot_all, view


class ForkServerWorld(World):
    """Spawns answer PENDING until the generation's fork server is ready."""

    def __init__(self):
        super().__init__()
        self.ready = set()      # generation numbers whose fork server has loaded the app
        self.asked = []         # generation numbers spawn() was called for

    def spawn(self, gen):
        self.asked.append(gen.number)
        if gen.number not in self.ready:
            return lc.PENDING
        return super().spawn(gen)


def make(workers=2):
    world = ForkServerWorld()
    log = Log()
    model = lc.Lifecycle(Cfg(workers), None, _Ops(world), log)
    model.start()
    return world, log, model


def serving(world, log, model):
    world.ready.add(model.current.number)
    model.step()
    boot_all(world, model)


def test_workers_wait_for_the_fork_server_without_back_off():
    world, log, model = make(workers=2)
    assert model.workers == {} and model.retry_at == 0.0
    model.tick({})
    model.tick({})
    assert model.workers == {} and model.retry_at == 0.0 and model.failures == 0
    world.ready.add(1)
    model.step()  # what the master does when the fork server says it is ready
    assert len(model.workers) == 2 and world.notified == []
    boot_all(world, model)
    assert world.notified == ["ready"]


def test_a_reload_whose_fork_server_cannot_load_the_app_keeps_the_old_workers():
    world, log, model = make(workers=2)
    serving(world, log, model)
    old = set(model.workers)
    first = model.current
    model.begin_reload(Cfg(2), None)
    second = model.current
    assert set(model.workers) == old  # nothing to fork until the new fork server is ready
    assert all(r.superseded == "reload" for r in model.workers.values())
    model.template_failed(second, "cannot load the app")
    assert log.count("Reload failed: the new fork server cannot load the app; "
                     "the old workers stay") == 1
    assert model.current is first and model.reload is None
    assert all(r.superseded is None and r.phase == lc.SERVING for r in model.workers.values())
    assert world.kills == [] and world.notified[-1] == "ready"
    # /readyz says so, as for any failed reload, until a later one completes.
    assert readiness(model) == (
        False, "the last reload failed (the new fork server cannot load the app); "
               "the previous settings serve")
    # A late word from the given-up generation changes nothing.
    model.template_failed(second, "exited killed by SIGKILL before it had loaded the app")
    assert model.current is first and log.count("Reload failed") == 1


def test_a_reload_rolls_over_once_the_new_fork_server_is_ready():
    world, log, model = make(workers=2)
    serving(world, log, model)
    old = set(model.workers)
    model.begin_reload(Cfg(2), None)
    world.ready.add(model.current.number)
    model.step()
    new = set(model.workers) - old
    assert len(new) == 2
    model.tick({pid: view(pid, world=world) for pid in model.workers})
    assert sorted((pid, signal.SIGTERM) for pid in old) == sorted(world.kills)
    for pid in old:
        world.procs[pid].exit(0)
        model.child_exited(pid, 0, view(pid, world=world))
    assert model.reload is None and log.count("Reload complete") == 1


@pytest.mark.parametrize("code", [APP_LOAD_ERROR, WORKER_BOOT_ERROR])
def test_a_first_boot_whose_fork_server_fails_halts_with_gunicorns_status(code):
    world, log, model = make(workers=1)
    with pytest.raises(lc.HaltServer) as halt:
        model.template_failed(model.current, "cannot load the app", code)
    assert halt.value.exit_status == code


def test_a_fork_server_that_fails_after_the_first_boot_backs_off_and_never_halts():
    world, log, model = make(workers=2)
    serving(world, log, model)
    (victim, _) = sorted(model.workers)
    world.ready.discard(1)  # the fork server died; its replacement is loading
    world.procs[victim].exit(sig=signal.SIGKILL)
    model.child_exited(victim, signal.SIGKILL, view(victim, world=world))
    assert len(model.workers) == 1 and model.retry_at == 0.0
    delays = []
    for _ in range(4):
        model.template_failed(model.current, "exited with code 1 before it had loaded the app")
        delays.append(model.retry_at - world.now)
        asked = len(world.asked)
        model.tick({})
        assert len(world.asked) == asked  # backing off: no new fork server yet
        world.now = model.retry_at
        model.tick({})
        assert len(world.asked) == asked + 1  # then one is asked for again
    assert delays == [1, 2, 4, 8]
    assert log.count("The fork server exited with code 1 before it had loaded the app; "
                     "1 worker(s) serve on; retrying in 1 s") == 1
    world.ready.add(1)
    model.step()
    assert len(model.workers) == 2


# -- the interleavings, with fork servers: the lifecycle machine, its spawns through them ----


class FakeForkServers(World):
    """spawn() as the fork server layer answers: PENDING until the generation's fork server
    has loaded the app. What a fork server does when time passes is in ``advance``."""

    def __init__(self):
        super().__init__()
        self.servers = {}       # Generation -> [state, started_at, how its import goes]

    def spawn(self, gen):
        server = self.servers.get(gen)
        if server is None:  # the database is down at its import, or not
            behaviour = "slow" if self.db_down and gen.cfg.behaviour == "ok" else gen.cfg.behaviour
            self.servers[gen] = ["loading", self.now, behaviour]
            return lc.PENDING
        if server[0] != "ready":
            return lc.PENDING
        result = super().spawn(gen)
        self.procs[result[0]].behaviour = "ok"  # forked with the app already imported
        return result

    def advance(self, model):
        """Fork servers load (or fail to), the unwanted ones are retired (ForkServers.tick)."""
        wanted = {model.current} | ({model.reload[1]} if model.reload else set())
        for gen, server in list(self.servers.items()):
            if gen not in wanted:
                del self.servers[gen]
                continue
            state, started, behaviour = server
            if state != "loading":
                continue
            if behaviour == "ok":
                server[0] = "ready"
                model.step()
            elif behaviour == "broken":
                del self.servers[gen]
                model.template_failed(gen, "cannot load the app")
            elif self.now - started > gen.cfg.boot_timeout:
                del self.servers[gen]
                model.template_failed(gen, "exceeded boot_timeout", WORKER_BOOT_ERROR)


class ForkServerMachine(LifecycleMachine):
    """The lifecycle machine's rules and invariants, every generation with preload_app."""

    @initialize(workers=st.integers(1, 3))
    def boot(self, workers):
        self.world = FakeForkServers()
        self.log = Log()
        self.ops = _Ops(self.world)
        self.model = lc.Lifecycle(Cfg(workers), None, self.ops, self.log)
        # (the base machine's bookkeeping for its scaling rules; scaling stays off here)
        self.loaded_since = None
        self.unloaded_since = self.world.now
        self.last_flip = None
        self.last_change = None
        self.lines_seen = 0
        self.bad_hups = 0
        self.stopped = False
        self.kept = None
        self.model.start()
        self._advance(1.0)
        self._advance(1.0)
        assert len(self.model.serving()) == workers, self.log.lines

    def _advance(self, seconds):
        super()._advance(seconds)
        if not self.stopped:  # after the model's tick, as the master's loop does
            self.world.advance(self.model)
            self._deliver_exits()

    @precondition(lambda self: not self.stopped and self.world.servers)
    @rule(data=st.data())
    def a_fork_server_dies(self, data):
        gen = data.draw(st.sampled_from(sorted(self.world.servers, key=lambda g: g.number)))
        state = self.world.servers.pop(gen)[0]
        if state == "loading" and self.model.reload and gen is self.model.reload[0]:
            self.bad_hups += 1  # this reload fails: its new code never loaded
            if self.kept is None:
                self.kept = set(r.pid for r in self.model.serving())
        if state == "loading":
            self.model.template_failed(gen, "exited killed by SIGKILL before it had loaded "
                                            "the app")
        self._deliver_exits()

    @invariant()
    def capacity_is_kept_unless_backing_off(self):
        """Replaced: capacity may also wait for the current generation's fork server."""
        if self.stopped:
            return
        m = self.model
        server = self.world.servers.get(m.current)
        assert len(m.active()) >= m.target or m.retry_at > self.world.now or (
            server is None or server[0] == "loading"), (len(m.active()), m.target,
                                                        self.log.lines[-5:])


ForkServerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_fork_server_machine = ForkServerMachine.TestCase

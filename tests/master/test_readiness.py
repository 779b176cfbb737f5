"""The readiness rule (what ``GET /readyz`` answers), in-process on the lifecycle model.

One scenario per clause of the rule in unicornd/master/readiness.py, then the rule checked
against what the fake world shows after every step of the lifecycle state machine (HUPs good
and bad, crashes, hangs, WINCH, TERM...). End to end: tests/server/test_readyz.py.
"""

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant

from unicornd.master import lifecycle as lc
from unicornd.master.readiness import readiness
from unicornd.master.scoreboard import IDLE

from test_lifecycle_model import Cfg, LifecycleMachine, Log, World, _Ops
from test_lifecycle_units import view

pytestmark = pytest.mark.timeout(900)


def make(workers=2):
    world = World()
    log = Log()
    model = lc.Lifecycle(Cfg(workers), None, _Ops(world), log)
    model.start()
    return world, log, model


def boot(world, model, pids=None):
    """The workers ``pids`` (all by default) have loaded the app: their slots say idle."""
    for pid in pids or list(model.workers):
        world.procs[pid].state = IDLE
    model.tick({pid: view(pid, state=world.procs[pid].state, world=world) for pid in model.workers})


def deliver_exits(world, model):
    for proc in list(world.procs.values()):
        if not proc.alive and not proc.reaped:
            proc.reaped = True
            model.child_exited(proc.pid, proc.status, world.view(proc))


def test_not_ready_until_every_worker_has_booted_the_first_time():
    world, log, model = make(workers=2)
    assert readiness(model) == (False, "starting: 0 of 2 worker(s) serving")
    first = min(model.workers)
    boot(world, model, [first])
    assert readiness(model) == (False, "starting: 1 of 2 worker(s) serving")
    boot(world, model)
    assert readiness(model) == (True, "2 worker(s) serving")


def test_a_worker_replaced_later_leaves_the_server_ready_while_others_serve():
    world, log, model = make(workers=2)
    boot(world, model)
    victim = min(model.workers)
    world.procs[victim].exit(1)
    deliver_exits(world, model)
    assert len(model.serving()) == 1 and len(model.workers) == 2  # its replacement boots
    assert readiness(model)[0] is True
    # Every worker gone at once (and their replacements booting): nothing serves.
    for pid in list(model.workers):
        world.procs[pid].exit(1)
    deliver_exits(world, model)
    assert not model.serving()
    assert readiness(model) == (False, "no worker serving")
    boot(world, model)
    assert readiness(model)[0] is True


def test_a_failed_reload_is_not_ready_until_a_later_reload_completes():
    world, log, model = make(workers=2)
    boot(world, model)
    old = set(model.workers)
    # A reload that is rolling over is ready: the old workers serve meanwhile.
    model.begin_reload(Cfg(2, "broken"), None)
    assert readiness(model)[0] is True
    for pid in set(model.workers) - old:
        world.procs[pid].exit(lc.APP_LOAD_ERROR)
    deliver_exits(world, model)
    assert log.count("Reload failed") == 1
    assert {r.pid for r in model.serving()} == old  # the old generation serves on...
    ready, why = readiness(model)                    # ...and the server says it is not current
    assert not ready
    assert why == ("the last reload failed (the new workers cannot load the app); "
                   "the previous settings serve")
    # Time, crashes and replacements of the old generation do not clear it...
    world.procs[min(old)].exit(1)
    deliver_exits(world, model)
    boot(world, model)
    assert readiness(model)[0] is False
    # ...a reload that completes does.
    model.begin_reload(Cfg(2), None)
    assert readiness(model)[0] is False  # still rolling: the last finished reload failed
    boot(world, model)
    deliver_exits(world, model)
    assert log.count("Reload complete") == 1
    assert readiness(model) == (True, "2 worker(s) serving")


def test_settings_that_did_not_load_on_hup_count_as_a_failed_reload():
    world, log, model = make(workers=1)
    boot(world, model)
    model.reload_failure = "the new settings did not load: bad worker_class"  # set by the master
    assert readiness(model) == (False, "the last reload failed (the new settings did not load: "
                                       "bad worker_class); the previous settings serve")


def test_draining_and_stopping_are_not_ready_though_the_workers_serve():
    world, log, model = make(workers=2)
    boot(world, model)
    assert readiness(model, drain_left=4.6) == (False, "draining: TERM received, stopping in 5 s")
    assert len(model.serving()) == 2
    model.stop_plan()
    assert readiness(model) == (False, "stopping")
    assert readiness(model, drain_left=1.0) == (False, "stopping")  # INT while draining


def test_winch_leaves_no_worker_and_the_server_unready():
    world, log, model = make(workers=2)
    boot(world, model)
    model.stop_workers()
    deliver_exits(world, model)
    assert readiness(model) == (False, "no worker serving")


class ReadinessMachine(LifecycleMachine):
    """The lifecycle state machine, with what /readyz would answer checked after every step
    against what the world shows (the processes, the log), not against the model's fields."""

    @invariant()
    def ready_means_a_booted_live_worker_and_no_failed_reload_since_the_last_success(self):
        ready, why = readiness(self.model)
        if self.stopped:
            assert not ready and why == "stopping"
            return
        lines = [line for _, line in self.log.lines]
        failed = max((i for i, line in enumerate(lines) if line.startswith("Reload failed")),
                     default=-1)
        completed = max((i for i, line in enumerate(lines) if line.startswith("Reload complete")),
                        default=-1)
        if failed > completed:
            assert not ready, (why, lines[-6:])
        if ready:
            # A worker that has loaded the app (one reaped behind the master's back counts
            # until the next tick reports it: the master cannot know sooner).
            booted = [pid for pid, rec in self.model.workers.items()
                      if rec.phase == lc.SERVING and self.world.procs[pid].state != lc.SLOT_BOOTING]
            assert booted, (why, lines[-6:])
            assert "ready" in self.world.notified  # systemd heard READY=1 before any 200
        else:
            assert why  # every 503 says why


ReadinessMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_readiness_follows_the_lifecycle = ReadinessMachine.TestCase

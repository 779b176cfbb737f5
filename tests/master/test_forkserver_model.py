"""The lifecycle model with preload_app's fork servers (master/forkserver.py): spawns that
wait for a fork server to load the app, and fork servers that cannot (the end-to-end tests
are in tests/server/test_forkserver.py)."""

import signal

import pytest

from unicornd.master import lifecycle as lc
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR

from test_lifecycle_model import Cfg, Log, World, _Ops
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

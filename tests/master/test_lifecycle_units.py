"""Single decisions of the lifecycle model, one scenario each (the interleavings are in
test_lifecycle_model.py)."""

import signal

import pytest

from unicornd.master import lifecycle as lc
from unicornd.master.scoreboard import BOOTING as SLOT_BOOTING, BUSY, FREE, IDLE, WANTS_RECYCLE
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR

from test_lifecycle_model import Cfg, Log, View, World, _Ops


def make(workers=1, **cfg):
    world = World()
    log = Log()
    model = lc.Lifecycle(Cfg(workers, **cfg), None, _Ops(world), log)
    model.start()
    return world, log, model


def view(pid, state=IDLE, heartbeat=None, flags=0, request_start=0.0, requests=0, world=None):
    v = View()
    v.pid, v.state, v.flags = pid, state, flags
    v.heartbeat = world.now if heartbeat is None else heartbeat
    v.boot_start, v.request_start, v.requests, v.method, v.path = 0.0, request_start, requests, "GET", "/x"
    return v


def boot_all(world, model):
    model.tick({pid: view(pid, world=world) for pid in model.workers})
    assert all(r.phase == lc.SERVING for r in model.workers.values())


def test_a_heartbeat_the_worker_never_wrote_kills_nothing():
    """Case 7: a slot read as zero (heartbeat 0.0, i.e. the machine's uptime ago) or one
    that says another pid is not this worker's word: no WORKER TIMEOUT on it."""
    world, log, model = make()
    boot_all(world, model)
    (pid,) = model.workers
    world.now += 100
    model.tick({pid: view(pid, heartbeat=0.0, world=world)})          # zeroed heartbeat
    model.tick({pid: view(0, state=FREE, heartbeat=0.0, world=world)})  # a cleared slot
    model.tick({pid: view(pid + 1, heartbeat=1.0, world=world)})     # someone else's slot
    assert world.kills == [] and log.count("WORKER TIMEOUT") == 0
    # ...while a heartbeat it did write, and then stopped writing, still times it out.
    model.tick({pid: view(pid, heartbeat=world.now - 31, world=world)})
    assert world.kills == [(pid, signal.SIGABRT)]
    assert log.count("WORKER TIMEOUT (pid %d) no heartbeat for 31.0 s" % pid) == 1


def test_a_worker_near_max_requests_gets_its_replacement_before_it_stops():
    world, log, model = make(workers=2)
    boot_all(world, model)
    first, second = sorted(model.workers)
    model.tick({first: view(first, flags=WANTS_RECYCLE, world=world),
                second: view(second, world=world)})
    # Surge: three processes while the replacement boots; the old one still serves.
    assert len(model.workers) == 3 and model.workers[first].phase == lc.SERVING
    replacement = max(model.workers)
    model.tick({pid: view(pid, world=world) for pid in model.workers})
    assert (first, signal.SIGTERM) in world.kills
    assert model.workers[replacement].phase == lc.SERVING


def test_a_replacement_that_cannot_boot_backs_off_and_never_halts():
    world, log, model = make(workers=1)
    boot_all(world, model)
    (old,) = model.workers
    world.procs[old].exit(0)
    model.child_exited(old, 0, view(old, world=world))   # it reached max_requests
    delays = []
    for _ in range(8):
        (pid,) = model.workers
        model.child_exited(pid, APP_LOAD_ERROR << 8, view(pid, state=SLOT_BOOTING, world=world))
        assert not model.workers  # backing off: nothing spawned at once
        delays.append(model.retry_at - world.now)
        world.now = model.retry_at
        model.tick({})
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert log.count("could not boot") + log.count("cannot load the app") == 8
    assert log.count("retrying with back-off") == 1  # said once, then quieter


def test_first_boot_failure_halts_with_gunicorns_exit_status():
    world, log, model = make(workers=1)
    (pid,) = model.workers
    with pytest.raises(lc.HaltServer) as halt:
        model.child_exited(pid, APP_LOAD_ERROR << 8, view(pid, state=SLOT_BOOTING, world=world))
    assert halt.value.exit_status == APP_LOAD_ERROR
    world, log, model = make(workers=1)
    (pid,) = model.workers
    with pytest.raises(lc.HaltServer) as halt:
        model.child_exited(pid, WORKER_BOOT_ERROR << 8, view(pid, state=SLOT_BOOTING, world=world))
    assert halt.value.exit_status == WORKER_BOOT_ERROR


def test_the_masters_own_sigkill_is_logged_as_such():
    world, log, model = make(workers=1)
    boot_all(world, model)
    (pid,) = model.workers
    model.scale(+1)
    model.tick({p: view(p, world=world) for p in model.workers})
    model.workers[pid].phase = lc.LEAVING
    model.workers[pid].phase_at = world.now
    world.procs[pid].hung = True
    world.now += 36  # graceful_timeout 30 + the margin
    model.tick({p: view(p, world=world) for p in model.workers})
    assert (pid, signal.SIGKILL) in world.kills
    model.child_exited(pid, signal.SIGKILL, view(pid, world=world))
    assert log.count("was killed by the master (graceful_timeout)") == 1
    assert log.count("Perhaps out of memory") == 0


def test_max_worker_memory_below_a_fresh_worker_warns_once():
    world, log, model = make(workers=1, max_worker_memory=1 << 20)
    world.rss = lambda pid: 50 << 20
    for _ in range(5):
        model.tick({p: view(p, world=world) for p in model.workers})
        world.now += 1
    assert log.count("below the RSS of a freshly booted worker") == 1
    assert log.count("Recycling worker") == 0 and len(world.procs) == 1

"""Single decisions of the lifecycle model, one scenario each (the interleavings are in
test_lifecycle_model.py)."""

import signal

import pytest

from unicornd.master import lifecycle as lc
from unicornd.master.scoreboard import (BOOTING as SLOT_BOOTING, FREE, IDLE, OVER_MEMORY_AT_BOOT,
                                        WANTS_RECYCLE)
from unicornd.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR

from test_lifecycle_model import Cfg, Log, View, World, _Ops


def make(workers=1, **cfg):
    world = World()
    log = Log()
    model = lc.Lifecycle(Cfg(workers, **cfg), None, _Ops(world), log)
    model.start()
    return world, log, model


def view(pid, state=IDLE, heartbeat=None, flags=0, request_start=0.0, requests=0, world=None,
         load=0.0, capacity=1):
    v = View()
    v.pid, v.state, v.flags, v.load, v.capacity = pid, state, flags, load, capacity
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
        model.tick({p: view(p, flags=OVER_MEMORY_AT_BOOT, world=world) for p in model.workers})
        world.now += 1
    assert log.count("below the RSS of a freshly booted worker") == 1
    assert log.count("Recycling worker") == 0 and len(world.procs) == 1


def test_a_worker_that_grows_after_boot_is_recycled_for_memory():
    world, log, model = make(workers=1, max_worker_memory=1 << 20)
    world.rss = lambda pid: 50 << 20
    (pid,) = model.workers
    for _ in range(3):
        model.tick({p: view(p, requests=3, world=world) for p in model.workers})
        world.now += 1
    assert log.count(f"Recycling worker {pid}: its RSS of 50 MiB is above max_worker_memory") == 1
    assert len(model.workers) == 2  # the replacement, then the old one leaves once it serves


# -- max_workers: scaling between the floor and the ceiling ---------------------------------


class Load:
    """Each worker's load integral (request-seconds), grown by a share of its capacity per
    second, and the master's one-second ticks."""

    def __init__(self, world, model, capacity=1):
        self.world, self.model, self.capacity = world, model, capacity
        self.served = {}

    def run(self, seconds, share=1.0, shares=None, step=1.0):
        """``share`` of every serving worker's capacity in use (``shares``: per pid) while
        ``seconds`` pass; the master ticks every ``step``."""
        elapsed = 0.0
        while elapsed < seconds - 1e-9:
            self.world.now += step
            elapsed += step
            views = {}
            for pid, rec in self.model.workers.items():
                if rec.phase == lc.SERVING or rec.phase == lc.BOOTING:
                    got = (shares or {}).get(pid, share) if rec.phase == lc.SERVING else 0.0
                    self.served[pid] = self.served.get(pid, 0.0) + got * step * self.capacity
                views[pid] = view(pid, world=self.world, load=self.served.get(pid, 0.0),
                                  capacity=self.capacity)
            self.model.tick(views)
            for pid in [p for p, r in self.model.workers.items() if r.phase == lc.LEAVING]:
                self.model.child_exited(pid, 0, view(pid, world=self.world))

    def count(self):
        return len(self.model.active())


def scaling(workers=1, max_workers=3, up=5.0, down=30.0, capacity=1):
    world, log, model = make(workers=workers, max_workers=max_workers, scale_up_period=up,
                             scale_down_period=down)
    load = Load(world, model, capacity)
    load.run(1.0, share=0.0)  # booted
    return world, log, model, load


def test_all_workers_busy_for_the_period_adds_one_then_one_per_period_up_to_the_ceiling():
    world, log, model, load = scaling(workers=1, max_workers=3, up=5.0)
    start = world.now
    load.run(4.0)
    assert load.count() == 1 and log.count("Scaling up") == 0  # 4 s busy: not yet
    load.run(1.0)
    assert load.count() == 2
    assert log.count("Scaling up to 2 workers: all 1 busy for 5.0 s") == 1
    assert world.hooked == [(start + 5.0, "nworkers_changed", (2, 1))]
    load.run(30.0)
    assert load.count() == 3 and model.scaling.ceiling == 3
    ups = [t for t, name, args in world.hooked if name == "nworkers_changed"]
    assert len(ups) == 2 and ups[1] - ups[0] >= 5.0  # one per period at most
    assert log.count("all 2 busy") == 1 and log.count("Scaling up to 4") == 0


def test_a_burst_shorter_than_the_period_adds_nothing():
    world, log, model, load = scaling(workers=2, max_workers=4, up=5.0)
    for _ in range(6):
        load.run(4.0)                # busy 4 s...
        load.run(1.0, share=0.5)     # ...then a breath: the run starts again
    assert load.count() == 2 and log.count("Scaling") == 0


def test_back_to_back_short_requests_count_as_busy_though_a_glance_finds_the_worker_idle():
    """A sync worker between two requests shows IDLE at most ticks; its load integral says
    it was busy 95% of the time: that is what counts."""
    world, log, model, load = scaling(workers=2, max_workers=3, up=3.0)
    load.run(3.0, share=0.95)
    assert load.count() == 3


def test_one_worker_not_busy_holds_the_count():
    world, log, model, load = scaling(workers=2, max_workers=3, up=3.0)
    first, second = sorted(model.workers)
    load.run(20.0, shares={first: 1.0, second: 0.5})
    assert load.count() == 2 and log.count("Scaling") == 0


def test_spare_capacity_for_the_period_retires_the_least_busy_never_below_the_floor():
    world, log, model, load = scaling(workers=1, max_workers=3, up=2.0, down=10.0)
    load.run(10.0)
    assert load.count() == 3
    a, b, c = sorted(r.pid for r in model.active())
    world.hooked.clear()
    # 0.9 of 3 workers' capacity: it fits on 2 at 0.45 each.
    load.run(9.0, shares={a: 0.4, b: 0.1, c: 0.4})
    assert load.count() == 3  # not yet: 9 s
    load.run(1.0, shares={a: 0.4, b: 0.1, c: 0.4})
    assert load.count() == 2 and (b, signal.SIGTERM) in world.kills  # the least busy one
    assert log.count(f"Scaling down to 2 workers: at most 0.9 of 3 workers' capacity in use "
                     f"for 10.0 s; retiring worker {b}") == 1
    assert world.hooked[0][1:] == ("nworkers_changed", (2, 3))
    load.run(60.0, share=0.0)
    assert load.count() == 1 and model.target == 1  # the floor
    assert log.count("Scaling down to 1 workers") == 1 and log.count("Scaling down to 0") == 0


def test_the_same_load_that_scaled_up_does_not_scale_down():
    """Hysteresis: 2.1 workers' worth keeps 3 workers (0.7 each), which is neither busy nor
    spare: the count stays, it does not flap."""
    world, log, model, load = scaling(workers=2, max_workers=3, up=2.0, down=5.0)
    load.run(5.0)
    assert load.count() == 3
    load.run(60.0, share=0.7)
    assert load.count() == 3 and log.count("Scaling down") == 0


def test_threads_count_as_capacity():
    """gthread with 4 threads: 2 requests in flight on average is half its capacity."""
    world, log, model, load = scaling(workers=1, max_workers=2, up=2.0, capacity=4)
    load.run(10.0, share=0.5)
    assert load.count() == 1
    load.run(3.0, share=1.0)
    assert load.count() == 2


def test_no_second_worker_is_added_while_the_first_one_boots():
    world, log, model, load = scaling(workers=1, max_workers=3, up=2.0)
    load.run(2.0)
    assert len(model.workers) == 2
    (new,) = [p for p, r in model.workers.items() if r.phase == lc.BOOTING]
    # It takes 10 s to boot: the busy one is not counted as "all busy" meanwhile.
    for _ in range(10):
        world.now += 1
        model.tick({p: view(p, world=world, load=load.served.get(p, 0.0) + world.now,
                            state=SLOT_BOOTING if p == new else IDLE) for p in model.workers})
    assert len(model.workers) == 2 and log.count("Scaling up") == 1


def test_ttin_and_ttou_move_the_floor_and_the_count():
    world, log, model, load = scaling(workers=2, max_workers=4)
    model.scale(+1)
    assert (model.scaling.floor, model.target, model.scaling.ceiling) == (3, 3, 4)
    model.scale(+1)
    model.scale(+1)
    assert (model.scaling.floor, model.target, model.scaling.ceiling) == (5, 5, 5)
    for _ in range(6):
        model.scale(-1)
    assert (model.scaling.floor, model.target) == (1, 1)
    assert model.scaling.last["reason"] == "TTOU: floor 1, ceiling 5"
    assert model.scaling.changes[("up", "ttin")] == 3 and model.scaling.changes[("down", "ttou")] == 4


def test_a_reload_keeps_the_scaled_count_within_the_new_bounds():
    world, log, model, load = scaling(workers=1, max_workers=4, up=2.0)
    load.run(20.0)
    assert load.count() == 4
    model.begin_reload(Cfg(1, max_workers=3), None)
    assert model.target == 3
    model.begin_reload(Cfg(2), None)  # scaling off: workers it is
    assert model.target == 2 and not model.scaling.enabled


def test_without_max_workers_nothing_scales():
    world, log, model = make(workers=2)
    load = Load(world, model)
    load.run(100.0)
    assert len(model.active()) == 2 and log.count("Scaling") == 0

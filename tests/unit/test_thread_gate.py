"""The gthread worker's gate (unicornd/workers/thread_gate.py) on a fake clock: one pool thread
runs until it blocks; a parked one is admitted when every running one is blocked; a thread
whose event ended parks while another can take the next event. A thread found runnable (on
a CPU or waiting for one: preempted) is not blocked until RUNNABLE_BLOCKED_AFTER. The stateful
test drives random interleavings of pool threads, their sleeping and waking, and the main
thread's looks."""

import os
import threading
import time

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from unicornd.workers.thread_gate import (BLOCKED_AFTER, CHECK_SECONDS, QUIET_SECONDS,
                                          RUNNABLE_BLOCKED_AFTER, ThreadGate)

LOOK = CHECK_SECONDS  # the main thread's wait between looks


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def gate(n=4, runnable=()):
    """A gate on a fake clock; the threads in ``runnable`` are found runnable, the others
    asleep."""
    clock = Clock()
    return ThreadGate(n, clock, runnable=lambda i: i in runnable), clock


def admitted_without_waiting(g, i) -> bool:
    """Thread i's admission is there to be consumed (its park() would return at once)."""
    return g._wake[i].acquire(blocking=False)


def test_one_thread_runs_at_first():
    g, _ = gate(4)
    assert g.running == {0}
    assert not any(admitted_without_waiting(g, i) for i in range(1, 4))


def test_no_thread_is_admitted_while_the_running_one_is_polling_or_not_yet_blocked():
    g, clock = gate(3)
    assert g.rebalance() is None  # polling
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER / 2
    assert g.rebalance() is None  # serving, not for long yet
    assert g.running == {0}


def test_a_parked_thread_is_admitted_once_every_running_one_is_blocked():
    g, clock = gate(3)
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER * 2
    assert g.rebalance() == 1
    assert g.running == {0, 1}
    assert admitted_without_waiting(g, 1)
    # thread 1 polls (it can take the next event): nobody more
    assert g.rebalance() is None
    g.busy[1] = clock.now
    clock.now += BLOCKED_AFTER * 2
    assert g.rebalance() == 2
    assert g.rebalance() is None  # all run
    assert g.running == {0, 1, 2}


def test_a_preempted_thread_is_not_blocked_until_it_has_been_runnable_for_long():
    """Under CPU contention the scheduler keeps a pool thread off its CPU for milliseconds:
    it is runnable, not waiting on anything. Another thread let in would only contend with
    it. A long CPU-bound request still lets one in, after RUNNABLE_BLOCKED_AFTER."""
    g, clock = gate(3, runnable={0})
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER * 3
    assert g.rebalance() is None
    assert g.check_in() == LOOK  # it looks again
    clock.now = g.busy[0] + RUNNABLE_BLOCKED_AFTER * 1.01
    assert g.rebalance() == 1
    assert admitted_without_waiting(g, 1)


def test_a_thread_that_falls_asleep_is_blocked_at_the_next_look():
    asleep = set()
    clock = Clock()
    g = ThreadGate(2, clock, runnable=lambda i: i not in asleep)
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER * 2
    assert g.rebalance() is None  # runnable
    wait = g.check_in()
    asleep.add(0)  # it waits on its database now
    clock.now += wait
    assert g.rebalance() == 1


def test_a_thread_ends_its_event_and_parks_while_a_preempted_one_can_take_the_next():
    g, clock = gate(3, runnable={1})
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER * 2
    assert g.rebalance() == 1  # 0 asleep: 1 let in
    g.busy[1] = clock.now
    clock.now += BLOCKED_AFTER * 2
    g.busy[0] = 0.0
    assert g.should_park(0)  # 1 is only preempted: it takes the next event
    assert g.running == {1}


def test_the_state_of_a_real_thread_is_read_from_proc():
    """The default ``runnable`` reads /proc/self/task/TID/stat: the thread reading is
    runnable; one blocked in a read is not, once it has gone to sleep."""
    if not os.path.isdir(f"/proc/self/task/{threading.get_native_id()}"):
        import pytest
        pytest.skip("no /proc/self/task here (not Linux): runnable() is always False")
    g = ThreadGate(2)
    g.register(0)
    assert g.runnable(0)
    r, w = os.pipe()
    started = threading.Event()

    def reader():
        g.register(1)
        started.set()
        os.read(r, 1)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert started.wait(10)
    deadline = time.monotonic() + 10
    while g.runnable(1) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not g.runnable(1)
    os.write(w, b"x")
    t.join(10)
    os.close(r)
    os.close(w)
    assert not ThreadGate(1).runnable(0)  # not registered: taken as asleep


def test_park_returns_when_the_main_thread_admits_the_thread():
    g, clock = gate(2)
    parked = threading.Event()
    back = threading.Event()

    def pool_thread():
        parked.set()
        g.park(1)
        back.set()

    t = threading.Thread(target=pool_thread, daemon=True)
    t.start()
    assert parked.wait(10)
    assert not back.is_set()
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER * 2
    assert g.rebalance() == 1
    assert back.wait(10)
    t.join(10)


def test_a_thread_whose_event_ended_parks_only_if_another_can_take_the_next():
    g, clock = gate(3)
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER * 2
    g.rebalance()  # 1 admitted: 0 is blocked
    g.busy[1] = clock.now
    clock.now += BLOCKED_AFTER * 2
    g.rebalance()  # 2 admitted: 0 and 1 are blocked
    # 0's event ends; 1 is blocked, 2 polls: 0 is not needed
    g.busy[0] = 0.0
    assert g.should_park(0)
    assert g.running == {1, 2}
    # 2 begins an event and blocks; 1 ends: nobody else can take events, 1 stays
    g.busy[2] = clock.now
    clock.now += BLOCKED_AFTER * 2
    g.busy[1] = 0.0
    assert not g.should_park(1)
    assert g.running == {1, 2}


def test_the_last_running_thread_never_parks():
    g, _ = gate(4)
    assert not g.should_park(0)
    assert g.running == {0}


def test_the_main_thread_looks_while_events_come_and_dozes_when_quiet():
    g, clock = gate(2)
    g.events += 1
    assert g.check_in() == LOOK
    clock.now += QUIET_SECONDS / 2
    assert g.check_in() == LOOK  # quiet, not for long
    clock.now += QUIET_SECONDS
    assert g.check_in() is None
    assert g.dozing
    g.dozing = False  # (a pool thread clears it when it begins an event, and nudges)
    g.events += 1
    assert g.check_in() == LOOK


def test_an_event_served_meanwhile_keeps_the_main_thread_looking():
    g, clock = gate(2)
    g.busy[0] = clock.now
    clock.now += QUIET_SECONDS * 10
    assert g.check_in() == LOOK  # one is being served: it may block


def test_the_main_thread_looks_every_check_seconds_whatever_is_being_served():
    """Not at the moment each event could first be blocked: under load some event always
    just began, and looking about every millisecond took the GIL from the running thread
    that often (a tail at 1000 connections)."""
    g, clock = gate(2)
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER / 4
    assert g.check_in() == CHECK_SECONDS
    g.busy[0] = 0.0
    g.events += 1
    assert g.check_in() == CHECK_SECONDS


def test_with_every_thread_running_the_main_thread_waits_until_one_parks():
    g, clock = gate(2)
    g.busy[0] = clock.now
    clock.now += BLOCKED_AFTER * 2
    g.rebalance()
    assert g.check_in() is None and g.all_run
    # An event begun does not wake it (gthread's pool thread nudges only if ``dozing``): with
    # one thread, or all admitted, that would be a pipe write and a wake-up per event.
    assert not g.dozing
    g.busy[0] = 0.0
    assert g.should_park(0)  # 1 polls: 0 parks, and wakes the main thread (all_run)


def test_with_one_thread_no_event_wakes_the_main_thread():
    g, clock = gate(1)
    for _ in range(3):
        g.busy[0] = clock.now
        g.events += 1
        assert not g.dozing  # the pool thread's test before its nudge
        clock.now += QUIET_SECONDS * 2
        g.busy[0] = 0.0
        assert not g.should_park(0)
        assert g.rebalance() is None
        assert g.check_in() is None
    assert not g.dozing and g.all_run


def test_close_releases_every_parked_thread():
    g, _ = gate(3)
    done = []
    threads = [threading.Thread(target=lambda i=i: (g.park(i), done.append(i)), daemon=True)
               for i in (1, 2)]
    for t in threads:
        t.start()
    g.close()
    for t in threads:
        t.join(10)
    assert sorted(done) == [1, 2]
    assert g.rebalance() is None and g.check_in() is None


class GateMachine(RuleBasedStateMachine):
    """Pool threads (polling, serving, parked) and the main thread's looks, in any order."""

    def __init__(self):
        super().__init__()
        self.n = 4
        self.clock = Clock()
        # What /proc would say of each thread: asleep (waiting on something) or runnable.
        self.asleep = [False] * self.n
        self.slept_at = [0.0] * self.n
        self.g = ThreadGate(self.n, self.clock, runnable=lambda i: not self.asleep[i])
        self.parked = set(range(1, self.n))
        # When the main thread looks next (None: it waits for a nudge); it looks at once.
        self.next_look = self.clock.now

    def polling(self):
        return [i for i in self.g.running if self.g.busy[i] == 0.0]

    def serving(self):
        return [i for i in self.g.running if self.g.busy[i] != 0.0]

    def blocked(self, i, now) -> bool:
        began = self.g.busy[i]
        if not began:
            return False
        served = now - began
        return served >= BLOCKED_AFTER and (self.asleep[i] or served >= RUNNABLE_BLOCKED_AFTER)

    def blocked_since(self, i) -> float:
        """When thread i (blocked now) became blocked."""
        began = self.g.busy[i]
        by_running = began + RUNNABLE_BLOCKED_AFTER
        if self.asleep[i]:
            return max(began + BLOCKED_AFTER, min(self.slept_at[i], by_running))
        return by_running

    @precondition(lambda self: any(self.g.busy[i] == 0.0 for i in self.g.running))
    @rule(data=st.data())
    def begin_event(self, data):
        i = data.draw(st.sampled_from(sorted(self.polling())))
        self.g.busy[i] = self.clock.now
        self.asleep[i] = False
        self.g.events += 1
        if self.g.dozing:  # (gthread's pool thread: it nudges the main thread)
            self.g.dozing = False
            self.next_look = self.clock.now

    @precondition(lambda self: any(self.g.busy[i] != 0.0 for i in self.g.running))
    @rule(data=st.data())
    def end_event(self, data):
        i = data.draw(st.sampled_from(sorted(self.serving())))
        self.g.busy[i] = 0.0
        self.asleep[i] = False
        if self.g.should_park(i):
            assert i not in self.g.running
            self.parked.add(i)
            if self.g.dozing or self.g.all_run:  # (nudged, as above)
                self.g.dozing = self.g.all_run = False
                self.next_look = self.clock.now

    @precondition(lambda self: any(self.g.busy[i] != 0.0 for i in self.g.running))
    @rule(data=st.data())
    def sleep_or_wake(self, data):
        """A thread serving an event waits on something (its database, a sleep), or wakes
        (or is runnable again after the scheduler preempted it)."""
        i = data.draw(st.sampled_from(sorted(self.serving())))
        if not self.asleep[i]:
            self.slept_at[i] = self.clock.now
        self.asleep[i] = not self.asleep[i]

    @rule(dt=st.one_of(st.floats(min_value=0.0, max_value=BLOCKED_AFTER * 3),
                       st.floats(min_value=QUIET_SECONDS, max_value=RUNNABLE_BLOCKED_AFTER)))
    def time_passes(self, dt):
        # The main thread wakes for its look: the clock runs to it at most.
        if self.next_look is not None:
            dt = min(dt, max(0.0, self.next_look - self.clock.now))
        self.clock.now += dt

    @precondition(lambda self: self.next_look is not None)
    @rule()
    def main_thread_wakes_and_looks(self):
        """Time runs to the main thread's next look, which it takes."""
        self.clock.now = max(self.clock.now, self.next_look)
        self.main_thread_looks()

    @rule()
    def main_thread_looks(self):
        g, now = self.g, self.clock.now
        all_blocked = all(self.blocked(j, now) for j in g.running)
        i = self.g.rebalance()
        assert (i is not None) == (all_blocked and bool(self.parked))
        if i is not None:
            assert i in self.parked
            self.parked.discard(i)
            assert admitted_without_waiting(self.g, i)  # its park() returns
        wait = self.g.check_in()
        assert wait is None or 0.0 <= wait <= LOOK
        self.next_look = None if wait is None else now + wait

    @invariant()
    def some_thread_runs(self):
        assert self.g.running
        assert self.g.running.isdisjoint(self.parked)
        assert self.g.running | self.parked == set(range(self.n))

    @invariant()
    def a_stuck_worker_is_always_looked_at(self):
        """If every running thread is blocked and some thread is parked, the main thread is
        not dozing: its next look (at most CHECK_SECONDS away) admits one."""
        now = self.clock.now
        g = self.g
        blocked = all(self.blocked(i, now) for i in g.running)
        if blocked and self.parked:
            assert not g.dozing and not g.all_run
            # ...and looks by CHECK_SECONDS after the last of them became blocked (asleep
            # past BLOCKED_AFTER, or runnable past RUNNABLE_BLOCKED_AFTER).
            last = max(self.blocked_since(i) for i in g.running)
            assert self.next_look is not None
            assert self.next_look <= last + CHECK_SECONDS + 1e-9


TestGateMachine = GateMachine.TestCase
TestGateMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)

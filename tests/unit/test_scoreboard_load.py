"""The load integral a worker keeps in its scoreboard slot (max_workers): requests in flight
times how long, brought up to date at every change and read up to now by the master."""

from unicornd.master.scoreboard import Scoreboard


def test_the_load_integral_counts_requests_in_flight_over_time():
    board = Scoreboard(nslots=4)
    index = board.allocate()
    slot = board.writer(index)
    slot.in_flight(100.0, 1)        # one request from 100 s...
    slot.in_flight(102.0, 2)        # ...a second from 102 s...
    slot.in_flight(103.0, 1)        # ...one of them ends at 103 s
    view = board.read(index)
    assert view.inflight == 1 and view.load == 1 * 2 + 2 * 1 and view.load_at == 103.0
    # The master reads it up to now: the request still in flight counts until then.
    assert view.load_seconds(105.5) == 4 + 2.5
    slot.in_flight(106.0, 0)
    assert board.read(index).load_seconds(200.0) == 7.0  # nothing in flight: it stays


def test_a_released_slot_starts_from_zero():
    board = Scoreboard(nslots=1)
    index = board.allocate()
    board.writer(index).in_flight(10.0, 3)
    board.release(index)
    again = board.allocate()
    view = board.read(again)
    assert (view.inflight, view.load, view.load_at) == (0, 0.0, 0.0)
    assert view.load_seconds(1e6) == 0.0


def test_slots_do_not_overlap():
    board = Scoreboard(nslots=3)
    a, b, c = board.allocate(), board.allocate(), board.allocate()
    board.writer(b).in_flight(1.0, 5)
    board.writer(b).in_flight(2.0, 5)
    board.writer(a).count_status(200)
    assert board.read(a).load == 0.0 and board.read(c).load == 0.0
    assert board.read(b).load == 5.0 and board.counters(b).requests == 0

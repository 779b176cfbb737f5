"""What a worker's slot writes per request (busy, progress, finished) reads back as the master
sees it: word stores and a request name written only when it changes (SERIAL workers)."""

from unicornd.master.scoreboard import BUSY, IDLE, SERIAL, Scoreboard


def slot(mode=SERIAL):
    board = Scoreboard(nslots=3)
    index = board.allocate()
    writer = board.writer(index)
    writer.set_mode(mode, 1)
    return board, index, writer


def test_busy_progress_finished_read_back():
    board, index, w = slot()
    w.busy(10.0, "GET", "/a")
    view = board.read(index)
    assert (view.state, view.heartbeat, view.request_start) == (BUSY, 10.0, 10.0)
    assert (view.method, view.path) == ("GET", "/a")
    assert (view.progress, view.recent, view.candidates, view.capacity) == (10.0, 10.0, 0, 1)
    w.progress(10.5, 11.0, 1)
    view = board.read(index)
    assert (view.progress, view.recent, view.candidates, view.capacity) == (10.5, 11.0, 1, 1)
    w.finished(12.0, 404, 0.002)
    w.finished(13.0, 200, 0.3)
    w.finished(14.0)  # (no duration: only the served count moves)
    view = board.read(index)
    assert (view.state, view.heartbeat, view.requests) == (IDLE, 14.0, 3)
    counters = board.counters(index)
    assert counters.by_status() == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0, "none": 0}
    assert counters.buckets[0] == 1 and counters.buckets[6] == 1 and sum(counters.buckets) == 2
    assert counters.duration_sum == 0.302
    # a duration on a bound falls in that bound's bucket (Prometheus "le")
    w.finished(15.0, 200, 0.005)
    w.finished(16.0, 200, 0.01)
    assert board.counters(index).buckets[:2] == [2, 1]


def test_a_serial_slot_names_each_request_it_serves():
    board, index, w = slot()
    names = [("GET", "/a"), ("GET", "/a"), ("POST", "/a"), ("POST", "/b"), ("GET", "/a"),
             ("GET", "/" + "x" * 200)]
    for i, (method, path) in enumerate(names):
        w.busy(float(i), method, path)
        view = board.read(index)
        assert (view.method, view.path) == (method, path[:96])
        w.finished(float(i) + 0.5, 200, 0.001)


def test_a_slot_several_threads_name_writes_every_name():
    # (ConcurrentRequests: busy from a pool thread, name_request from the tick; no cache that
    # could come to disagree with the slot)
    board, index, w = slot(mode=0)
    other = board.writer(index)  # another writer of the same slot, as a racing thread would be
    w.busy(1.0, "GET", "/a")
    other.name_request(2.0, "GET", "/b")
    w.busy(3.0, "GET", "/a")
    view = board.read(index)
    assert (view.path, view.request_start) == ("/a", 3.0)

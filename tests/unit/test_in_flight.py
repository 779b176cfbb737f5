"""ConcurrentRequests' heartbeat look at the requests in flight, in-process: the connections
being served and their Exchanges stand in for a worker (no process, no clock but ``now``)."""

from types import SimpleNamespace

from unicornd.client_socket import ClientSocket
from unicornd.exchange import Exchange
from unicornd.workers.base import ConcurrentRequests, InFlight


def _conn(progress, started, waiting=False):
    io = ClientSocket.__new__(ClientSocket)
    io.progress, io.waiting, io.app_owned = progress, waiting, False
    req = SimpleNamespace(method="GET", path="/", chunked=False, content_length=None,
                          expect_continue=False)
    return SimpleNamespace(io=io, ex=Exchange(req, started, True))


def _watch(conns, now, timeout=30):
    stalled = []
    worker = SimpleNamespace(cfg=SimpleNamespace(timeout=timeout), slot=None,
                             stalled=lambda entry, at: stalled.append(entry),
                             serving_connections=lambda: [(c, "owner") for c in conns])
    entries = ConcurrentRequests.in_flight(worker)
    ConcurrentRequests.watch_requests(worker, now, entries)
    return entries, stalled


def test_a_request_that_just_began_on_a_long_idle_connection_is_not_stalled():
    # keepalive longer than timeout: the connection's last progress is its previous request's,
    # 100 s ago; the new request began 1 s ago and has not noted its start yet
    entries, stalled = _watch([_conn(progress=0.0, started=99.0)], now=100.0)
    assert len(entries) == 1 and stalled == []


def test_a_request_with_no_progress_for_timeout_is_stalled_and_one_waiting_is_not():
    hung = _conn(progress=10.0, started=5.0)
    slow_client = _conn(progress=10.0, started=5.0, waiting=True)
    entries, stalled = _watch([hung, slow_client], now=100.0)
    assert [e.conn for e in stalled] == [hung]


def test_in_flight_is_oldest_first_and_skips_connections_between_requests():
    idle = _conn(progress=1.0, started=1.0)
    idle.ex = None
    new, old = _conn(50.0, 50.0), _conn(20.0, 20.0)
    entries, _ = _watch([new, idle, old], now=60.0)
    assert [e.conn for e in entries] == [old, new]
    assert all(isinstance(e, InFlight) and e.owner == "owner" for e in entries)

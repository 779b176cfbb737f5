"""The hung-worker decision (unicornd/master/timeouts.py) with plain values: what is killed,
what is spared, per worker class. The slot fields come from a real scoreboard slot, written
the way each worker class writes it; the last tests check that the request loop writes them
so (progress on every write, none for a socket the app may take over)."""

import logging
import socket
import threading

import pytest

from unicornd.config import load_config
from unicornd.connection import Connection
from unicornd.context import ServerContext
from unicornd.master.scoreboard import BOOTING, BUSY, IDLE, SERIAL, Scoreboard
from unicornd.master.timeouts import hung_reason, request_stalled

T = 5.0  # timeout
FORK = 100.0  # when the master forked the worker


def slot(*, mode=0, capacity=1):
    board = Scoreboard(1)
    index = board.allocate()
    writer = board.writer(index)
    writer.set_mode(mode, capacity)
    writer.idle(FORK + 1)
    return board, index, writer


def sync_request(writer, started, progress=None, candidate=True):
    """What the sync worker writes: the request, then its progress as it happens."""
    writer.busy(started, "GET", "/x")
    p = started if progress is None else progress
    writer.progress(p, p, 1 if candidate else 0)


# -- no verdict at all ----------------------------------------------------------------------

@pytest.mark.parametrize("timeout", [0, 0.0, -1, None])
def test_timeout_zero_never_kills(timeout):
    board, i, w = slot(mode=SERIAL)
    sync_request(w, FORK + 1)
    assert hung_reason(board.read(i), FORK + 10_000, timeout, written_since=FORK) is None


def test_a_slot_not_written_since_the_fork_is_not_judged():
    board, i, w = slot()
    w.heartbeat(FORK - 50)  # the previous worker of this slot
    assert hung_reason(board.read(i), FORK + 1, T, written_since=FORK) is None


def test_booting_slot_is_judged_by_boot_timeout_not_here():
    board = Scoreboard(1)
    i = board.allocate()  # BOOTING, heartbeat = allocation time (real monotonic clock)
    view = board.read(i)
    assert view.state == BOOTING
    assert hung_reason(view, view.heartbeat + T / 2, T, written_since=view.heartbeat - 1) is None


# -- the loop is silent ---------------------------------------------------------------------

@pytest.mark.parametrize("mode,capacity", [(0, 4), (0, 1000), (SERIAL, 1)])
def test_idle_worker_with_a_silent_loop_is_killed(mode, capacity):
    board, i, w = slot(mode=mode, capacity=capacity)
    w.idle(FORK + 1)
    assert hung_reason(board.read(i), FORK + 1 + T - 0.1, T, written_since=FORK) is None
    reason = hung_reason(board.read(i), FORK + 1 + T + 0.5, T, written_since=FORK)
    assert reason == "no heartbeat for 5.5 s"


def test_busy_concurrent_worker_with_a_silent_loop_is_killed_even_if_its_requests_are_spared():
    # gthread main loop or greenlet hub silent: whatever its requests do, nobody tends them.
    board, i, w = slot(capacity=4)
    w.busy(FORK + 1, "GET", "/ws")
    w.progress(0.0, 0.0, 0)  # no candidate: all are websockets
    assert hung_reason(board.read(i), FORK + 1 + T + 1, T, written_since=FORK).startswith("no heartbeat")


# -- sync: the request is the loop -----------------------------------------------------------

def test_sync_request_without_progress_is_killed_with_its_request_line():
    board, i, w = slot(mode=SERIAL)
    sync_request(w, FORK + 1)
    assert hung_reason(board.read(i), FORK + 1 + T - 0.1, T, written_since=FORK) is None
    reason = hung_reason(board.read(i), FORK + 1 + T + 0.25, T, written_since=FORK)
    assert reason == "GET /x after 5.2 s, no progress for 5.2 s"


def test_sync_stream_that_writes_lives_past_timeout():
    board, i, w = slot(mode=SERIAL)
    started = FORK + 1
    sync_request(w, started)
    for k in range(1, 20):  # a write every 2 s for 38 s; no heartbeat meanwhile (SERIAL)
        now = started + 2 * k
        w.progress(now, now, 1)
        assert hung_reason(board.read(i), now + 1.9, T, written_since=FORK) is None
    # ...then the stream stops writing.
    assert hung_reason(board.read(i), started + 38 + T + 1, T, written_since=FORK) is not None


def test_sync_request_waiting_on_its_client_or_taken_over_is_spared():
    board, i, w = slot(mode=SERIAL)
    sync_request(w, FORK + 1, candidate=False)  # in recv/send on the client, or a websocket
    assert hung_reason(board.read(i), FORK + 1 + 100 * T, T, written_since=FORK) is None


# -- gthread: threads cannot be killed alone ------------------------------------------------

def gthread_requests(w, capacity, stalled, live, now):
    """``stalled`` candidates without progress since FORK+1; ``live`` that progressed at now."""
    candidates = stalled + live
    newest = now if live else FORK + 1
    w.name_request(FORK + 1, "GET", "/hang")
    w.progress(FORK + 1 if stalled else now, newest, candidates)


def test_gthread_one_hung_thread_of_four_is_not_a_reason_to_kill():
    board, i, w = slot(capacity=4)
    w.busy(FORK + 1, "GET", "/hang")
    now = FORK + 1 + 10 * T
    w.heartbeat(now)  # the main loop is fine
    gthread_requests(w, 4, stalled=3, live=0, now=now)
    assert hung_reason(board.read(i), now, T, written_since=FORK) is None


def test_gthread_three_hung_and_one_streaming_is_spared():
    board, i, w = slot(capacity=4)
    w.busy(FORK + 1, "GET", "/hang")
    now = FORK + 1 + 10 * T
    w.heartbeat(now)
    gthread_requests(w, 4, stalled=3, live=1, now=now)
    assert hung_reason(board.read(i), now, T, written_since=FORK) is None


def test_gthread_all_threads_hung_is_killed_naming_the_oldest():
    board, i, w = slot(capacity=4)
    w.busy(FORK + 1, "GET", "/hang")
    now = FORK + 1 + T + 1
    w.heartbeat(now)
    gthread_requests(w, 4, stalled=4, live=0, now=now)
    reason = hung_reason(board.read(i), now, T, written_since=FORK)
    assert reason == "GET /hang after 6.0 s, no progress for 6.0 s (all 4 of its requests stalled)"


def test_gthread_threads_on_websockets_are_not_candidates():
    board, i, w = slot(capacity=2)
    w.busy(FORK + 1, "GET", "/ws")
    now = FORK + 1 + 100 * T
    w.heartbeat(now)
    w.progress(0.0, 0.0, 0)
    assert hung_reason(board.read(i), now, T, written_since=FORK) is None


# -- the helper the workers use on their own requests ----------------------------------------

def test_request_stalled():
    assert not request_stalled(10.0, 10.0 + T, T)
    assert request_stalled(10.0, 10.0 + T + 0.01, T)
    assert not request_stalled(10.0, 1e9, 0)


def test_idle_state_constant_is_what_idle_writes():
    board, i, w = slot()
    assert board.read(i).state == IDLE and board.read(i).state != BUSY


# -- what the request loop records (unicornd/connection.py), over a real socket pair ---------


def _serve_one(app, request: bytes, board_index_writer):
    """Serve ``request`` with ``app`` on a socket pair, the slot as the sync worker's mirror.
    Returns (what the client received until EOF, the Connection)."""
    _, _, writer = board_index_writer
    ctx = ServerContext(load_config(["x:app"], {}), app, logging.getLogger("test"), keep_alive=False)
    ctx.mirror = writer
    server_sock, client_sock = socket.socketpair()
    client_sock.settimeout(10)
    conn = Connection(ctx, server_sock, ("127.0.0.1", 1), ("127.0.0.1", 80))

    def run():
        try:
            conn.serve()
        finally:
            server_sock.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    client_sock.sendall(request)
    data = b""
    while chunk := client_sock.recv(65536):
        data += chunk
    t.join(10)
    client_sock.close()
    return data, conn


GET = b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n"
UPGRADE = b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_each_write_of_a_stream_is_progress_in_the_slot():
    slot_ = slot(mode=SERIAL)
    board, i, _ = slot_
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [])
        for n in range(3):
            yield b"x"
            view = board.read(i)
            seen.append((view.progress, view.candidates))
    data, conn = _serve_one(app, GET, slot_)
    assert data.startswith(b"HTTP/1.1 200") and not conn.io.app_owned
    assert [c for _, c in seen] == [1, 1, 1]
    assert seen[0][0] < seen[1][0] < seen[2][0]  # it moves with every write


def test_an_upgrade_request_is_not_a_candidate_and_its_late_101_is_not_written():
    slot_ = slot(mode=SERIAL)
    board, i, _ = slot_
    seen = []

    def app(environ, start_response):
        seen.append(board.read(i).candidates)
        # (a websocket library would do its handshake and session on the socket here)
        start_response("101 Switching Protocols", [])
        return []
    data, conn = _serve_one(app, UPGRADE, slot_)
    assert seen == [0]
    assert data == b""  # no "HTTP/1.1 101" head after the app returned
    assert conn.taken_over


def test_an_upgrade_request_answered_normally_is_judged_again_and_closes():
    slot_ = slot(mode=SERIAL)
    board, i, _ = slot_

    def app(environ, start_response):
        start_response("400 Bad Request", [("Content-Length", "2")])
        return [b"no"]
    data, conn = _serve_one(app, UPGRADE, slot_)
    assert data.startswith(b"HTTP/1.1 400") and b"Connection: close" in data
    assert not conn.io.app_owned and not conn.taken_over
    assert board.read(i).candidates == 1

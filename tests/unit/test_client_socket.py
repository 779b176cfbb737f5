"""ClientSocket: every receive and send notes the request's progress for the timeout decision,
and the socket's failures reach the loop as one exception (over a real socket pair)."""

import socket

import pytest

from unicornd.client_socket import ClientDisconnected, ClientSocket, ReceiveTimeout


class Mirror:
    """Stands in for the scoreboard slot: records (progress, candidates) as the master reads it."""

    def __init__(self):
        self.seen = []

    def progress(self, oldest, newest, candidates):
        self.seen.append((newest, candidates))


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def test_a_receive_waits_on_the_client_and_then_is_progress(pair):
    ours, theirs = pair
    mirror = Mirror()
    io = ClientSocket(ours, mirror, 30, tls=False)
    io.started(5.0, app_owned=False)
    theirs.sendall(b"hello")
    assert io.recv() == b"hello"
    # started (a candidate), waiting on the client (not one), then progress (a candidate again)
    assert [c for _, c in mirror.seen] == [1, 0, 1]
    assert mirror.seen[1][0] == 5.0 and mirror.seen[2][0] > 5.0
    assert not io.waiting and io.progress == mirror.seen[2][0]


def test_a_silent_client_is_a_receive_timeout_and_not_left_waiting(pair):
    ours, theirs = pair
    ours.settimeout(0.01)
    io = ClientSocket(ours, None, 0.01, tls=False)
    with pytest.raises(ReceiveTimeout):
        io.recv()
    assert not io.waiting
    assert io.stall_seconds() == 0.01


def test_a_closed_peer_is_eof_to_a_receive_and_a_disconnect_to_a_send(pair):
    ours, theirs = pair
    io = ClientSocket(ours, None, 30, tls=False)
    theirs.close()
    assert io.recv() == b""
    assert io.recv_into(memoryview(bytearray(4)), 4) == 0
    with pytest.raises(ClientDisconnected):
        for _ in range(100):  # (the first send may still be taken before the reset is seen)
            io.sendall(b"x" * 65536)


def test_an_upgrade_is_not_a_candidate_and_loses_our_timeouts(pair):
    ours, theirs = pair
    ours.settimeout(3)
    mirror = Mirror()
    io = ClientSocket(ours, mirror, 30, tls=False)
    io.started(1.0, app_owned=True)
    assert io.app_owned and ours.gettimeout() is None
    assert mirror.seen == [(1.0, 0)]
    io.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert mirror.seen[-1][1] == 0  # its progress, but still not a candidate
    io.started(2.0, app_owned=False)  # the next request on a connection is judged again
    assert not io.app_owned and mirror.seen[-1] == (2.0, 1)


def test_recv_nowait_says_none_yet_then_the_bytes_then_eof(pair):
    ours, theirs = pair
    io = ClientSocket(ours, None, 30, tls=False)
    assert io.recv_nowait() is None
    theirs.sendall(b"GET")
    assert io.recv_nowait() == b"GET"
    theirs.close()
    assert io.recv_nowait() == b""

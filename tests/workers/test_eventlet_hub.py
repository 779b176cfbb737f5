"""The eventlet worker's hub (workers/eventlet_hub.py): a connection's fd stays in the hub's
epoll set for the connection's life. When the app closes the connection's socket itself, its fd
number goes to the next connection at once: the first connection's end must not take the
second's registration (or events) with it. A hub chosen with EVENTLET_HUB is used as chosen.
"""

import socket

import pytest

from support import Server, wait_for
from workers_support import ResponseReader, request_bytes

APP = '''
import os
import time

state = {"go": False, "a_done": False}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/close-own-socket":
        environ["gunicorn.socket"].close()  # its fd is free for the next connection
        with open(os.environ["REUSE_MARK"], "w"):
            pass
        deadline = time.monotonic() + 20
        while not state["go"] and time.monotonic() < deadline:
            time.sleep(0.01)  # cooperative (patched)
        state["a_done"] = True  # the connection's greenlet ends without yielding again
    elif path == "/release":
        state["go"] = True
        deadline = time.monotonic() + 20
        while not state["a_done"] and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.01)  # (the first connection's greenlet has closed by now)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''


def test_a_socket_the_app_closed_does_not_take_the_next_connections_fd_along(tmp_path):
    (tmp_path / "reuseapp.py").write_text(APP)
    mark = tmp_path / "closed"
    with Server("-k", "eventlet", "-w", "1", "-b", "127.0.0.1:0", "--keep-alive", "30",
                "--chdir", str(tmp_path), "reuseapp:app", env={"REUSE_MARK": str(mark)}) as srv:
        with socket.create_connection(srv.address, timeout=30) as first:
            first.sendall(request_bytes("GET", "/close-own-socket"))
            wait_for(mark.exists, 10, message="the app closed its connection's socket")
            # The next connection gets the freed fd number.
            with socket.create_connection(srv.address, timeout=10) as second:
                reader = ResponseReader(second)
                second.sendall(request_bytes("GET", "/"))
                assert reader.read()[0] == 200
                # Lets the first connection's greenlet end (while this one is in the app).
                second.sendall(request_bytes("GET", "/release"))
                assert reader.read()[0] == 200
                # Still registered: the next request is answered (not left until keep-alive).
                second.sendall(request_bytes("GET", "/"))
                assert reader.read()[0] == 200


HUB_APP = '''
import eventlet.hubs


def app(environ, start_response):
    body = type(eventlet.hubs.get_hub()).__module__.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.mark.parametrize("chosen, used", [(None, "unicornd.workers.eventlet_hub"),
                                          ("poll", "eventlet.hubs.poll")])
def test_the_hub_eventlet_hub_chooses_is_honoured(tmp_path, chosen, used):
    # unicornd's epoll hub replaces eventlet's default one only: a hub chosen with
    # EVENTLET_HUB is used as chosen, with eventlet's own waits (trampoline).
    (tmp_path / "hubapp.py").write_text(HUB_APP)
    env = {"EVENTLET_HUB": chosen} if chosen else {}
    with Server("-k", "eventlet", "-w", "1", "-b", "127.0.0.1:0", "--chdir", str(tmp_path),
                "hubapp:app", env=env) as srv:
        with socket.create_connection(srv.address, timeout=10) as conn:
            reader = ResponseReader(conn)
            for _ in range(2):  # on a kept-alive connection
                conn.sendall(request_bytes("GET", "/"))
                status, _, body = reader.read()
                assert (status, body.decode()) == (200, used)


@pytest.mark.filterwarnings(r"ignore:\s*Eventlet is deprecated")  # (its import says it)
def test_an_eventlet_whose_hub_lacks_a_part_gets_its_own_hub(monkeypatch):
    """The hub builds on parts of eventlet's that are not all public: without one of them
    (another eventlet release), the worker falls back to eventlet's own hub instead of failing."""
    from unicornd.workers import eventlet_hub
    assert eventlet_hub.is_available()
    monkeypatch.setattr(eventlet_hub, "_HUB_METHODS", eventlet_hub._HUB_METHODS + ("_gone",))
    assert not eventlet_hub.is_available()
    monkeypatch.setattr(eventlet_hub, "_HUB_ATTRIBUTES", eventlet_hub._HUB_ATTRIBUTES + ("_gone",))
    with pytest.raises(RuntimeError, match="_gone"):
        eventlet_hub.Hub()

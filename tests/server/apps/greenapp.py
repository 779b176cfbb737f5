"""Test app for the gevent/eventlet workers (tests/workers/test_greenlet_workers.py).

/sleep?ms=N     sleeps (cooperatively, once patched), reports start/end times and the pid
/fetch?url=U    calls U with requests (urllib3 underneath), reports start/end times
/sse?id=X&n=N   server-sent events: sends event i, then waits for /ack?id=X&i=i before
                sending event i+1 (so the test knows each event left when it was yielded)
/ack?id=X&i=I   see /sse
/spin?s=S       burns the CPU without yielding for S seconds (blocks the whole worker)
/patched        whether socket was patched when this module was imported
/gather?n=N     waits (cooperatively) until N such requests are in this worker at once, or
                20 s; answers whether they all were (overlap proven without timing)
"""

import json
import os
import socket
import threading
import time
from urllib.parse import parse_qs

import requests

PATCHED_AT_IMPORT = socket.socket.__module__ != "socket"  # gevent._socket3, eventlet.greenio.base
_acks = {}
_served = [0]  # /count: the order in which this worker answered, without ever yielding
_session = None


def _ack_event(key):
    ev = _acks.get(key)
    if ev is None:
        ev = _acks[key] = threading.Event()
    return ev


def _json(start_response, doc, status="200 OK"):
    body = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def sleep_route(environ, start_response, q):
    start = time.time()
    calls = os.environ.get("GREENAPP_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write(f"sleep {q.get('ms', ['500'])[0]}\n")
    time.sleep(int(q.get("ms", ["500"])[0]) / 1000)
    return _json(start_response, {"start": start, "end": time.time(), "pid": os.getpid()})


_gathered = [0]


def gather_route(start_response, q):
    n = int(q["n"][0])
    _gathered[0] += 1
    deadline = time.monotonic() + 20
    while _gathered[0] < n and time.monotonic() < deadline:
        time.sleep(0.01)  # cooperative once patched: the others come in meanwhile
    return _json(start_response, {"met": _gathered[0] >= n, "pid": os.getpid()})


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/gather":
        return gather_route(start_response, q)
    if path == "/sleep":
        return sleep_route(environ, start_response, q)
    if path == "/fetch":
        start = time.time()
        r = requests.get(q["url"][0], timeout=30)
        return _json(start_response, {"start": start, "end": time.time(), "status": r.status_code})
    if path == "/sse":
        key, n = q["id"][0], int(q["n"][0])

        def events():
            for i in range(n):
                yield f"data: event {i}\n\n".encode()
                if i + 1 < n and not _ack_event((key, i)).wait(20):
                    yield b"data: no ack\n\n"
                    return
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        return events()
    if path == "/ack":
        _ack_event((q["id"][0], int(q["i"][0]))).set()
        return _json(start_response, {"ok": True})
    if path == "/spin":
        until = time.monotonic() + float(q["s"][0])
        while time.monotonic() < until:
            pass
        return _json(start_response, {"spun": True})
    if path == "/count":
        _served[0] += 1
        return _json(start_response, {"n": _served[0]})
    if path == "/patched":
        return _json(start_response, {"patched_at_import": PATCHED_AT_IMPORT, "pid": os.getpid()})
    return _json(start_response, {"error": "not found"}, "404 Not Found")

"""Long-lived connections in one page: a websocket echo, server-sent events and plain fetches.

``unicornd -k gevent -b unix:/run/unicornd.sock examples.longlived:app`` behind
examples/nginx/unicornd.conf, then open ``/`` in a browser (``-k eventlet`` and ``-k gthread
--threads 16`` work the same; ``-k sync`` holds a whole worker per open stream). The page
(longlived.html) runs its checks and shows the results; tests/browser drives it with headless
Chromium.

- ``/ws``: websocket echo (text and binary) with simple-websocket, which answers the handshake
  itself and owns the socket from then on: unicornd writes nothing more on it, sets none of
  its timeouts on it, and waits briefly for the close to complete before closing it.
- ``/events?count=N&interval=S``: an SSE stream, one event every ``interval`` seconds. It
  writes, so it is alive for the worker's ``timeout`` however long it lasts; a stream that
  may stay silent longer than ``timeout`` should send a comment line (``: keep-alive``) more
  often than that. ``X-Accel-Buffering: no`` tells nginx to pass each event on at once.
- ``/fetch?n=K``: a small JSON answer.
"""

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

from simple_websocket import ConnectionClosed, Server

PAGE = (Path(__file__).resolve().parent / "longlived.html").read_bytes()


def websocket(environ, start_response):
    ws = Server(environ, max_message_size=1 << 20)
    try:
        while True:
            ws.send(ws.receive())
    except ConnectionClosed:
        pass
    # The session is over: this only ends the request for the server (its access log shows
    # the status); nothing of it reaches the client, whose socket the library owned.
    start_response("101 Switching Protocols", [])
    return []


def events(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    count = int(query.get("count", ["5"])[0])
    interval = float(query.get("interval", ["0.5"])[0])
    start_response("200 OK", [
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("X-Accel-Buffering", "no"),
    ])
    for i in range(count):
        if i:
            time.sleep(interval)
        yield f"id: {i}\ndata: {json.dumps({'n': i, 'at': time.time()})}\n\n".encode()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/ws":
        return websocket(environ, start_response)
    if path == "/events":
        return events(environ, start_response)
    if path == "/fetch":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        body = json.dumps({"n": int(query.get("n", ["0"])[0]), "pid": os.getpid()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
        return [body]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(PAGE)))])
        return [PAGE]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]

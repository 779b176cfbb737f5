"""Streaming responses and server-sent events: ``unicornd -k gthread --threads 8 examples.streaming:app``.

- ``/stream``: a body produced piece by piece. Without a Content-Length unicornd sends it
  chunked (HTTP/1.1), each piece as it is yielded.
- ``/events?count=N``: an SSE stream (``text/event-stream``), one event every ``interval``
  seconds. An SSE client holds its connection for as long as the stream lasts, and with the
  ``sync`` worker that is a whole worker process per client: use ``gthread`` (a thread per
  stream) or ``gevent``, and keep ``timeout`` above the longest pause between events.
  Behind nginx, turn off response buffering for this location (``proxy_buffering off;``, or
  send ``X-Accel-Buffering: no`` as below).
"""

import time
from urllib.parse import parse_qs


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    for i in range(5):
        yield f"line {i}\n".encode()


def events(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    count = int(query.get("count", ["5"])[0])
    interval = float(query.get("interval", ["0.1"])[0])
    start_response("200 OK", [
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("X-Accel-Buffering", "no"),
    ])
    for i in range(count):
        if i:
            time.sleep(interval)
        yield f"id: {i}\nevent: tick\ndata: {{\"n\": {i}}}\n\n".encode()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/stream":
        return stream(environ, start_response)
    if path == "/events":
        return events(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]

"""WSGI app that sleeps 50 ms before answering (for async/threaded workers).

Under gevent/eventlet workers time.sleep is monkey-patched by the worker,
so the sleep yields instead of blocking the worker.
"""

import time

BODY = b"slept 50ms\n"
HEADERS = [
    ("Content-Type", "text/plain"),
    ("Content-Length", str(len(BODY))),
]


def app(environ, start_response):
    time.sleep(0.05)
    start_response("200 OK", HEADERS)
    return [BODY]

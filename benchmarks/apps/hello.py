"""Minimal WSGI app: 14-byte plain-text body, fixed Content-Length."""

BODY = b"Hello, World!\n"
HEADERS = [
    ("Content-Type", "text/plain"),
    ("Content-Length", str(len(BODY))),
]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]

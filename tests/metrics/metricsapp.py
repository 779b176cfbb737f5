"""A WSGI app answering with the status the test asks for."""

import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/crash":
        raise RuntimeError("boom")
    if path == "/sleep":
        time.sleep(int(query.get("ms", ["100"])[0]) / 1000)
    status = {"/missing": "404 Not Found", "/fail": "500 Internal Server Error",
              "/moved": "302 Found"}.get(path, "200 OK")
    body = b"ok\n"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

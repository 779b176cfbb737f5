"""Reads the request body the way the query string says and answers what it got, as JSON:
``/?how=read&n=N`` (read(N) until b""), ``how=readline&n=N``, ``how=readinto&n=N`` (one
reused buffer of N bytes). The answer: the body's length and sha256, and how many calls came
back short, with more body after them (a wsgi.input read returns all it is asked for, and
readline a whole line or N bytes, unless the body ends first)."""

import hashlib
import json
from urllib.parse import parse_qs


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    how = query.get("how", ["read"])[0]
    n = int(query.get("n", ["-1"])[0])
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = short = 0
    last_short = False
    buf = bytearray(max(n, 0))
    view = memoryview(buf)
    while True:
        if how == "readinto":
            got = stream.readinto(buf)
            piece = view[:got]
        else:
            piece = stream.read(n) if how == "read" else stream.readline(n)
            got = len(piece)
        if not got:
            break
        short += last_short
        last_short = 0 <= n and got < n and not (how == "readline" and piece[-1:] == b"\n")
        digest.update(piece)
        total += got
    body = json.dumps({"length": total, "sha256": digest.hexdigest(), "short": short}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

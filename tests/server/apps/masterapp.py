"""The app the master tests use: slow, hung and growing requests, and who imported it."""

import os
import time
from urllib.parse import parse_qs

IMPORTED_BY = os.getpid()
_hoard = []

if os.environ.get("MASTERAPP_IMPORT_SECONDS"):
    time.sleep(float(os.environ["MASTERAPP_IMPORT_SECONDS"]))  # a slow import, on purpose


def _answer(start_response, body: bytes, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hang_here_forever():
    while True:
        time.sleep(0.5)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/sleep":
        if "mark" in query:  # tell the test this request is inside the app now
            open(os.path.join(query["mark"][0], str(os.getpid())), "w").close()
        time.sleep(int(query.get("ms", ["100"])[0]) / 1000)
        return _answer(start_response, b"slept")
    if path == "/hang":
        hang_here_forever()
    if path == "/hang-deaf":
        import signal
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGABRT])  # no stack dump can run
        hang_here_forever()
    if path == "/grow":
        _hoard.append(bytearray(int(query.get("mb", ["64"])[0]) << 20))
        return _answer(start_response, b"grown")
    if path == "/who":
        return _answer(start_response, f"{os.getpid()} {IMPORTED_BY} {os.getuid()}".encode())
    if path == "/version":
        return _answer(start_response, os.environ.get("APP_VERSION", "none").encode())
    return _answer(start_response, b"ok")

#!/usr/bin/env python3
"""User-space instructions per kept-alive request, counted by callgrind: a measure of the
server's Python cost that other load on the machine does not move (requests per CPU-second
on the shared 2-core box varied 20,000-36,000 between rounds of the same code).

For each worker class and each source tree given, unicornd runs with one worker under
``valgrind --tool=callgrind`` (about 50x slower) on the hello app plus a ``/__mark`` path.
While ``wrk -c100`` keeps every connection busy, two marks are taken SECONDS apart: the app
prints its request count and calls ``zlib.adler32``, where ``--dump-before=adler32`` makes
callgrind dump its counts. The instructions between the two dumps divided by the requests
between the two marks is the answer (connection setup and boot are outside it; syscalls'
kernel time is not counted at all). Repeat runs agree within about 2%.

    python3 benchmarks/instructions.py -k eventlet,gevent --tree /tmp/old --tree .

Needs valgrind (callgrind) and wrk. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

APP = '''
import sys
import zlib
BODY = b"Hello, World!\\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
N = [0]


def app(environ, start_response):
    N[0] += 1
    if environ["PATH_INFO"] == "/__mark":
        sys.stderr.write(f"MARK {N[0]}\\n")
        sys.stderr.flush()
        zlib.adler32(b"x")  # callgrind dumps before this
    start_response("200 OK", HEADERS)
    return [BODY]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> None:
    urllib.request.urlopen(url, timeout=30).read()


def measure(tree: str, worker: str, seconds: float, workdir: str) -> tuple[int, float]:
    """(requests between the marks, instructions per request)."""
    port = free_port()
    out = tempfile.mkdtemp(dir=workdir)
    log = open(os.path.join(out, "log"), "w+")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--dump-before=adler32",
         f"--callgrind-out-file={out}/cg.%p", sys.executable, "-m", "unicornd", "-k", worker,
         "-w", "1", "--bind", f"127.0.0.1:{port}", "--chdir", workdir, "mark_app:app"],
        cwd=tree, stdout=log, stderr=log, start_new_session=True,
        env=dict(os.environ, PYTHONPATH=os.path.abspath(tree)))
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            try:
                get(url)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{tree} {worker}: the server did not come up") from None
                time.sleep(0.5)
        wrk = subprocess.Popen(["wrk", "-t1", "-c100", f"-d{int(seconds) + 6}s", url],
                               stdout=subprocess.DEVNULL)
        time.sleep(3)
        get(url + "__mark")
        time.sleep(seconds)
        get(url + "__mark")
        wrk.wait()
        log.seek(0)
        marks = [int(m) for m in re.findall(r"^MARK (\d+)$", log.read(), re.M)]
        part = [f for f in glob.glob(os.path.join(out, "cg.*.2"))]
        if len(marks) != 2 or len(part) != 1:
            raise RuntimeError(f"{tree} {worker}: marks {marks}, dumps {part}")
        with open(part[0]) as f:
            ir = int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))
        requests = marks[1] - marks[0]
        return requests, ir / requests
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-k", "--worker", default="eventlet", help="worker classes, comma-separated")
    p.add_argument("--tree", action="append", help="a unicornd source tree (default: .)")
    p.add_argument("--seconds", type=float, default=6.0, help="time between the two marks")
    args = p.parse_args()
    trees = args.tree or ["."]
    with tempfile.TemporaryDirectory() as workdir:
        with open(os.path.join(workdir, "mark_app.py"), "w") as f:
            f.write(APP)
        for worker in args.worker.split(","):
            for tree in trees:
                requests, per = measure(tree, worker, args.seconds, workdir)
                print(f"{worker:9s} {tree:30s} requests {requests:6d}  instructions/request {per:9.0f}",
                      flush=True)


if __name__ == "__main__":
    main()

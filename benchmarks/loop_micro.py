"""Micro-benchmark of the request loop's own Python: one kept-alive request on a fake socket.

    python3 benchmarks/loop_micro.py                          # this tree, us per request
    python3 benchmarks/loop_micro.py --against /old/tree      # both trees, interleaved rounds
    python3 benchmarks/loop_micro.py --app flask_json         # an app of benchmarks/apps
    python3 benchmarks/loop_micro.py --once N                 # run N requests, print nothing

One op is ``Connection.serve(park_when_idle=True)`` on a connection whose socket hands over
one request (what wrk sends) and takes the response without a system call: parser, exchange,
environ, the app, the response head and writer, up to the point where the connection would be
parked. No worker (no scoreboard writes), no access log, default settings. Each tree runs in
its own process (``--once`` / a child per round), timed in its CPU time, best of ``--repeat``
turns per round; the report gives medians over rounds. Never run by the test suite.

Instructions per request, which other load on the machine does not move (valgrind):

    for n in 0 2000; do PYTHONHASHSEED=0 valgrind --tool=callgrind \\
        --callgrind-out-file=/tmp/cg.$n python3 benchmarks/loop_micro.py --once $n; done
    # (Ir of /tmp/cg.2000 - Ir of /tmp/cg.0) / 2000; python3 must be the real binary, not a
    # shim (sys.executable)
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


def make_run(tree, app_name):
    sys.path.insert(0, tree)
    sys.path.insert(0, os.path.join(tree, "benchmarks", "apps"))
    from unicornd.config.loader import load_config
    from unicornd.connection import IDLE, Connection
    from unicornd.context import ServerContext
    app = getattr(__import__(app_name), "app")

    class Sock:
        """A kernel socket's stand-in: recv gives one request, then 'nothing yet'."""
        pending = True

        def recv(self, n, flags=0):
            if self.pending:
                self.pending = False
                return REQUEST
            raise BlockingIOError

        def sendall(self, data, flags=0):
            pass

        def send(self, data, flags=0):
            return len(data)

        def setsockopt(self, *args):
            pass

        def gettimeout(self):
            return None

        def fileno(self):
            return 99

    ctx = ServerContext(load_config(["x:app"], {}), app, logging.getLogger("loop_micro"),
                        keep_alive=True)
    sock = Sock()
    conn = Connection(ctx, sock, ("127.0.0.1", 5555), ("127.0.0.1", 8080))
    getattr(conn, "io", conn).raw = None  # (sends go to sock.sendall; .io since d036708)

    def run(n):
        for _ in range(n):
            sock.pending = True
            if conn.serve(True) != IDLE:
                raise RuntimeError("the connection did not park")
    run(2000)  # warm the caches (request lines, field lines, heads)
    return run


def child(tree, app, number, repeat):
    run = make_run(tree, app)
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        run(number)
        best = min(best, (time.process_time() - t) / number)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", metavar="OLD_TREE")
    ap.add_argument("--app", default="hello", help="a module of benchmarks/apps (default hello)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--number", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--once", type=int, metavar="N", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tree = os.path.abspath(args.tree or here)
    if args.once is not None:
        make_run(tree, args.app)(args.once)
        return
    if args.child:
        print(json.dumps(child(tree, args.app, args.number, args.repeat)))
        return
    trees = [("new", here)] + ([("old", os.path.abspath(args.against))] if args.against else [])
    results = {label: [] for label, _ in trees}
    for r in range(args.rounds):
        for label, path in (trees if r % 2 == 0 else trees[::-1]):
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", "--tree", path,
                 "--app", args.app, "--number", str(args.number), "--repeat", str(args.repeat)],
                capture_output=True, text=True, check=True).stdout
            results[label].append(json.loads(out) * 1e6)
    for label, path in trees:
        print(f"{label} {path}: {statistics.median(results[label]):.2f} us per request "
              f"(rounds: {', '.join(f'{x:.2f}' for x in results[label])})")
    if args.against:
        ratios = [o / n for n, o in zip(results["new"], results["old"])]
        print(f"old/new: {statistics.median(ratios):.3f} (median of per-round ratios)")


if __name__ == "__main__":
    main()

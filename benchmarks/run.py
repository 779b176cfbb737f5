#!/usr/bin/env python3
"""Throughput benchmark: unicornd against its peers, driven by wrk.

Stdlib only.  Run benchmarks/setup.sh first.  Loopback only, bounded in time.

Peers: gunicorn (same -w/-k/--threads), granian (`--interface wsgi --workers N`),
and the pure-Python floor (../shared/bench/py_floor.py, hello only).  For each
scenario (app x connections) every server (unicornd and gunicorn once per worker
class given with -k, granian and the floor once) is started on its own free
127.0.0.1 port, polled until it answers, warmed up, then measured in
interleaved rounds (the order is reversed every other round and rotated).  Each
run records requests/s, p50/p99 and the server's CPU time (utime+stime of its
whole process group, from /proc) during the run, so "requests per server
CPU-second".  The figures of merit are the medians of the per-round ratios
unicornd/granian, unicornd/floor and unicornd/gunicorn (same class).

Examples:
    python3 benchmarks/run.py --worker sync --workers 2 \
        --app hello,flask --connections 1,100 --rounds 5 --duration 10s
    python3 benchmarks/run.py -k gthread,gevent,eventlet,sync -w 2 --threads 4 \
        --peers gunicorn,granian,floor \
        --scenarios hello:1,hello:100,hello:1000,flask:100,upload:10 \
        --rounds 3 --duration 4s
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(HERE, "apps")
BENCH_DIR = os.environ.get(
    "BENCH_DIR", os.path.join(os.path.expanduser("~"), ".cache", "unicornd-bench")
)

# app name -> (WSGI target, exact body of GET / or None, wrk lua script or None)
APPS = {
    "hello": ("hello:app", b"Hello, World!\n", None),
    "flask": ("flask_json:app", None, None),
    "sleep": ("sleep:app", b"slept 50ms\n", None),
    "upload": ("upload:app", b"0\n", "post64k.lua"),
}
REPO = os.path.dirname(HERE)
# The floor lives in the shared reference folder beside the repository.
FLOOR = os.path.normpath(os.path.join(REPO, "..", "shared", "bench", "py_floor.py"))
# The floor answers every request with the hello body, whatever the path or app.
FLOOR_APPS = {"hello"}

# ---------------------------------------------------------------- processes

_PROCS: list[subprocess.Popen] = []


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Kill stragglers in the group (workers orphaned by a dead master).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def cleanup_all() -> None:
    while _PROCS:
        _kill_group(_PROCS.pop())


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def spawn(argv: list[str], log_path: str, cwd: str | None = None,
          env: dict | None = None) -> subprocess.Popen:
    """Start argv in its own session (process group) and track it."""
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        log.close()
    _PROCS.append(proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    _kill_group(proc)
    if proc in _PROCS:
        _PROCS.remove(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, timeout: float = 2.0) -> tuple[int, dict, bytes]:
    """One GET / on loopback; returns (status, headers, body).

    Reads the body by its Content-Length when there is one (the floor and
    granian keep the connection open), otherwise until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = s.recv(65536)
            if not data:
                break
            raw += data
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"malformed response: {raw[:200]!r}")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        length = headers.get("content-length")
        while length is None or len(body) < int(length):
            data = s.recv(65536)
            if not data:
                break
            body += data
    return status, headers, body


def tail(path: str, n: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return ""


class Server:
    """One server under test: its own port, process group and log."""

    def __init__(self, name: str, argv_for_port, expect_body: bytes | None,
                 logdir: str):
        self.name = name
        self.port = free_port()
        self.log = os.path.join(logdir, f"{name.replace(':', '-')}-{self.port}.log")
        self.expect_body = expect_body
        self.argv = argv_for_port(self.port)
        env = dict(os.environ)
        env["PYTHONPATH"] = APPS_DIR + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = spawn(self.argv, self.log, cwd=APPS_DIR, env=env)

    def wait_ready(self, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before "
                    f"answering.\n  cmd: {shlex.join(self.argv)}\n"
                    f"--- {self.log} ---\n{tail(self.log)}")
            try:
                status, headers, body = http_get(self.port)
            except (OSError, ValueError) as e:
                last = e
                time.sleep(0.05)
                continue
            if status != 200:
                raise RuntimeError(f"{self.name}: GET / answered {status}")
            if self.expect_body is not None and body != self.expect_body:
                raise RuntimeError(f"{self.name}: unexpected body {body[:100]!r}")
            return
        raise RuntimeError(
            f"{self.name} did not answer within {deadline_s}s (last: {last}).\n"
            f"  cmd: {shlex.join(self.argv)}\n--- {self.log} ---\n{tail(self.log)}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's process group (master, workers,
        granian's processes, the floor's children), children already reaped
        included (their time moves into the parent's cutime/cstime)."""
        return group_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """utime+stime+cutime+cstime summed over every process in group pgid."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name, which may hold spaces and parens.
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) != pgid:        # field 5: pgrp
            continue
        ticks += sum(int(x) for x in fields[11:15])   # fields 14-17
    return ticks / _CLK_TCK


# ---------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"bad latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    res = {"rps": None, "p50": None, "p99": None, "requests": None,
           "sock_err": 0, "non2xx": 0, "errors": ""}
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if m:
            res[key] = _ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    errs = []
    if m:
        c, r, w, t = (int(x) for x in m.groups())
        res["sock_err"] = c + r + w + t
        errs = [f"{k}={v}" for k, v in
                (("connect", c), ("read", r), ("write", w), ("timeout", t)) if v]
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
        errs.append(f"non2xx={res['non2xx']}")
    res["errors"] = ",".join(errs)
    return res


def run_wrk(wrk: str, port: int, conns: int, duration: str, threads: int,
            timeout: str, bound_s: float, script: str | None = None) -> dict:
    t = max(1, min(threads, conns))
    argv = [wrk, f"-t{t}", f"-c{conns}", f"-d{duration}", f"--timeout={timeout}",
            "--latency"]
    if script:
        argv += ["-s", os.path.join(APPS_DIR, script)]
    argv.append(f"http://127.0.0.1:{port}/")
    try:
        cp = subprocess.run(argv, capture_output=True, text=True,
                            timeout=bound_s, start_new_session=True)
    except subprocess.TimeoutExpired:
        return {"rps": None, "p50": None, "p99": None, "requests": None,
                "sock_err": 0, "non2xx": 0, "errors": "wrk-timeout", "raw": ""}
    res = parse_wrk(cp.stdout)
    res["raw"] = cp.stdout + cp.stderr
    if cp.returncode != 0 or res["rps"] is None:
        res["errors"] = (res["errors"] + "," if res["errors"] else "") + \
            f"wrk-rc={cp.returncode}"
    return res


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}")
    return float(m.group(1)) * {"s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


# ------------------------------------------------------------------ output

def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def ratio(a, b):
    return a / b if a and b else None


def print_table(headers, rows, file=sys.stdout):
    """Markdown table, columns padded for the terminal."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"
    print(line(headers), file=file)
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", file=file)
    for r in cells:
        print(line(r), file=file)
    file.flush()


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


# ------------------------------------------------------------------ peers

class Peer:
    """A server to measure: how to start it for an app on a port."""

    def __init__(self, name: str, role: str, argv_for, worker: str | None = None,
                 version: str | None = None, apps: set | None = None):
        self.name = name          # unique label, e.g. "unicornd:gthread"
        self.role = role          # unicornd, gunicorn, granian or floor
        self.argv_for = argv_for  # (target, port) -> argv
        self.worker = worker
        self.version = version
        self.apps = apps          # None: every app

    def serves(self, app: str) -> bool:
        return self.apps is None or app in self.apps


def gunicorn_style(cmd, worker, args, threads):
    def argv_for(target, port):
        argv = list(cmd) + ["-w", str(args.workers), "-k", worker,
                            "-b", f"127.0.0.1:{port}"]
        if threads:
            argv += ["--threads", str(threads)]
        return argv + list(args.server_arg) + [target]
    return argv_for


def build_peers(args, ucmd, gcmds, granian_cmd) -> tuple[list[Peer], list[str]]:
    classes = csv(args.worker)
    notes = []
    # --threads goes to the gthread class; with a single class, to that class
    # (as before), so `-k sync --threads 4` still means what it meant.
    def threads_for(worker):
        return args.threads if args.threads and (
            worker == "gthread" or len(classes) == 1) else 0
    peers = [Peer(f"unicornd:{k}", "unicornd",
                  gunicorn_style(ucmd, k, args, threads_for(k)), worker=k)
             for k in classes]
    wanted = set(csv(args.peers))
    if "gunicorn" in wanted:
        for ver, gcmd in gcmds:
            for k in classes:
                if k == "eventlet" and ver == "27":
                    if "23" in dict(gcmds):
                        continue   # 23 stands in for eventlet, below
                    notes.append("gunicorn 27 has no eventlet worker (23 is the last): "
                                 "no gunicorn peer for eventlet; add --gunicorn 27,23")
                    continue
                if (ver == "23" and k != "eventlet" and "27" in dict(gcmds)
                        and len(classes) > 1):
                    continue   # with several classes, 23 only stands in for eventlet
                peers.append(Peer(f"gunicorn{ver}:{k}", "gunicorn",
                                  gunicorn_style(gcmd, k, args, threads_for(k)),
                                  worker=k, version=ver))
    if "granian" in wanted:
        def granian_argv(target, port):
            return list(granian_cmd) + [
                "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(args.workers), target]
        peers.append(Peer("granian", "granian", granian_argv))
    if "floor" in wanted:
        def floor_argv(target, port):
            return [sys.executable, FLOOR, str(port), str(args.workers)]
        peers.append(Peer("floor", "floor", floor_argv, apps=FLOOR_APPS))
    return peers, notes


def round_order(peers: list, i: int) -> list:
    """Round i (from 1): rotate by (i-1)//2, reverse every other round, so with
    two peers the order is AB, BA, AB, ... and with more each one moves."""
    k = ((i - 1) // 2) % len(peers)
    order = peers[k:] + peers[:k]
    return order if i % 2 else order[::-1]


def rpcs(r: dict):
    """Requests per server CPU-second for one run."""
    return r["requests"] / r["cpu_s"] if r.get("requests") and r.get("cpu_s") else None


def comparisons(peer: Peer, names: set) -> list[tuple[str, str]]:
    """(label, other peer name) pairs a unicornd peer is compared with."""
    out = []
    if peer.role != "unicornd":
        return out
    if "granian" in names:
        out.append(("U/granian", "granian"))
    if "floor" in names:
        out.append(("U/floor", "floor"))
    for n in sorted(names):
        if n.startswith("gunicorn") and n.endswith(":" + peer.worker):
            out.append((f"U/{n.split(':')[0]}", n))
    return out


def run_line(i, name, r):
    return (f"  r{i} {name:<20} rps {fmt(r['rps'], '8.0f')}  p50 {fmt(r['p50'], '7.2f')}"
            f"  p99 {fmt(r['p99'], '8.2f')}  cpu {fmt(r.get('cpu_s'), '6.2f')}s"
            f"  req/cpu-s {fmt(rpcs(r), '7.0f')}  {r['errors'] or ''}")


def range_text(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"


# ------------------------------------------------------------------- main

def default_cmd(kind: str) -> list[str]:
    if kind == "unicornd":
        py = os.path.join(BENCH_DIR, "unicornd", "bin", "python")
        if os.path.exists(py):
            return [py, "-m", "unicornd"]
        return [sys.executable, "-m", "unicornd"]
    if kind == "granian":
        exe = os.path.join(BENCH_DIR, "granian", "bin", "granian")
        if not os.path.exists(exe):
            sys.exit(f"{exe} not found: run benchmarks/setup.sh or pass --granian-cmd")
        return [exe]
    exe = os.path.join(BENCH_DIR, f"gunicorn{kind}", "bin", "gunicorn")
    if not os.path.exists(exe):
        alt = f"/opt/gunicorn{kind}/bin/gunicorn"
        if os.path.exists(alt):
            return [alt]
        sys.exit(f"{exe} not found: run benchmarks/setup.sh or pass --gunicorn-cmd")
    return [exe]


def csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def git_rev() -> str:
    try:
        cp = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                            capture_output=True, text=True, timeout=10)
        return cp.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", "-k", default="sync",
                   help="worker class(es), comma list (sync, gthread, gevent, eventlet): "
                   "one unicornd (and gunicorn) server per class, same rounds")
    p.add_argument("--workers", "-w", type=int, default=2,
                   help="worker processes of every server (granian --workers, floor too)")
    p.add_argument("--threads", type=int, default=0,
                   help="--threads for the gthread class, or for the only class given "
                   "(0: not passed)")
    p.add_argument("--peers", default="gunicorn",
                   help="comma list of peers beside unicornd: gunicorn, granian, floor "
                   "(the floor answers hello only)")
    p.add_argument("--connections", "-c", default="1,100",
                   help="comma list of wrk connection counts")
    p.add_argument("--app", default="hello",
                   help=f"comma list of apps: {','.join(APPS)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", "-d", default="10s", help="wrk -d per run")
    p.add_argument("--warmup", default="2s", help="wrk warm-up per server (0 = none)")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--wrk-timeout", default="2s", help="wrk --timeout")
    p.add_argument("--gunicorn", default="27",
                   help="gunicorn version(s) to compare with: 27, 23 or 27,23 "
                   "(with both and several classes, 23 serves only the eventlet class)")
    p.add_argument("--unicornd-cmd", help="command for unicornd (shell words); by default "
                   "the bench venv's python -m unicornd, running this tree's code")
    p.add_argument("--gunicorn-cmd",
                   help="command for gunicorn (shell words); overrides --gunicorn lookup")
    p.add_argument("--granian-cmd", help="command for granian (shell words)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra argument passed to unicornd and gunicorn (repeatable)")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--json", help="write raw results to this file")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep server logs after a successful run (kept on failure)")
    p.add_argument("--scenarios", help="restrict to APP:CONNS pairs, e.g. "
                   "hello:1,hello:100,flask:100 (overrides the app x connections product)")
    args = p.parse_args(argv)

    for a in csv(args.app):
        if a not in APPS:
            p.error(f"unknown app {a!r}")
    for k in csv(args.worker):
        if k not in ("sync", "gthread", "gevent", "eventlet"):
            p.error(f"unknown worker class {k!r}")
    for q in csv(args.peers):
        if q not in ("gunicorn", "granian", "floor"):
            p.error(f"unknown peer {q!r} (allowed: gunicorn, granian, floor)")
    dur_s = parse_duration(args.duration)
    warm_s = parse_duration(args.warmup)
    wrk = args.wrk
    if not any(os.access(os.path.join(d, wrk), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep)) \
            and not os.access(wrk, os.X_OK):
        sys.exit("wrk not found: run benchmarks/setup.sh")
    if "floor" in csv(args.peers) and not os.path.exists(FLOOR):
        sys.exit(f"the pure-Python floor is missing: {FLOOR} (it is "
                 "../shared/bench/py_floor.py beside the repository); drop 'floor' "
                 "from --peers to run without it")

    if args.scenarios:
        pairs = []
        for item in csv(args.scenarios):
            a, _, c = item.partition(":")
            if a not in APPS or not c.isdigit():
                p.error(f"bad scenario {item!r}")
            pairs.append((a, int(c)))
    else:
        pairs = [(a, int(c)) for a in csv(args.app) for c in csv(args.connections)]

    if args.unicornd_cmd:
        ucmd = shlex.split(args.unicornd_cmd)
    else:
        # PYTHONPATH=<this tree> in front, so the tree that holds this run.py is
        # measured whatever tree the bench venv's editable install points at.
        ucmd = ["env", f"PYTHONPATH={REPO}:{APPS_DIR}"] + default_cmd("unicornd")
    gcmds = []
    if "gunicorn" in csv(args.peers):
        if args.gunicorn_cmd:
            gcmds = [("custom", shlex.split(args.gunicorn_cmd))]
        else:
            gcmds = [(v, default_cmd(v)) for v in csv(args.gunicorn)]
    granian_cmd = None
    if "granian" in csv(args.peers):
        granian_cmd = (shlex.split(args.granian_cmd) if args.granian_cmd
                       else default_cmd("granian"))
    peers, notes = build_peers(args, ucmd, gcmds, granian_cmd)

    # Ctrl-C must work even if SIGINT was ignored by the parent (e.g. `cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(cleanup_all)

    logdir = tempfile.mkdtemp(prefix="unicornd-bench-")
    started = datetime.datetime.now().astimezone()
    print(f"# unicornd benchmark  {started:%Y-%m-%d %H:%M:%S %Z}")
    print(f"# command: {shlex.join([os.path.relpath(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))}")
    print(f"# host: {os.uname().nodename} {os.uname().release}, {os.cpu_count()} cpus, "
          f"loadavg {os.getloadavg()[0]:.2f}")
    print(f"# unicornd: {shlex.join(ucmd)}  (tree {REPO} at {git_rev()})")
    for v, c in gcmds:
        print(f"# gunicorn {v}: {shlex.join(c)}")
    if granian_cmd:
        print(f"# granian: {shlex.join(granian_cmd)} --interface wsgi --workers {args.workers}")
    if "floor" in csv(args.peers):
        print(f"# floor: {sys.executable} {FLOOR} PORT {args.workers}")
    print(f"# servers: {', '.join(q.name for q in peers)}")
    for n in notes:
        print(f"# note: {n}")
    print(f"# worker={args.worker} workers={args.workers} threads={args.threads or '-'} "
          f"rounds={args.rounds} duration={args.duration} warmup={args.warmup} "
          f"wrk -t{args.wrk_threads} --timeout {args.wrk_timeout}")
    print(f"# server logs: {logdir}\n")

    results = []
    bound = dur_s + 30
    try:
        for app, conns in pairs:
            target, expect, script = APPS[app]
            here = [q for q in peers if q.serves(app)]
            title = f"{app} c={conns} -w {args.workers}"
            print(f"## {title}: {', '.join(q.name for q in here)}", flush=True)
            servers = {}
            try:
                for q in here:
                    servers[q.name] = Server(
                        q.name, lambda port, q=q: q.argv_for(target, port), expect, logdir)
                for s in servers.values():
                    s.wait_ready(args.ready_timeout)
                if warm_s > 0:
                    for s in servers.values():
                        run_wrk(wrk, s.port, conns, args.warmup, args.wrk_threads,
                                args.wrk_timeout, warm_s + 30, script)
                rounds = []
                for i in range(1, args.rounds + 1):
                    order = round_order([q.name for q in here], i)
                    r = {}
                    for name in order:
                        s = servers[name]
                        if not s.alive():
                            raise RuntimeError(
                                f"{s.name} died (rc={s.proc.returncode})\n"
                                f"--- {s.log} ---\n{tail(s.log)}")
                        cpu0 = s.cpu_seconds()
                        res = run_wrk(wrk, s.port, conns, args.duration,
                                      args.wrk_threads, args.wrk_timeout, bound, script)
                        res["cpu_s"] = s.cpu_seconds() - cpu0
                        res.pop("raw", None)
                        r[name] = res
                        print(run_line(i, name, res), flush=True)
                    rounds.append({"round": i, "order": order, "runs": r})
            finally:
                for s in servers.values():
                    s.stop()
            names = {q.name for q in here}
            per_peer = []
            for q in here:
                runs = [x["runs"][q.name] for x in rounds]
                row = {
                    "server": q.name, "role": q.role, "worker": q.worker,
                    "rps": med(x["rps"] for x in runs),
                    "p50": med(x["p50"] for x in runs),
                    "p99": med(x["p99"] for x in runs),
                    "req_per_cpu_s": med(rpcs(x) for x in runs),
                    "errors": sum(x["sock_err"] + x["non2xx"] for x in runs),
                    "ratios": {},
                }
                for label, other in comparisons(q, names):
                    row["ratios"][label] = [
                        ratio(x["runs"][q.name]["rps"], x["runs"][other]["rps"])
                        for x in rounds]
                per_peer.append(row)
            results.append({"scenario": title, "app": app, "connections": conns,
                            "workers": args.workers, "threads": args.threads,
                            "peers": per_peer, "rounds": rounds})
            print()
            print_summary(results[-1:])
            print(flush=True)
    except RuntimeError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        cleanup_all()
        return 2
    finally:
        cleanup_all()
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"started": started.isoformat(), "argv": sys.argv,
                           "results": results}, f, indent=1)

    print("## Summary (medians over rounds; ratios: median of per-round rps ratios "
          "(min-max); U = that unicornd class)\n")
    print_summary(results)
    print("\n(latencies in ms; req/cpu-s = requests / CPU seconds of the server's processes "
          "during the run; errors = socket errors + non-2xx/3xx over all runs)")
    if not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


RATIO_COLS = ["U/granian", "U/floor", "U/gunicorn27", "U/gunicorn23", "U/gunicorncustom"]


def print_summary(results):
    """One row per scenario and server; ratio columns only where some row has them."""
    cols = [c for c in RATIO_COLS
            if any(c in r["ratios"] for res in results for r in res["peers"])]
    rows = []
    for res in results:
        for r in res["peers"]:
            rows.append([f"{res['app']} c={res['connections']}", r["server"],
                         fmt(r["rps"], ".0f"), fmt(r["p50"], ".2f"),
                         fmt(r["p99"], ".2f"), fmt(r["req_per_cpu_s"], ".0f")]
                        + [range_text(r["ratios"][c]) if c in r["ratios"] else "-"
                           for c in cols]
                        + [r["errors"]])
    print_table(["scenario", "server", "rps", "p50", "p99", "req/cpu-s"] + cols
                + ["errors"], rows)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup_all()
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)

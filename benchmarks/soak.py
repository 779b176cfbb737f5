"""Soak: mixed load against unicornd while a driver reloads, scales and kills workers.

Run by hand, never in CI (it takes --duration seconds, 600 by default):

    python3 benchmarks/soak.py --duration 600 --workers 4 --clients 8

What it does, all on loopback, everything bounded in time and count:

- starts ``unicornd -w N -k sync`` on this file's ``app``: ``/hello``, ``/flask`` (a Flask JSON
  app), ``/upload`` (a POST body of 1 KiB to 1 MiB, read and checksummed), ``/slow`` (answers
  after 50-500 ms);
- ``--clients`` threads send those requests, each on a new connection, and check every answer
  (status and body); a request's start and end time and any failure are kept;
- a driver sends, every ``--every`` seconds, one of HUP, TTIN, TTOU (kept within 2..2N workers)
  or SIGKILL to a random worker, and records when;
- every ``--sample`` seconds it records the master's RSS, open fds, worker count and zombie
  children.

At the end it prints (and writes as JSON with ``--json``): requests, failures, how many
failures were in flight while a worker was being SIGKILLed (from the kill until the worker is
seen dead: the only ones allowed), the rest ("unexplained", must be 0), master RSS and fd
growth between the first minute after warm-up and the last minute (must be under 5%), zombies.
Exit status 0 when every criterion holds, 1 otherwise.
"""
import argparse
import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# --- the app (imported by the workers as soak:app) -----------------------------------------------
_flask = None


def _flask_app():
    global _flask
    if _flask is None:
        sys.path.insert(0, os.path.join(HERE, "apps"))
        from flask_json import app as flask_app
        _flask = flask_app
    return _flask


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        body = b"Hello, World!\n"
    elif path == "/flask":
        environ = dict(environ, PATH_INFO="/")
        return _flask_app()(environ, start_response)
    elif path == "/upload":
        h = hashlib.sha256()
        n = 0
        read = environ["wsgi.input"].read
        while True:
            data = read(65536)
            if not data:
                break
            n += len(data)
            h.update(data)
        body = f"{n} {h.hexdigest()}".encode()
    elif path == "/slow":
        ms = int(environ.get("QUERY_STRING") or "100")
        time.sleep(min(ms, 2000) / 1000)
        body = f"slept {ms}".encode()
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# --- process table --------------------------------------------------------------------------------
def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def children(pid):
    """(live, zombies) child pids of ``pid``."""
    live, zombies = [], []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = _stat(entry)
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            (zombies if state == "Z" else live).append(int(entry))
    return live, zombies


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- load -----------------------------------------------------------------------------------------
class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.by_route = {}
        self.failures = []      # (start, end, route, error)


def one_request(address, route, rng):
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        if route == "upload":
            size = rng.choice((1024, 65536, 1 << 20))
            body = rng.randbytes(size)
            conn.request("POST", "/upload", body=body,
                         headers={"Content-Type": "application/octet-stream"})
            expect = f"{size} {hashlib.sha256(body).hexdigest()}".encode()
        elif route == "slow":
            ms = rng.randint(50, 500)
            conn.request("GET", f"/slow?{ms}")
            expect = f"slept {ms}".encode()
        elif route == "flask":
            conn.request("GET", "/flask")
            expect = None
        else:
            conn.request("GET", "/hello")
            expect = b"Hello, World!\n"
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        if expect is None:
            if json.loads(data)["message"] != "Hello, World!":
                raise RuntimeError(f"body {data[:80]!r}")
        elif data != expect:
            raise RuntimeError(f"body {data[:80]!r}")
    finally:
        conn.close()


ROUTES = ["hello"] * 4 + ["flask"] * 3 + ["upload"] * 2 + ["slow"]


def client(address, stats, stop, seed, max_requests):
    rng = random.Random(seed)
    for _ in range(max_requests):
        if stop.is_set():
            return
        route = rng.choice(ROUTES)
        start = time.monotonic()
        try:
            one_request(address, route, rng)
        except Exception as exc:     # every failure is kept, with its kind
            with stats.lock:
                stats.failures.append((start, time.monotonic(), route,
                                       f"{type(exc).__name__}: {exc}"[:120]))
        else:
            with stats.lock:
                stats.ok += 1
                stats.by_route[route] = stats.by_route.get(route, 0) + 1


# --- main -----------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--every", type=float, default=3.0, help="seconds between driver actions")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0,
                    help="seconds excluded from the growth figures (60)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--server-arg", action="append", default=[])
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, REPO]), PYTHONUNBUFFERED="1")
    for key in ("UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY"):
        env.pop(key, None)
    log_path = f"/tmp/unicornd-soak-{os.getpid()}.log"
    log = open(log_path, "w")
    cmd = [sys.executable, "-m", "unicornd", "-w", str(args.workers), "-k", "sync",
           "-b", "127.0.0.1:0", "--chdir", HERE, *args.server_arg, "soak:app"]
    master = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    print("command:", " ".join(cmd), flush=True)
    try:
        return run(args, rng, master, log_path)
    finally:
        if master.poll() is None:
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(master.pid, signal.SIGKILL)
                master.wait(10)
        try:
            os.killpg(master.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


def run(args, rng, master, log_path):
    deadline = time.monotonic() + 60
    address = None
    while address is None:
        if master.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"unicornd did not start:\n{open(log_path).read()}")
        m = re.search(r"Listening at: http://([\d.]+):(\d+)", open(log_path).read())
        if m:
            address = (m.group(1), int(m.group(2)))
        else:
            time.sleep(0.05)
    while True:
        try:
            one_request(address, "hello", rng)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)

    stats = Stats()
    stop = threading.Event()
    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(address, stats, stop, args.seed * 1000 + i,
                                                     10_000_000), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()

    actions = []        # (time, action, pid, time the worker was seen dead)
    samples = []        # (t, rss KiB, fds, workers, zombies)
    end = t0 + args.duration
    next_action = t0 + args.every
    next_sample = t0
    lo, hi = 2, 2 * args.workers
    while time.monotonic() < end:
        now = time.monotonic()
        if master.poll() is not None:
            print("master exited!", master.returncode, flush=True)
            break
        if now >= next_sample:
            live, zombies = children(master.pid)
            samples.append((round(now - t0, 1), rss_kib(master.pid), nfds(master.pid), len(live),
                            len(zombies)))
            next_sample += args.sample
        if now >= next_action:
            live, _ = children(master.pid)
            action = rng.choice(("HUP", "TTIN", "TTOU", "KILL", "KILL"))
            if action == "TTIN" and len(live) >= hi:
                action = "TTOU"
            if action == "TTOU" and len(live) <= lo:
                action = "TTIN"
            pid = master.pid
            if action == "KILL":
                if not live:
                    action = "HUP"
                else:
                    pid = rng.choice(live)
            try:
                os.kill(pid, signal.SIGKILL if action == "KILL" else getattr(signal, "SIG" + action))
            except ProcessLookupError:
                pass
            else:
                gone = now
                if action == "KILL":
                    # the worker is gone when it is a zombie or reaped; until then it may still
                    # take a connection off the listen queue (an accept() in progress), which the
                    # kill then resets: such a request is held by the killed worker too
                    limit = now + 5
                    while time.monotonic() < limit:
                        try:
                            if _stat(pid)[0] in "ZX":
                                break
                        except (OSError, IndexError, ValueError):
                            break
                        time.sleep(0.001)
                    gone = time.monotonic()
                actions.append((now, action, pid, gone))
            next_action += args.every
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(40)
    elapsed = time.monotonic() - t0

    # settle, then the final process table
    live, zombies = children(master.pid)
    final = {"rss_kib": rss_kib(master.pid), "fds": nfds(master.pid), "workers": len(live),
             "zombies": len(zombies)}

    kills = [(t, gone) for t, a, _, gone in actions if a == "KILL"]
    explained, unexplained = [], []
    for f in sorted(stats.failures):
        start, stop_t, route, err = f
        # in flight when a worker was SIGKILLed (a sync worker may hold more than one connection:
        # the one it serves and heads it is still reading)
        if any(start <= gone and k <= stop_t for k, gone in kills):
            explained.append(f)
        else:
            near = min(actions, key=lambda a: abs(a[0] - start), default=None)
            unexplained.append({
                "t": round(start - t0, 3), "seconds": round(stop_t - start, 3), "route": route,
                "error": err, "nearest_action": near and (near[1], round(near[0] - start, 3))})

    def growth(col):
        after = [s for s in samples if s[0] >= args.warmup]
        if len(after) < 4:
            return None
        n = max(1, int(60 / args.sample))
        first = sum(s[col] for s in after[:n]) / len(after[:n])
        last = sum(s[col] for s in after[-n:]) / len(after[-n:])
        return round(100.0 * (last - first) / first, 2)

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "seconds": round(elapsed, 1),
        "requests_ok": stats.ok,
        "by_route": stats.by_route,
        "failures": len(stats.failures),
        "failures_in_flight_at_kill": len(explained),
        "failures_unexplained": len(unexplained),
        "unexplained": unexplained[:20],
        "actions": {a: sum(1 for _, x, _, _ in actions if x == a) for a in ("HUP", "TTIN", "TTOU",
                                                                         "KILL")},
        "master_rss_kib": {"first": samples[0][1] if samples else None,
                           "min": min(s[1] for s in samples), "max": max(s[1] for s in samples),
                           "growth_pct_after_warmup": growth(1)},
        "master_fds": {"min": min(s[2] for s in samples), "max": max(s[2] for s in samples),
                       "growth_pct_after_warmup": growth(2)},
        "workers": {"min": min(s[3] for s in samples), "max": max(s[3] for s in samples)},
        "zombies_max_in_a_sample": max(s[4] for s in samples),
        "final": final,
        "samples": samples,
        "action_log": [(round(t - t0, 3), a, pid, round(g - t, 4)) for t, a, pid, g in actions],
        "kill_to_gone_max_ms": round(1000 * max((g - t for t, a, _, g in actions if a == "KILL"),
                                                default=0), 1),
    }
    rg, fg = result["master_rss_kib"]["growth_pct_after_warmup"], \
        result["master_fds"]["growth_pct_after_warmup"]
    ok = (not unexplained and master.poll() is None and final["zombies"] == 0
          and (rg is None or rg < 5) and (fg is None or fg < 5))
    master.send_signal(signal.SIGTERM)
    try:
        result["exit_status"] = master.wait(60)
    except subprocess.TimeoutExpired:
        result["exit_status"] = None
        ok = False
    result["pass"] = ok
    short = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(short, indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

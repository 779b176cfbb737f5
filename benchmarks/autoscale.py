"""Bursty load against a fixed floor, a fixed ceiling and the autoscaled server (max_workers).

Run by hand, never in CI (about 40 s per server, three servers, two minutes in all):

    python3 benchmarks/autoscale.py --floor 2 --ceiling 8 --json /tmp/autoscale.json

Each server (``-k sync``, apps/sleep.py: 50 ms per request) gets the same load from
``--clients`` threads, each request on a new connection: ``--cycles`` times, a quiet phase
(``--quiet-clients`` clients for ``--quiet`` seconds) then a burst (``--clients`` for
``--burst`` seconds), then a last quiet phase. Printed per server: requests per second over
the whole run, p50 and p99 latency over the whole run and within the bursts, failures, and
the workers' summed RSS (from /proc: the mean over the run, sampled every 0.5 s, and the
peak), and for the autoscaled one its changes of count. The three servers:

- ``-w FLOOR``: what the floor alone serves (little memory, slow bursts);
- ``-w CEILING``: the ceiling all the time (fast bursts, memory paid all the time);
- ``-w FLOOR --max-workers CEILING`` with short periods (``--up``, ``--down``) suited to the
  burst length: capacity when the burst needs it, memory back once it is over.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Clients:
    """``size`` client threads; the first ``level`` of them send requests back to back."""

    def __init__(self, port, size):
        self.port, self.level = port, 0
        self.results = []  # (start, latency, ok)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(size)]
        for t in self.threads:
            t.start()

    def _run(self, index):
        while not self.stop.is_set():
            if index >= self.level:
                self.stop.wait(0.02)  # this client is off in the current phase
                continue
            start = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                ok = resp.status == 200
            except Exception:
                ok = False
            with self.lock:
                self.results.append((start, time.monotonic() - start, ok))

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def _pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_one(name, args, server_args):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(HERE, "apps"), REPO]))
    for key in ("UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "unicornd", "-k", "sync", "-b",
                             f"127.0.0.1:{port}", *server_args, "sleep:app"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=HERE)
    log = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    floor = int(server_args[server_args.index("-w") + 1])
    _wait(lambda: answers() and len(_children(proc.pid)) >= floor, 30, f"{name} to serve")
    clients = Clients(port, max(args.clients, args.quiet_clients))
    phases = []
    for _ in range(args.cycles):
        phases += [("quiet", args.quiet_clients, args.quiet), ("burst", args.clients, args.burst)]
    phases.append(("quiet", args.quiet_clients, args.quiet))
    rss_samples, workers_samples, bursts = [], [], []
    started = time.monotonic()
    for kind, level, seconds in phases:
        clients.level = level
        begin = time.monotonic()
        if kind == "burst":
            bursts.append((begin, begin + seconds))
        while time.monotonic() < begin + seconds:
            kids = _children(proc.pid)
            rss_samples.append(sum(_rss(k) for k in kids))
            workers_samples.append(len(kids))
            time.sleep(0.5)  # the sampling period of a measurement, not a synchronisation
    elapsed = time.monotonic() - started
    clients.level = 0
    clients.close()
    proc.terminate()
    proc.wait(60)
    reader.join(5)
    results = [r for r in clients.results if r[0] >= started]
    ok = [lat for _, lat, good in results if good]
    in_burst = [lat for start, lat, good in results
                if good and any(b <= start < e for b, e in bursts)]
    changes = [line.split("] ", 3)[-1].strip() for line in log if "Scaling " in line]
    return {
        "server": name, "args": " ".join(server_args), "seconds": round(elapsed, 1),
        "requests": len(ok), "failures": len(results) - len(ok),
        "rps": round(len(ok) / elapsed, 1),
        "p50_ms": round(1000 * _pct(ok, 0.50), 1), "p99_ms": round(1000 * _pct(ok, 0.99), 1),
        "burst_p50_ms": round(1000 * _pct(in_burst, 0.50), 1),
        "burst_p99_ms": round(1000 * _pct(in_burst, 0.99), 1),
        "rss_mean_mib": round(sum(rss_samples) / len(rss_samples) / 2**20, 1),
        "rss_peak_mib": round(max(rss_samples) / 2**20, 1),
        "workers_mean": round(sum(workers_samples) / len(workers_samples), 2),
        "changes": changes,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--floor", type=int, default=2)
    p.add_argument("--ceiling", type=int, default=8)
    p.add_argument("--clients", type=int, default=16, help="clients during a burst")
    p.add_argument("--quiet-clients", type=int, default=1, help="clients between bursts")
    p.add_argument("--burst", type=float, default=10.0, help="seconds of a burst")
    p.add_argument("--quiet", type=float, default=6.0, help="seconds between bursts")
    p.add_argument("--cycles", type=int, default=2)
    p.add_argument("--up", type=float, default=1.0, help="scale_up_period of the autoscaled one")
    p.add_argument("--down", type=float, default=2.0, help="scale_down_period of it")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    servers = [
        (f"fixed floor (-w {args.floor})", ["-w", str(args.floor)]),
        (f"fixed ceiling (-w {args.ceiling})", ["-w", str(args.ceiling)]),
        (f"autoscaled ({args.floor}..{args.ceiling})",
         ["-w", str(args.floor), "--max-workers", str(args.ceiling),
          "--scale-up-period", str(args.up), "--scale-down-period", str(args.down)]),
    ]
    results = []
    for name, server_args in servers:
        result = run_one(name, args, server_args)
        results.append(result)
        print(f"{name:28} {result['rps']:7.1f} req/s  p50 {result['p50_ms']:6.1f} ms  "
              f"p99 {result['p99_ms']:7.1f} ms  burst p99 {result['burst_p99_ms']:7.1f} ms  "
              f"RSS mean {result['rss_mean_mib']:6.1f} MiB peak {result['rss_peak_mib']:6.1f} MiB  "
              f"workers {result['workers_mean']:4.1f}  failures {result['failures']}",
              flush=True)
        for change in result["changes"]:
            print(f"    {change}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 1 if any(r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A/B throughput benchmark: unicornd vs gunicorn, driven by wrk.

Stdlib only.  Run benchmarks/setup.sh first.  Loopback only, bounded in time.

For each scenario (app x connections x gunicorn version) both servers are
started on their own free 127.0.0.1 port with the same -w/-k/--threads,
polled until they answer, warmed up, then measured in interleaved rounds
(A B, B A, A B, ...).  The per-round unicornd/gunicorn requests/s ratio is
the figure of merit; its median over rounds is reported.

Example:
    python3 benchmarks/run.py --worker sync --workers 2 \
        --app hello,flask --connections 1,100 --rounds 5 --duration 10s
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

APPS = {
    "hello": ("hello:app", b"Hello, World!\n"),
    "flask": ("flask_json:app", None),
    "sleep": ("sleep:app", b"slept 50ms\n"),
}

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
    """One HTTP/1.0 GET / on loopback; returns (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"malformed response: {raw[:200]!r}")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return status, headers, body


def tail(path: str, n: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return ""


class Server:
    def __init__(self, name: str, cmd: list[str], args, app: str, logdir: str):
        self.name = name
        self.port = free_port()
        self.log = os.path.join(logdir, f"{name}-{self.port}.log")
        target, self.expect_body = APPS[app]
        argv = list(cmd) + [
            "-w", str(args.workers),
            "-k", args.worker,
            "-b", f"127.0.0.1:{self.port}",
        ]
        if args.threads:
            argv += ["--threads", str(args.threads)]
        argv += list(args.server_arg)
        argv.append(target)
        self.argv = argv
        env = dict(os.environ)
        env["PYTHONPATH"] = APPS_DIR + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = spawn(argv, self.log, cwd=APPS_DIR, env=env)

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

    def stop(self) -> None:
        stop(self.proc)


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
            timeout: str, bound_s: float) -> dict:
    t = max(1, min(threads, conns))
    argv = [wrk, f"-t{t}", f"-c{conns}", f"-d{duration}", f"--timeout={timeout}",
            "--latency", f"http://127.0.0.1:{port}/"]
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


ROUND_HDR = ["round", "order", "U rps", "U p50 ms", "U p99 ms", "G rps",
             "G p50 ms", "G p99 ms", "U/G", "errors"]


def round_row(i, order, u, g):
    errs = []
    if u["errors"]:
        errs.append("U:" + u["errors"])
    if g["errors"]:
        errs.append("G:" + g["errors"])
    return [i, order, fmt(u["rps"], ".0f"), fmt(u["p50"], ".2f"),
            fmt(u["p99"], ".2f"), fmt(g["rps"], ".0f"), fmt(g["p50"], ".2f"),
            fmt(g["p99"], ".2f"), fmt(ratio(u["rps"], g["rps"]), ".2f"),
            " ".join(errs) or "0"]


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


# ------------------------------------------------------------------- main

def default_cmd(kind: str) -> list[str]:
    if kind == "unicornd":
        py = os.path.join(BENCH_DIR, "unicornd", "bin", "python")
        if os.path.exists(py):
            return [py, "-m", "unicornd"]
        return [sys.executable, "-m", "unicornd"]
    exe = os.path.join(BENCH_DIR, f"gunicorn{kind}", "bin", "gunicorn")
    if not os.path.exists(exe):
        alt = f"/opt/gunicorn{kind}/bin/gunicorn"
        if os.path.exists(alt):
            return [alt]
        sys.exit(f"{exe} not found: run benchmarks/setup.sh or pass --gunicorn-cmd")
    return [exe]


def csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", "-k", default="sync",
                   help="worker class for both servers (sync, gthread, gevent, eventlet)")
    p.add_argument("--workers", "-w", type=int, default=2)
    p.add_argument("--threads", type=int, default=0,
                   help="--threads for both servers (0: not passed)")
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
                   help="gunicorn version(s) to compare with: 27, 23 or 27,23")
    p.add_argument("--unicornd-cmd", help="command for unicornd (shell words)")
    p.add_argument("--gunicorn-cmd",
                   help="command for gunicorn (shell words); overrides --gunicorn lookup")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra argument passed to both servers (repeatable)")
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
    dur_s = parse_duration(args.duration)
    warm_s = parse_duration(args.warmup)
    wrk = args.wrk
    if not any(os.access(os.path.join(d, wrk), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep)) \
            and not os.access(wrk, os.X_OK):
        sys.exit("wrk not found: run benchmarks/setup.sh")

    if args.scenarios:
        pairs = []
        for item in csv(args.scenarios):
            a, _, c = item.partition(":")
            if a not in APPS or not c.isdigit():
                p.error(f"bad scenario {item!r}")
            pairs.append((a, int(c)))
    else:
        pairs = [(a, int(c)) for a in csv(args.app) for c in csv(args.connections)]

    ucmd = shlex.split(args.unicornd_cmd) if args.unicornd_cmd else default_cmd("unicornd")
    if args.gunicorn_cmd:
        gcmds = [("custom", shlex.split(args.gunicorn_cmd))]
    else:
        gcmds = [(v, default_cmd(v)) for v in csv(args.gunicorn)]

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
    print(f"# unicornd: {shlex.join(ucmd)}")
    for v, c in gcmds:
        print(f"# gunicorn {v}: {shlex.join(c)}")
    print(f"# worker={args.worker} workers={args.workers} threads={args.threads or '-'} "
          f"rounds={args.rounds} duration={args.duration} warmup={args.warmup} "
          f"wrk -t{args.wrk_threads} --timeout {args.wrk_timeout}")
    print(f"# server logs: {logdir}\n")

    results = []
    bound = dur_s + 30
    try:
        for gver, gcmd in gcmds:
            for app, conns in pairs:
                title = (f"{app} c={conns} -k {args.worker} -w {args.workers}"
                         + (f" --threads {args.threads}" if args.threads else "")
                         + f"  unicornd vs gunicorn {gver}")
                print(f"## {title}", flush=True)
                servers = {
                    "U": Server("unicornd", ucmd, args, app, logdir),
                    "G": Server(f"gunicorn{gver}", gcmd, args, app, logdir),
                }
                try:
                    for s in servers.values():
                        s.wait_ready(args.ready_timeout)
                    if warm_s > 0:
                        for s in servers.values():
                            run_wrk(wrk, s.port, conns, args.warmup,
                                    args.wrk_threads, args.wrk_timeout, warm_s + 30)
                    rounds = []
                    for i in range(1, args.rounds + 1):
                        order = "UG" if i % 2 else "GU"
                        r = {}
                        for key in order:
                            s = servers[key]
                            if not s.alive():
                                raise RuntimeError(
                                    f"{s.name} died (rc={s.proc.returncode})\n"
                                    f"--- {s.log} ---\n{tail(s.log)}")
                            r[key] = run_wrk(wrk, s.port, conns, args.duration,
                                             args.wrk_threads, args.wrk_timeout, bound)
                        rounds.append({"round": i, "order": order,
                                       "U": r["U"], "G": r["G"]})
                        if i == 1:
                            print("  " + " | ".join(ROUND_HDR))
                        print("  " + " | ".join(str(c) for c in
                                                 round_row(i, order, r["U"], r["G"])),
                              flush=True)
                finally:
                    for s in servers.values():
                        s.stop()
                print()
                print_table(ROUND_HDR, [round_row(x["round"], x["order"], x["U"], x["G"])
                                        for x in rounds])
                ratios = [ratio(x["U"]["rps"], x["G"]["rps"]) for x in rounds]
                summary = {
                    "scenario": title, "app": app, "connections": conns,
                    "gunicorn": gver, "worker": args.worker, "workers": args.workers,
                    "threads": args.threads,
                    "U_rps": med(x["U"]["rps"] for x in rounds),
                    "U_p50": med(x["U"]["p50"] for x in rounds),
                    "U_p99": med(x["U"]["p99"] for x in rounds),
                    "G_rps": med(x["G"]["rps"] for x in rounds),
                    "G_p50": med(x["G"]["p50"] for x in rounds),
                    "G_p99": med(x["G"]["p99"] for x in rounds),
                    "ratio_median": med(ratios),
                    "ratio_min": min((q for q in ratios if q), default=None),
                    "ratio_max": max((q for q in ratios if q), default=None),
                    "errors": sum(x[k]["sock_err"] + x[k]["non2xx"]
                                  for x in rounds for k in "UG"),
                    "error_rounds": sum(1 for x in rounds for k in "UG"
                                        if x[k]["errors"]),
                    "rounds": [{"round": x["round"], "order": x["order"],
                                **{k: {kk: vv for kk, vv in x[k].items() if kk != "raw"}
                                   for k in "UG"}} for x in rounds],
                }
                results.append(summary)
                print(f"\nmedian U/G ratio: {fmt(summary['ratio_median'], '.2f')} "
                      f"(min {fmt(summary['ratio_min'], '.2f')}, "
                      f"max {fmt(summary['ratio_max'], '.2f')})\n", flush=True)
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

    print("## Summary (medians over rounds; U = unicornd, G = gunicorn)\n")
    print_table(
        ["scenario", "G ver", "U rps", "U p50", "U p99", "G rps", "G p50", "G p99",
         "U/G median", "U/G min-max", "errors"],
        [[f"{r['app']} c={r['connections']}", r["gunicorn"], fmt(r["U_rps"], ".0f"),
          fmt(r["U_p50"], ".2f"), fmt(r["U_p99"], ".2f"), fmt(r["G_rps"], ".0f"),
          fmt(r["G_p50"], ".2f"), fmt(r["G_p99"], ".2f"),
          fmt(r["ratio_median"], ".2f"),
          f"{fmt(r['ratio_min'], '.2f')}-{fmt(r['ratio_max'], '.2f')}",
          r["errors"]] for r in results])
    print("\n(latencies in ms; errors = socket errors + non-2xx/3xx over all runs)")
    if not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup_all()
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)

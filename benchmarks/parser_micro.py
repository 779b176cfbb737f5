"""Micro-benchmark of the sans-IO request parser alone (no sockets, no app), by hand.

    python3 benchmarks/parser_micro.py                      # this tree's parser, ops/s
    python3 benchmarks/parser_micro.py --against /old/tree  # new/old ratio, interleaved

One op is what the request loop asks of the parser for one request on a kept-alive
connection: receive_data(bytes), next_event() until EndOfMessage, start_next_request().
Both trees' ``unicornd/http`` packages (self-contained: relative imports only) are loaded in
one process under their own names, and timed in short turns (new, old, old, new...) so that
what else runs on the machine weighs on both alike. A round's figure for a tree is the best of
its ``--repeat`` turns of ``--number`` ops, timed in this process's CPU time (time spent
descheduled does not count); the report gives the median over rounds and the median of the
per-round new/old ratios. Never run by the test suite: numbers depend on the machine.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time
import timeit

CASES = {
    # what Chromium sends for a page (a typical browser GET head)
    "browser_get": (
        b"GET /products/shoes?color=red&size=42 HTTP/1.1\r\n"
        b"Host: shop.example.com\r\n"
        b"Connection: keep-alive\r\n"
        b"sec-ch-ua: \"Chromium\";v=\"130\", \"Not?A_Brand\";v=\"99\"\r\n"
        b"sec-ch-ua-mobile: ?0\r\n"
        b"sec-ch-ua-platform: \"Linux\"\r\n"
        b"Upgrade-Insecure-Requests: 1\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        b"Chrome/130.0.0.0 Safari/537.36\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
        b"image/webp,*/*;q=0.8\r\n"
        b"Sec-Fetch-Site: same-origin\r\n"
        b"Sec-Fetch-Mode: navigate\r\n"
        b"Sec-Fetch-Dest: document\r\n"
        b"Referer: https://shop.example.com/\r\n"
        b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
        b"Accept-Language: en-GB,en;q=0.9\r\n"
        b"Cookie: session=4f1c2a9e7b; theme=dark\r\n"
        b"\r\n"),
    # what wrk and most load balancers' health checks send
    "small_get": b"GET /hello HTTP/1.1\r\nHost: localhost:8000\r\n\r\n",
    # a small JSON POST with its body in the same segment
    "small_post": (
        b"POST /api/items HTTP/1.1\r\n"
        b"Host: api.example.com\r\n"
        b"User-Agent: python-requests/2.32.3\r\n"
        b"Accept-Encoding: gzip, deflate\r\n"
        b"Accept: */*\r\n"
        b"Connection: keep-alive\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 27\r\n"
        b"\r\n"
        b'{"name": "shoe", "qty": 42}'),
}


def load_http(tree, name):
    """The tree's unicornd/http package, imported as ``name``."""
    path = os.path.join(os.path.abspath(tree), "unicornd", "http")
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(path, "__init__.py"), submodule_search_locations=[path])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[name] = pkg
    spec.loader.exec_module(pkg)
    return importlib.import_module(name + ".parser")


def make_op(parser_mod, data):
    parser = parser_mod.RequestParser(parser_mod.ParserOptions())
    need_data = parser_mod.NEED_DATA
    end = parser_mod.EndOfMessage

    def one():
        parser.receive_data(data)
        ev = parser.next_event()
        while type(ev) is not end:
            if ev is need_data:
                raise RuntimeError("incomplete request in the benchmark")
            ev = parser.next_event()
        parser.start_next_request()

    one()
    return one


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", metavar="OLD_TREE", help="compare with the parser of this tree")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [("new", load_http(here, "_bench_new_http"))]
    if args.against:
        trees.append(("old", load_http(args.against, "_bench_old_http")))
    rounds = {label: {case: [] for case in CASES} for label, _ in trees}
    for case, data in CASES.items():
        ops = [(label, make_op(mod, data)) for label, mod in trees]
        for r in range(args.rounds):
            best = {label: float("inf") for label, _ in trees}
            for i in range(args.repeat):
                for label, op in (ops if (r + i) % 2 == 0 else ops[::-1]):
                    best[label] = min(best[label], timeit.Timer(op, timer=time.process_time)
                                                      .timeit(args.number))
            for label, _ in trees:
                rounds[label][case].append(args.number / best[label])
    print(f"{'case':<12} " + " ".join(f"{label + ' ops/s':>14}" for label, _ in trees)
          + ("   new/old: median of per-round ratios (rounds)" if args.against else ""))
    for case in CASES:
        line = f"{case:<12} " + " ".join(
            f"{statistics.median(rounds[label][case]):>14,.0f}" for label, _ in trees)
        if args.against:
            ratios = [n / o for n, o in zip(rounds["new"][case], rounds["old"][case])]
            line += f"   {statistics.median(ratios):.3f}  (" \
                    + ", ".join(f"{x:.2f}" for x in ratios) + ")"
        print(line)


if __name__ == "__main__":
    main()

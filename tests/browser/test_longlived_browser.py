"""Issue 13 in a real browser: headless Chromium loads examples/longlived.html, served by
examples/longlived.py through nginx with the shipped examples/nginx/unicornd.conf, once per
worker class, all four at once in one browser (tabs), and reads what the page found:

- SSE events arrive one by one, in order;
- 50 websocket echoes, text and binary, 125/126/65535/65536/70000 bytes;
- 30 short websocket sessions, each closed cleanly (1000, wasClean);
- for HOLD seconds, more than twice the server's ``timeout``: a busy websocket, an idle one,
  an SSE stream and fetches, with nothing dropped.

sync holds a whole worker per open stream (its documented limit): it runs with enough
workers for the page's connections at once.
"""

import json
import time

import pytest

from support import wait_for

pytestmark = pytest.mark.timeout(240)

TIMEOUT = 5
HOLD = 12
APP = "examples.longlived:app"
CLASSES = {
    "sync": ["-k", "sync", "-w", "6"],  # one stream per worker: the page holds 4 at once
    "gthread": ["-k", "gthread", "-w", "1", "--threads", "16"],
    "gevent": ["-k", "gevent", "-w", "1"],
    "eventlet": ["-k", "eventlet", "-w", "1"],
}
CHECKS = ["sse", "echo", "sessions", "hold"]


@pytest.fixture(scope="module")
def page_results(browser, sites):
    """Every class's site, every tab opened at once; kind -> (results, site)."""
    started = {kind: sites(kind, [*args, "--timeout", str(TIMEOUT)], APP) for kind, args in CLASSES.items()}
    for site in started.values():  # nginx routes the example's name to unicornd
        assert site.fetch("/fetch?n=7")[0] == 200
    tabs = {kind: browser.open(f"{site.url}/?checks={','.join(CHECKS)}&hold={HOLD}")
            for kind, site in started.items()}
    begun = time.monotonic()

    def all_done():
        return all(tab.evaluate("window.DONE === true") for tab in tabs.values())
    try:
        wait_for(all_done, 180, interval=0.5, message=lambda: "the pages' checks to finish: " + json.dumps(
            {kind: tab.evaluate("window.RESULTS || null") for kind, tab in tabs.items()}))
    finally:
        elapsed = time.monotonic() - begun
    results = {kind: tab.evaluate("window.RESULTS") for kind, tab in tabs.items()}
    return {kind: (results[kind], started[kind], elapsed) for kind in CLASSES}


@pytest.mark.parametrize("kind", list(CLASSES))
def test_page_checks_pass(page_results, kind):
    results, site, _ = page_results[kind]
    failed = {name: r for name, r in results.items() if not r.get("ok")}
    assert set(results) == set(CHECKS), results
    assert not failed, f"{kind}: {json.dumps(failed, indent=1)}\n--- unicornd log:\n{site.server.log[-4000:]}"


@pytest.mark.parametrize("kind", list(CLASSES))
def test_hold_outlived_the_timeout_and_nothing_was_killed(page_results, kind):
    results, site, _ = page_results[kind]
    hold = results["hold"]
    assert hold["held_s"] > 2 * TIMEOUT, hold
    log = site.server.log
    assert "WORKER TIMEOUT" not in log and "REQUEST STALLED" not in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    workers = CLASSES[kind][CLASSES[kind].index("-w") + 1]
    assert log.count("Booting worker") == int(workers), log[-4000:]  # none replaced

"""Readiness: whether a load balancer should send this server new requests (``GET /readyz``).

A pure function of the lifecycle model and the drain, so the rule is stated once, here, and
tested in-process (tests/master/test_readiness.py). The rule, in order:

1. **Draining or stopping**: not ready from the moment TERM (or INT, QUIT) arrives, through
   the ``drain_delay`` (the workers still serve) and the graceful stop that follows.
2. **Starting**: not ready until the first time every worker wanted has booted (the moment
   systemd is told ``READY=1``). Later dips, a worker crashing and being replaced, a recycle,
   a reload rolling over, do not make the server unready: the others serve meanwhile.
3. **A failed reload**: not ready from the moment a reload fails (the new settings did not
   load, or the new workers could not boot and the old ones stay) until a later reload
   completes. The old generation serves on, but it is not what was asked for: a balancer
   or an orchestrator that routes only to ready instances stops sending this one new work
   until the fix is deployed (a successful HUP) or the server is restarted.
4. **No worker serving** (all gone and being replaced, or WINCH): not ready.

Otherwise ready. ``/healthz`` (liveness) is another matter: it answers 200 whenever the
master's loop runs, ready or not.
"""


def readiness(model, drain_left=None):
    """(ready, why) for ``model`` (a Lifecycle); ``drain_left``: seconds of drain still to
    run after TERM, or None when not draining."""
    if model.stopping:
        return False, "stopping"
    if drain_left is not None:
        return False, f"draining: TERM received, stopping in {drain_left:.0f} s"
    serving = len(model.serving())
    if not model.ready_sent:
        return False, f"starting: {serving} of {model.target} worker(s) serving"
    if model.reload_failure is not None:
        return False, f"the last reload failed ({model.reload_failure}); the previous settings serve"
    if not serving:
        return False, "no worker serving"
    return True, f"{serving} worker(s) serving"

"""An app whose import fails or hangs on demand, for the master's lifecycle tests.

``LIFEAPP_DIR`` names a directory; at import time a file ``broken`` there makes the import
fail (ImportError, as a missing module would), a file ``slow`` makes it hang (a database that
is down); answers say which process served and how many it has served.
"""

import os
import time

_DIR = os.environ.get("LIFEAPP_DIR", "")
if _DIR and os.path.exists(os.path.join(_DIR, "broken")):
    raise ImportError("lifeapp: the 'broken' switch is on")
while _DIR and os.path.exists(os.path.join(_DIR, "slow")):
    time.sleep(0.2)  # "waiting for the database" until the switch is off

if _DIR:  # this process has the app: a test can wait for every worker to have booted
    open(os.path.join(_DIR, f"booted-{os.getpid()}"), "w").close()

_served = 0


def app(environ, start_response):
    global _served
    _served += 1
    if environ["PATH_INFO"] == "/sleep":
        open(os.path.join(_DIR, "inside"), "w").close()  # the test knows the app has it
        time.sleep(float(environ.get("QUERY_STRING") or "0.1"))
    body = f"{os.getpid()} {_served}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

"""The master forks, reaps, kills and selects through the original functions even when gevent
or eventlet has patched the standard library in its process (a -k gevent master is patched
before anything else is imported)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECK = r"""
import {patch}
import os, select, signal, sys, posix, _signal
from unicornd.master import rawos
patched = [n for n in ("fork", "waitpid") if getattr(os, n) is not getattr(posix, n)]
patched_select = select.select.__module__ not in ("select",)
print("patched:", patched, patched_select)
assert rawos.fork is posix.fork and rawos.waitpid is posix.waitpid and rawos.kill is posix.kill
assert rawos.signal.signal is _signal.signal
real = rawos._original_select()
assert getattr(real, "__module__", "select") == "select", real
# The original select really waits in the kernel: no hub runs for it.
r, w = os.pipe()
os.write(w, b"x")
assert rawos.select([r], [], [], 1.0)[0] == [r]
pid = rawos.fork()
if pid == 0:
    os._exit(7)
got, status = rawos.waitpid(pid, 0)
assert got == pid and os.WEXITSTATUS(status) == 7
print("ok", {expect_patched})
"""

PATCHES = {
    "gevent": "gevent.monkey; gevent.monkey.patch_all()",
    "eventlet": "eventlet; eventlet.monkey_patch(os=False)",
}


@pytest.mark.parametrize("library", ["gevent", "eventlet"])
def test_the_master_uses_original_functions_under_monkey_patching(library):
    code = CHECK.replace("{patch}", PATCHES[library]).replace("{expect_patched}", repr(library))
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok {library}" in done.stdout
    # The check is worth something only if the library did patch what the master avoids.
    assert "patched: [" in done.stdout and "True" in done.stdout.splitlines()[0], done.stdout

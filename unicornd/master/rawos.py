"""The original process, signal and select functions, whatever monkey-patching did.

With ``-k gevent`` (or ``eventlet``) the standard library is patched in the master too, before
anything else is imported (workers/greenpatch.py), and a preloaded app or a config file may
patch it as well. gevent's ``os.waitpid``/``os.fork`` reap children behind the master's back
through a child watcher, and a patched ``select`` runs the library's hub inside the master's
loop. The master uses these instead: ``posix`` and ``_signal`` are the C modules the public
ones wrap, which no library patches; ``select`` is taken from the library's saved original.
"""

import posix
import sys

import _signal
import signal as _signal_py

fork = posix.fork
close = posix.close  # gevent's os.close defers the close to its hub's loop
kill = posix.kill
waitpid = posix.waitpid
WNOHANG = posix.WNOHANG


class _Signal:
    """``signal`` without a library's wrappers (gevent wraps signal(), set_wakeup_fd())."""

    signal = staticmethod(_signal.signal)
    set_wakeup_fd = staticmethod(_signal.set_wakeup_fd)
    siginterrupt = staticmethod(_signal.siginterrupt)
    pthread_sigmask = staticmethod(_signal.pthread_sigmask)
    SIG_BLOCK = _signal.SIG_BLOCK
    SIG_UNBLOCK = _signal.SIG_UNBLOCK
    SIG_DFL = _signal.SIG_DFL
    Signals = _signal_py.Signals

    def __getattr__(self, name):  # the SIG* numbers
        return getattr(_signal, name)


signal = _Signal()


def _original_select():
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("select"):
        return gevent_monkey.get_original("select", "select")
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("select"):
        return eventlet_patcher.original("select").select
    import select
    return select.select


def select(rlist, wlist, xlist, timeout):
    return _original_select()(rlist, wlist, xlist, timeout)


def exists(pid: int) -> bool:
    """False once ``pid`` is gone (reaped: by us, or by someone else behind our back)."""
    try:
        posix.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

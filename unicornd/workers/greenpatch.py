"""Monkey-patching for the gevent and eventlet workers, done before anything else is imported.

``unicornd.cli`` calls :func:`patch_early` as its first statement, before it imports the
settings machinery, the config file, hook modules or (with ``--preload``) the app. It peeks
at the command line, ``UNICORND_CMD_ARGS`` (or ``GUNICORN_CMD_ARGS``) and the config file's
text for the worker class; for ``gevent`` or ``eventlet`` it patches the standard library
there and then, in the master, so every module imported later (and every worker forked
later) sees cooperative sockets, threads, ``time.sleep`` and ``select``.

This module imports nothing heavy on purpose: only what Python has already imported at start.
"""

import os
import re
import shlex
import sys

# Which library a worker class name means (our names, gunicorn's names, our class paths).
LIBRARIES = {
    "gevent": "gevent",
    "eventlet": "eventlet",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "egg:gunicorn#gevent": "gevent",
    "gunicorn.workers.geventlet.EventletWorker": "eventlet",
    "egg:gunicorn#eventlet": "eventlet",
    "unicornd.workers.ggevent:GeventWorker": "gevent",
    "unicornd.workers.ggevent.GeventWorker": "gevent",
    "unicornd.workers.geventlet:EventletWorker": "eventlet",
    "unicornd.workers.geventlet.EventletWorker": "eventlet",
}

# Modules whose users keep references to unpatched objects when imported before patching.
MUST_FOLLOW = ("ssl", "socket", "select", "selectors", "subprocess", "queue", "asyncio",
               "http.client", "urllib.request", "urllib3", "requests", "httpx", "psycopg2",
               "pymysql", "redis", "grpc")

_CONFIG_RE = re.compile(r"""^worker_class\s*=\s*(['"])([^'"]+)\1""", re.M)
_DEFAULT_CONFIG_FILES = ("unicornd.conf.py", "gunicorn.conf.py")

PATCHED = None  # "gevent" or "eventlet" once patched


def _from_args(args):
    """(worker class, config file) given in an argument list, either None if absent."""
    worker = config = None
    i = 0
    while i < len(args):
        arg = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if arg in ("-k", "--worker-class"):
            worker, i = nxt, i + 2
            continue
        if arg in ("-c", "--config"):
            config, i = nxt, i + 2
            continue
        if arg.startswith("--worker-class="):
            worker = arg.partition("=")[2]
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
        elif arg.startswith("-k") and not arg.startswith("--"):
            worker = arg[2:]
        elif arg.startswith("-c") and not arg.startswith("--"):
            config = arg[2:]
        elif arg == "--":
            break
        i += 1
    return worker, config


def worker_library(argv, environ):
    """'gevent', 'eventlet' or None: what the settings will choose, by a cheap peek (the
    command line wins over the environment variable, which wins over the config file)."""
    worker, config = _from_args(argv)
    env_text = environ.get("UNICORND_CMD_ARGS")
    if env_text is None:
        env_text = environ.get("GUNICORN_CMD_ARGS")
    env_worker = env_config = None
    if env_text:
        try:
            env_worker, env_config = _from_args(shlex.split(env_text))
        except ValueError:
            pass
    worker = worker or env_worker
    if worker is None:
        config = config or env_config
        paths = [config] if config else list(_DEFAULT_CONFIG_FILES)
        for path in paths:
            if path.startswith("python:"):
                break
            try:
                with open(path.removeprefix("file:"), encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            found = _CONFIG_RE.findall(text)
            if found:
                worker = found[-1][1]
            break
    return LIBRARIES.get(worker) if worker else None


def imported_too_early():
    """Modules that should have been imported after patching, and are not."""
    early = [name for name in MUST_FOLLOW if name in sys.modules]
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        early.append("threading (threads already running)")
    return early


def patch(library, warn=True) -> None:
    """Patch the standard library for ``library``; warn (naming them) about modules imported
    before. Does nothing if already patched."""
    global PATCHED
    if PATCHED is not None:
        return
    early = imported_too_early() if warn else []
    if library == "gevent":
        from gevent import monkey
        monkey.patch_all()
    else:
        import warnings
        with warnings.catch_warnings():
            # "Eventlet is deprecated": users who chose it know; it would repeat in every log.
            warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
            import eventlet
        # Not os: eventlet's green os.read waits on a non-blocking fd that has nothing to
        # read (the master drains its signal pipe that way) instead of raising.
        eventlet.monkey_patch(os=False)
        # A forked child must not use the hub (an epoll instance) it shares with the master:
        # registering its fds there would take the master's away. A new hub, at once.
        import eventlet.hubs
        os.register_at_fork(after_in_child=eventlet.hubs.use_hub)
    PATCHED = library
    if early:
        print(f"unicornd: warning: {', '.join(early)} imported before {library} monkey-patching; "
              f"code holding their unpatched objects may block the worker", file=sys.stderr)


def patch_early(argv=None, environ=None) -> None:
    """Called first thing by the CLI: patch if the settings choose gevent or eventlet.

    Only when this process is unicornd itself (``unicornd`` or ``python -m unicornd``), so
    importing ``unicornd.cli`` elsewhere (tests, tools) patches nothing. A library that is not
    installed is not an error here: resolving the worker class reports it, with the extra.
    """
    if argv is None:
        prog = os.path.basename(sys.argv[0]) if sys.argv else ""
        if prog not in ("unicornd", "__main__.py", "-m") and not prog.startswith("unicornd"):
            return
        if prog == "__main__.py" and os.path.basename(os.path.dirname(sys.argv[0])) != "unicornd":
            return
        argv = sys.argv[1:]
    library = worker_library(argv, os.environ if environ is None else environ)
    if library is None:
        return
    try:
        patch(library)
    except ImportError:
        return

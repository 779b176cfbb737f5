"""Worker classes: how connections are accepted and scheduled, nothing else.

``BUILTIN`` maps the names users pass to ``-k`` onto the class that implements them.
``PLANNED`` are gunicorn's other built-in names: known, but refused until they exist here.
``load_worker_class`` is what both the settings loader (so ``--check-config`` too) and the
master use: a class that cannot run, or whose library is missing, is an error before any fork.
"""

BUILTIN = {
    "sync": "unicornd.workers.sync:SyncWorker",
    "gthread": "unicornd.workers.gthread:ThreadWorker",
    "gevent": "unicornd.workers.ggevent:GeventWorker",
    "eventlet": "unicornd.workers.geventlet:EventletWorker",
}

PLANNED = ("tornado",)

# Built-in classes that need an optional library: (library, the extra that installs it).
EXTRAS = {"gevent": ("gevent", "gevent"), "eventlet": ("eventlet", "eventlet")}

# gunicorn spells its classes as paths or eggs; a config written for it names ours this way.
GUNICORN_ALIASES = {
    "gunicorn.workers.sync.SyncWorker": "sync",
    "egg:gunicorn#sync": "sync",
    "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "egg:gunicorn#gthread": "gthread",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "egg:gunicorn#gevent": "gevent",
    "gunicorn.workers.geventlet.EventletWorker": "eventlet",
    "egg:gunicorn#eventlet": "eventlet",
}


def load_worker_class(spec: str):
    """Resolve a ``-k`` value to a class. Raises ValueError with a message for users."""
    import importlib

    spec = GUNICORN_ALIASES.get(spec, spec)
    if spec in PLANNED:
        raise ValueError(f"worker class {spec!r} is not supported yet; available: {', '.join(BUILTIN)}")
    target = BUILTIN.get(spec, spec)
    if ":" in target:
        modname, _, attr = target.partition(":")
    elif "." in target:
        modname, _, attr = target.rpartition(".")
    else:
        raise ValueError(
            f"unknown worker class {spec!r}; built-in classes: {', '.join(BUILTIN)} "
            f"(or a dotted path such as mypkg.workers.MyWorker)"
        )
    try:
        module = importlib.import_module(modname)
    except ImportError as exc:
        if spec in EXTRAS and exc.name == EXTRAS[spec][0]:
            lib, extra = EXTRAS[spec]
            raise ValueError(f"the {spec} worker needs {lib}, which is not installed: "
                             f"pip install 'unicornd[{extra}]'") from None
        raise ValueError(f"cannot import worker class {spec!r}: {exc}") from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ValueError(f"worker class {spec!r}: {attr!r} is not a class in module {modname!r}")
    check_worker_class(cls, spec)
    return cls


def check_worker_class(cls, spec: str) -> None:
    """Refuse, before anything forks, a class the master cannot run; say what it lacks.

    The master builds a worker as ``cls(age, ppid, listeners, cfg, log, slot=, app=)`` and, in
    the child, calls ``init_process()``, which ends in the class's ``run()``: what
    ``unicornd.workers.base.Worker`` provides. A class written for gunicorn's worker API
    (``gunicorn.workers.sync.SyncWorker`` and friends take other arguments, heartbeat through
    a temp file) would crash the master at the first fork, so it is refused here.
    """
    from unicornd.workers.base import Worker

    if issubclass(cls, Worker):
        if cls.run is Worker.run:
            raise ValueError(f"worker class {spec!r} lacks a run() method: derive it from a "
                             f"built-in class such as unicornd.workers.sync.SyncWorker, or define "
                             f"run() to accept and serve connections")
        return
    gunicorn_base = next((f"{base.__module__}.{base.__qualname__}" for base in cls.__mro__
                          if base.__module__.split(".")[0] == "gunicorn"), None)
    written_for = f" (it derives from gunicorn's {gunicorn_base})" if gunicorn_base else ""
    raise ValueError(
        f"worker class {spec!r} lacks unicornd's worker interface{written_for}: it does not "
        f"derive from unicornd.workers.base.Worker, whose constructor (age, ppid, listeners, "
        f"cfg, log, slot=, app=) and init_process() the master calls; derive it from a built-in "
        f"class such as unicornd.workers.sync.SyncWorker")

"""Worker classes: how connections are accepted and scheduled, nothing else.

``BUILTIN`` maps the names users pass to ``-k`` onto the class that implements them.
``PLANNED`` are gunicorn's other built-in names: known, but refused until they exist here.
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
    return cls

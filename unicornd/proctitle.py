"""Process titles (``ps`` shows ``unicornd: master [myapp]``) when setproctitle is installed."""

try:
    from setproctitle import setproctitle as _set
except ImportError:  # the optional extra is not installed: titles stay as they are
    _set = None


def set_title(role: str, name: str) -> None:
    if _set is not None:
        _set(f"unicornd: {role} [{name}]")

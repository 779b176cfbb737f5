"""Validators: take a value as given (CLI string, config-file object), return it normalised.

Each raises ``Invalid`` whose text is the "expected ..." part of the user's message, and
carries ``kind``: what the docs print as the setting's type. They accept what gunicorn's
validators accept (so a gunicorn config file loads unchanged): booleans as ``True`` or the
strings ``"true"``/``"false"``, integers as ints or strings (``"0x10"`` too), and so on.

A validator may also carry ``resolve``: a second step that needs imports (hooks given as
dotted paths, worker classes); the loader runs it once every source has been read, with
``chdir`` and ``pythonpath`` on ``sys.path`` as the server will have them.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import os
import socket
import ssl

from unicornd.config.addresses import EXPECTED as BIND_EXPECTED
from unicornd.config.addresses import parse_bind
from unicornd.config.errors import Invalid


def kind(text, resolve=None):
    def deco(fn):
        fn.kind = text
        fn.resolve = resolve
        return fn

    return deco


def _str(val, expected):
    if not isinstance(val, str):
        raise Invalid(expected)
    return val.strip()


def _int(val, expected):
    if isinstance(val, int):  # bools too: gunicorn takes True as 1
        return int(val)
    if isinstance(val, str):
        text = val.strip()
        for base in (10, 0):
            try:
                return int(text, base)
            except ValueError:
                pass
    raise Invalid(expected)


# -- scalars ------------------------------------------------------------------------------


@kind("boolean (`true` or `false`)")
def boolean(val):
    if val is None:  # gunicorn keeps None, which acts as false
        return False
    if isinstance(val, bool):
        return val
    if isinstance(val, str) and val.strip().lower() in ("true", "false"):
        return val.strip().lower() == "true"
    raise Invalid("expected true or false")


@kind("boolean (`true` or `false`), or unset")
def optional_boolean(val):
    return None if val is None else boolean(val)


@kind("integer, 0 or more")
def non_negative_int(val):
    expected = "expected a non-negative integer"
    n = _int(val, expected)
    if n < 0:
        raise Invalid(expected)
    return n


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@kind("size in bytes (`0`, `512M`, `2G`, ...)")
def byte_size(val):
    expected = "expected a size in bytes such as 0, 800000000, 512M or 2G (K, M, G are powers of 1024)"
    if isinstance(val, bool):
        raise Invalid(expected)
    if isinstance(val, int):
        if val < 0:
            raise Invalid(expected)
        return val
    text = _str(val, expected).upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in ("K", "M", "G") else ""
    number = text[: len(text) - len(unit)].strip()
    if not number.isdigit():
        raise Invalid(expected)
    return int(number) * _SIZE_UNITS[unit]


BUILTIN_LOGGER = "gunicorn.glogging.Logger"
# What the server calls on a logger object, as gunicorn's Logger defines it.
LOGGER_METHODS = ("critical", "error", "warning", "info", "debug", "exception", "access")


def _resolve_logger_class(spec):
    if spec == BUILTIN_LOGGER:
        return spec
    cls = import_object(spec) if isinstance(spec, str) else spec
    if not inspect.isclass(cls):
        raise Invalid(f"{spec!r} is not a class")
    missing = [name for name in LOGGER_METHODS if not callable(getattr(cls, name, None))]
    if missing:
        raise Invalid(f"{spec!r} lacks {', '.join(missing)}: a logger class provides "
                      f"{', '.join(LOGGER_METHODS)} as gunicorn's Logger does")
    return spec if isinstance(spec, str) else _class_to_path(spec)


@kind("`gunicorn.glogging.Logger` (the built-in logger) or a dotted path to a class",
      _resolve_logger_class)
def logger_class(val):
    if inspect.isclass(val):
        return val
    text = _str(val, "expected a dotted path to a class")
    if text in (BUILTIN_LOGGER, "simple", "unicornd.logging"):
        return BUILTIN_LOGGER
    if not text:
        raise Invalid("expected a dotted path to a class")
    return text


@kind("integer, 1 or more")
def positive_int(val):
    expected = "expected a positive integer"
    n = _int(val, expected)
    if n < 1:
        raise Invalid(expected)
    return n


@kind("number of seconds, above 0 (`0.5`, `5`, ...)")
def positive_seconds(val):
    expected = "expected a number of seconds above 0, such as 5 or 0.5"
    if isinstance(val, bool):
        raise Invalid(expected)
    if isinstance(val, (int, float)):
        n = float(val)
    else:
        try:
            n = float(_str(val, expected))
        except ValueError:
            raise Invalid(expected) from None
    if not n > 0 or n == float("inf"):
        raise Invalid(expected)
    return n


@kind("integer, 0 or more (`0022` is read as octal)")
def octal_int(val):
    if isinstance(val, str) and val.strip()[:1] == "0" and val.strip()[1:2].isdigit():
        val = "0o" + val.strip()[1:]
    return non_negative_int(val)


@kind("string")
def string(val):
    return _str(val, "expected a string")


@kind("string, or unset")
def optional_string(val):
    return None if val is None else _str(val, "expected a string or None")


@kind("non-empty string, or unset")
def optional_nonempty_string(val):
    if val is None:
        return None
    text = _str(val, "expected a non-empty string or None")
    if not text:
        raise Invalid("expected a non-empty string or None")
    return text


def choice(*values, aliases=None, none=None):
    """One of ``values`` (case-insensitive, stripped); ``aliases`` map more spellings."""
    aliases = aliases or {}
    allowed = ", ".join(values[:-1]) + " or " + values[-1]

    @kind("one of " + ", ".join(f"`{v}`" for v in values))
    def validate(val):
        if val is None and none is not None:
            return none
        if isinstance(val, bool) and val in aliases:
            return aliases[val]
        if isinstance(val, str):
            key = val.strip().lower()
            if key in values:
                return key
            if key in aliases:
                return aliases[key]
        raise Invalid(f"expected {allowed}")

    return validate


loglevel = choice("debug", "info", "warning", "error", "critical")
header_map = choice("drop", "refuse", "dangerous", none="drop")
proxy_protocol = choice(
    "off", "v1", "v2", "auto",
    aliases={"false": "off", "0": "off", "none": "off", "true": "auto", "1": "auto",
             False: "off", True: "auto"},
    none="off",
)


@kind("path of an existing directory")
def directory(val):
    text = _str(val, "expected the path of an existing directory")
    path = os.path.abspath(os.path.normpath(os.path.join(os.getcwd(), text)))
    if not os.path.isdir(path):
        raise Invalid("expected the path of an existing directory")
    return path


# -- lists and dicts ------------------------------------------------------------------------


def _strings(val, expected):
    """gunicorn's list settings: None/empty -> [], a string -> [string], else strings."""
    if not val:
        return []
    if isinstance(val, str):
        val = [val]
    if not isinstance(val, (list, tuple)):
        raise Invalid(expected)
    return [_str(v, expected) for v in val]


@kind("list of strings (one string is a one-item list)")
def string_list(val):
    return _strings(val, "expected a string or a list of strings")


def _comma(val, expected):
    if val is None:
        return []
    if isinstance(val, str):
        return [v.strip() for v in val.split(",") if v.strip()]
    return [v for v in _strings(val, expected) if v]


@kind("comma-separated strings (or a list)")
def comma_list(val):
    return _comma(val, "expected a comma-separated string or a list of strings")


@kind("comma-separated IP addresses or networks, or `*` (or a list)")
def address_list(val):
    expected = "expected comma-separated IP addresses or networks (such as 10.0.0.0/8), or *"
    items = _comma(val, expected)
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item)
        except ValueError as exc:
            why = f"{exc}; " if "host bits" in str(exc) else ""
            raise Invalid(why + expected, value=item) from None
    return items


@kind("list of addresses: `HOST:PORT`, `HOST`, `[IPv6]:PORT`, `unix:PATH`, `fd://N`")
def bind_list(val):
    entries = _strings(val, f"expected a string or a list of strings; {BIND_EXPECTED}")
    if not entries:
        raise Invalid(f"expected at least one address; {BIND_EXPECTED}")
    for entry in entries:
        try:
            addr = parse_bind(entry)
            if addr.kind == "tcp":
                _check_resolves(addr.host)
        except Invalid as exc:
            raise Invalid(str(exc), value=entry) from None
    return entries


def _check_resolves(host):
    try:
        ipaddress.ip_address(host.partition("%")[0])
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        raise Invalid(f"host {host!r} does not resolve to an address; {BIND_EXPECTED}") from None


@kind("list of `KEY=VALUE` strings")
def env_list(val):
    entries = _strings(val, "expected a KEY=VALUE string or a list of them")
    for entry in entries:
        key, sep, _ = entry.partition("=")
        if not sep or not key.strip():
            raise Invalid("expected KEY=VALUE", value=entry)
    return entries


@kind("dict")
def any_dict(val):
    if not isinstance(val, dict):
        raise Invalid("expected a dict")
    return val


@kind("dict of header name to value (names are upper-cased)")
def header_dict(val):
    expected = "expected a dict of header name to value, both strings"
    if not isinstance(val, dict):
        raise Invalid(expected)
    out = {}
    for k, v in val.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise Invalid(expected)
        out[k.strip().upper()] = v
    return out


# -- callables and classes ----------------------------------------------------------------


def arity(fn):
    """Positional parameters, counted as gunicorn does (``*args`` and keywords don't count)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in sig.parameters.values())


def import_object(path):
    """``pkg.mod.name`` or ``pkg.mod:name`` -> the object. Raises Invalid."""
    import importlib

    if ":" in path:
        modname, _, attr = path.partition(":")
    else:
        modname, _, attr = path.rpartition(".")
    if not modname or not attr:
        raise Invalid(f"{path!r} is not an import path (expected module.name)")
    try:
        module = importlib.import_module(modname)
    except Exception as exc:  # an import runs arbitrary code
        raise Invalid(f"cannot import {modname!r}: {type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise Invalid(f"module {modname!r} has no attribute {attr!r}") from None


def _plural(n):
    return f"{n} positional argument" + ("" if n == 1 else "s")


def hook(params, post_request=False):
    """A server hook: a callable taking ``params`` positionally, or a dotted path to one."""
    n = len(params)
    if post_request:
        wanted = f"a callable taking 2 to 4 positional arguments ({', '.join(params)})"
    else:
        wanted = f"a callable taking {_plural(n)} ({', '.join(params)})"

    def check(fn):
        if not callable(fn):
            raise Invalid(f"expected {wanted}, or a dotted path to one")
        got = arity(fn)
        if got is None:
            raise Invalid(f"expected {wanted}; cannot read the signature of this callable")
        if post_request:
            if got == 4:
                return fn
            if got in (2, 3):
                return _widen(fn, got)
        elif got == n:
            return fn
        raise Invalid(f"expected {wanted}; it takes {got}")

    def resolve(val):
        return check(import_object(val)) if isinstance(val, str) else val

    @kind(f"callable ({', '.join(params)}), or a dotted path to one", resolve)
    def validate(val):
        if isinstance(val, str):
            text = val.strip()
            if "." not in text and ":" not in text:
                raise Invalid(f"expected {wanted}, or a dotted path to one (module.name)")
            return text  # imported by resolve(), once sys.path is final
        return check(val)

    return validate


def _widen(fn, got):
    """gunicorn lets post_request take (worker, req) or (worker, req, environ)."""
    if got == 2:
        def wrapper(worker, req, environ, resp):
            return fn(worker, req)
    else:
        def wrapper(worker, req, environ, resp):
            return fn(worker, req, environ)
    functools.update_wrapper(wrapper, fn)
    del wrapper.__wrapped__  # keep inspect.signature() at 4 arguments
    return wrapper


def _class_to_path(val):
    if inspect.isfunction(val) or inspect.ismethod(val):
        val = val()  # gunicorn calls a function given here to get the class
    if not inspect.isclass(val):
        raise Invalid("expected a worker class name or a dotted path to a class")
    if "." in val.__qualname__:
        raise Invalid("expected a module-level class, or a dotted path to one")
    return f"{val.__module__}:{val.__qualname__}"


def _resolve_worker_class(spec):
    from unicornd import workers

    if not isinstance(spec, str):
        spec = _class_to_path(spec)
    name = workers.GUNICORN_ALIASES.get(spec, spec)
    resolved = spec
    for builtin, target in workers.BUILTIN.items():
        if name in (builtin, target, target.replace(":", ".")):
            resolved = spec = builtin
            break
    try:
        # Imported now, built-in classes too: a missing gevent or a class written for
        # gunicorn is an error of the settings (--check-config says so), not of the first fork.
        workers.load_worker_class(spec)
    except ValueError as exc:
        msg = str(exc)
        if spec not in workers.BUILTIN and "built-in class" not in msg and "available:" not in msg:
            msg += f" (built-in classes: {', '.join(workers.BUILTIN)})"
        raise Invalid(msg) from None
    return resolved


@kind("worker class name (`sync`, `gthread`), or a dotted path to a class", _resolve_worker_class)
def worker_class(val):
    if inspect.isclass(val) or inspect.isfunction(val) or inspect.ismethod(val):
        return val  # gunicorn accepts a class, or a function returning one: see resolve
    text = _str(val, "expected a worker class name or a dotted path to a class")
    if not text:
        raise Invalid("expected a worker class name or a dotted path to a class")
    return text


@kind("dotted path to a class")
def class_path(val):
    return _str(val, "expected a dotted path to a class")


# -- settings unicornd refuses (normalised only to compare with the default) ----------------


@kind("user name or uid")
def user(val):
    import pwd

    if val is None:
        return os.geteuid()
    if isinstance(val, int):
        return val
    text = _str(val, "expected a user name or uid")
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise Invalid(f"no such user {text!r}") from None


@kind("group name or gid")
def group(val):
    import grp

    if val is None:
        return os.getegid()
    if isinstance(val, int):
        return val
    text = _str(val, "expected a group name or gid")
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise Invalid(f"no such group {text!r}") from None


@kind("`ssl.PROTOCOL_*` constant or its name")
def ssl_version(val):
    if isinstance(val, ssl.TLSVersion):
        return val
    if isinstance(val, str):
        text = val.strip().replace(".", "_")
        if text.isdigit():
            return int(text)
        if text in ("TLSv1_2", "TLSv1_3"):
            return ssl.TLSVersion[text]
        const = getattr(ssl, "PROTOCOL_" + text, None)
        if const is None:
            raise Invalid("expected TLSv1_2, TLSv1_3 or an ssl.PROTOCOL_* name such as TLS")
        return int(const)
    if isinstance(val, int) and not isinstance(val, bool):
        return val
    raise Invalid("expected TLSv1_2, TLSv1_3 or an ssl.PROTOCOL_* name such as TLS")


@kind("comma-separated protocols: `h1`, `h2`")
def http_protocols(val):
    items = [v.lower() for v in _comma(val, "expected a comma-separated list of h1, h2")]
    if not items or set(items) - {"h1", "h2"}:
        raise Invalid("expected a comma-separated list of h1, h2")
    return items

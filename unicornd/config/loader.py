"""From argv, a config file and the environment to one frozen ``Config``.

Precedence, lowest first: defaults (some from environment variables, as gunicorn's),
the config file, ``UNICORND_CMD_ARGS`` (or ``GUNICORN_CMD_ARGS`` when that is unset), the
command line. Each value is validated as it is read, so a bad value is reported with where it
came from even if a later source overrides it (as gunicorn does); hooks and worker classes
given as dotted paths are imported at the end, with the final ``chdir`` and ``pythonpath`` on
``sys.path``. Nothing here changes the process (no chdir, no environment, ``sys.path``
restored), so ``load_config`` can run again on ``SIGHUP``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import importlib
import os
import re
import shlex
import sys
import traceback
import types
from typing import Any, Mapping, Optional

from unicornd import __version__
from unicornd.config.errors import ConfigError, Invalid
from unicornd.config.settings import BY_NAME, SECTIONS, SETTINGS, Setting

COMMAND_LINE = "command line"
CMD_ARGS_VARIABLES = ("UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS")
DEFAULT_CONFIG_FILES = ("unicornd.conf.py", "gunicorn.conf.py")
USAGE = "%(prog)s [OPTIONS] [APP_MODULE]"

Config = dataclasses.make_dataclass(
    "Config",
    [(s.name, Any) for s in SETTINGS]
    + [("warnings", tuple), ("config_path", Optional[str])],
    frozen=True,
    slots=True,
)
Config.__module__ = "unicornd.config"
Config.__doc__ = """The loaded configuration: one attribute per setting, named as in gunicorn.

Values are validated and normalised: integers are ints, booleans bools, list settings lists
(``bind``, ``raw_env``, ``forwarded_allow_ips``, ``proxy_allow_ips``, ``forwarder_headers``),
``chdir`` an absolute path, hooks callables taking gunicorn's arguments (``post_request``
always 4), ``worker_class`` a built-in name (``'sync'``; gunicorn's aliases map onto it) or a
dotted path. ``sendfile`` is the resolved bool (flag, then ``SENDFILE``, then on). Settings
unicornd does not support are present at their defaults.

Not settings: ``warnings`` (messages to log once logging is up) and ``config_path`` (the
config file loaded, or None).
"""


def _shown(value):
    if callable(value):
        return f"<{getattr(value, '__qualname__', type(value).__qualname__)}()>"
    return value


def format_config(cfg) -> str:
    """``--print-config``: ``name = value`` per setting, sorted, aligned as gunicorn does."""
    width = max(len(s.name) for s in SETTINGS)
    return "\n".join(f"{name:{width}} = {_shown(getattr(cfg, name))}" for name in sorted(BY_NAME))


def format_config_for_log(cfg) -> str:
    """What ``--log-level debug`` logs at startup, as gunicorn does: ``Current configuration:``
    then ``  name: value`` per setting, in the table's order."""
    return "Current configuration:\n" + "\n".join(
        f"  {s.name}: {_shown(getattr(cfg, s.name))}" for s in SETTINGS)


# -- argparse -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistyped option named as such (``--wokers 3 app:app`` would otherwise
    take ``3`` for the app and report ``app:app`` as the unrecognized argument)."""

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            unknown = next((a for a in args if a.startswith("-") and a != "-"
                            and a.split("=", 1)[0] in [e.split("=", 1)[0] for e in extras]), None)
            if unknown is not None:
                flag = unknown.split("=", 1)[0]
                close = difflib.get_close_matches(flag, list(self._option_string_actions), n=1,
                                                    cutoff=0.8)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.error(f"unrecognized option: {flag}{hint}")
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


class _CmdArgsParser(_Parser):
    """Parses ``UNICORND_CMD_ARGS``: its mistakes are ConfigErrors naming the variable."""

    variable = "UNICORND_CMD_ARGS"

    def error(self, message):
        raise ConfigError(f"Invalid value for {self.variable}: {message}", source=self.variable)


def _plain(markdown: str) -> str:
    """A doc's Markdown as terminal text: code spans and emphasis unmarked, links their text."""
    parts = markdown.split("`")  # odd parts are code spans: shown as they are
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", parts[i]).replace("**", "")
    return "".join(parts)


def first_sentence(doc: str) -> str:
    """The doc's first sentence: up to the first full stop outside parentheses and code spans
    that ends a sentence (not ``...``, ``e.g.``), as the ``--help`` text of the setting."""
    depth, code = 0, False
    for i, c in enumerate(doc):
        if c == "`":
            code = not code
        elif code:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif (c == "." and depth == 0 and (i + 1 == len(doc) or doc[i + 1] == " ")
              and doc[i - 1:i] != "." and not doc[:i].endswith(("e.g", "i.e", "etc"))):
            return doc[:i + 1]
    return doc


def help_text(setting: Setting) -> str:
    """One setting's ``--help`` line: its first sentence and a default worth showing."""
    text = _plain(first_sentence(setting.doc))
    if setting.default_doc is not None:
        return f"{text} [{_plain(setting.default_doc)}]"
    default = setting.default
    if default is None or default is False or default in ("", [], {}) or callable(default):
        return text
    return f"{text} [{setting.default}]"


def in_help(setting: Setting) -> bool:
    """Whether ``--help`` lists the setting: not when it is refused or does nothing here (it is
    still parsed, and refused or warned about, when given)."""
    return bool(setting.cli) and setting.supported


def build_parser(parser_class=_Parser) -> argparse.ArgumentParser:
    parser = parser_class(
        prog="unicornd",
        usage=USAGE,
        description="A pre-fork WSGI HTTP server for Unix, run with gunicorn's options.",
        epilog="Options are also read from UNICORND_CMD_ARGS (or GUNICORN_CMD_ARGS) and from a "
        "config file. Every setting, those gunicorn has and unicornd refuses or ignores too: "
        "python -m unicornd.config.docs, or the Settings reference of the documentation.",
    )
    parser.add_argument(
        "-v", "--version", action="version", version=f"%(prog)s (version {__version__})",
        help="show the version and exit",
    )
    parser.add_argument(
        "app_module", nargs="?", metavar="APP_MODULE", default=argparse.SUPPRESS,
        help="the WSGI application, as MODULE:VARIABLE (overrides wsgi_app)",
    )
    for section in SECTIONS:
        group = parser.add_argument_group(section)
        for s in SETTINGS:
            if s.section != section or not s.cli:
                continue
            shown = help_text(s).replace("%", "%%") if in_help(s) else argparse.SUPPRESS
            kwargs = dict(dest=s.name, action=s.action or "store", default=argparse.SUPPRESS,
                          help=shown)
            if s.meta is not None and kwargs["action"] in ("store", "append"):
                kwargs["metavar"] = s.meta
            if s.nargs is not None:
                kwargs["nargs"] = s.nargs
            if s.const is not None or kwargs["action"] == "store_const":
                kwargs["const"] = s.const
            group.add_argument(*s.cli, **kwargs)
    return parser


# -- the loader -----------------------------------------------------------------------------


def _show(value) -> str:
    if callable(value) and hasattr(value, "__qualname__"):
        return f"<{type(value).__name__} {value.__qualname__}>"
    return repr(value)


def _where(source: str) -> str:
    return "" if source == COMMAND_LINE else f" (set in {source})"


def _flags(setting: Setting) -> str:
    flags = "/".join(f for f in setting.cli if f.startswith("--")) or "/".join(setting.cli)
    return f" ({flags})" if flags else ""


def _refused(setting: Setting, source: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"Setting {setting.name!r}{_flags(setting)} is not supported yet by unicornd"
        f"{_where(source)}{why}",
        setting=setting.name, source=source,
    )


def _differences(values, sources) -> list[str]:
    """Warnings for settings given a value that does nothing here, or not what gunicorn does."""
    found = []
    for s in SETTINGS:
        source = sources[s.name]
        if source == "default":
            continue
        value = values[s.name]
        where = f" (set in {source})" if source != COMMAND_LINE else " (set on the command line)"
        if s.ignored:
            found.append(f"Setting {s.name!r}{_flags(s)}{where} has no effect in unicornd: "
                         f"{s.ignored}")
        elif s.differs is not None:
            what = s.differs(value)
            if what:
                found.append(f"Setting {s.name!r}{_flags(s)}{where} differs from gunicorn: {what}")
    return found


def _invalid(setting: Setting, raw, exc: Invalid, source: str) -> ConfigError:
    return ConfigError(
        f"Invalid value for {setting.name}: {_show(exc.value if exc.has_value else raw)}: "
        f"{exc}{_where(source)}",
        setting=setting.name, source=source,
    )


class _Loader:
    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.defaults: dict[str, Any] = {}
        self.pending: dict[str, str] = {}  # setting -> environment variable, not yet validated
        self.warnings: list[str] = []
        for s in SETTINGS:
            got = s.default_from(environ) if s.default_from else None
            if got is not None and got[0] is not None:
                variable, raw = got
                self.values[s.name] = raw
                self.pending[s.name] = variable
                self.defaults[s.name] = s.validate(s.default)
            else:
                value = s.validate(s.default if got is None else got[1])
                self.values[s.name] = self.defaults[s.name] = value
            self.sources[s.name] = "default"

    def set(self, name: str, raw, source: str) -> None:
        s = BY_NAME[name]
        try:
            value = s.validate(raw)
        except Invalid as exc:
            if not s.supported and not s.ignored:
                raise _refused(s, source) from None
            raise _invalid(s, raw, exc, source) from None
        if not s.supported and not s.ignored and value != self.defaults[name]:
            raise _refused(s, source)
        self.values[name] = value
        # A value equal to the default is as good as none: no warning about it.
        self.sources[name] = source if value != self.defaults[name] else "default"
        self.pending.pop(name, None)

    def apply_namespace(self, ns: argparse.Namespace, source: str) -> None:
        for s in SETTINGS:
            if s.cli and hasattr(ns, s.name):
                self.set(s.name, getattr(ns, s.name), source)

    def apply_file(self, namespace: Mapping[str, Any], location: str) -> None:
        for key, raw in namespace.items():
            if key in BY_NAME:
                self.set(key, raw, location)
            elif not key.startswith("_") and not isinstance(raw, types.ModuleType):
                match = _close_setting(key)
                if match:
                    self.warnings.append(
                        f"Unknown setting {key!r} in {location} (did you mean {match!r}?)"
                    )

    def finish(self) -> None:
        for name, variable in self.pending.items():
            s = BY_NAME[name]
            try:
                self.values[name] = s.validate(self.values[name])
            except Invalid as exc:
                raise ConfigError(
                    f"Invalid value for {variable}: {self.environ[variable]!r}: {exc} "
                    f"({variable} sets the default for {name})",
                    setting=name, source=variable,
                ) from None

        if self.values["sendfile"] is None:
            flag = self.environ.get("SENDFILE")
            self.values["sendfile"] = flag is None or flag.lower() in ("y", "1", "yes", "true")

        with _sys_path(_import_dirs(self.values)):
            for s in SETTINGS:
                resolve = getattr(s.validate, "resolve", None)
                if resolve is None:
                    continue
                raw = self.values[s.name]
                try:
                    self.values[s.name] = resolve(raw)
                except Invalid as exc:
                    raise _invalid(s, raw, exc, self.sources[s.name]) from None

        if self.values["dirty_apps"] and self.values["dirty_workers"] > 0:
            # gunicorn runs its dirty arbiter only with both; either alone does nothing there.
            raise _refused(BY_NAME["dirty_apps"], self.sources["dirty_apps"],
                           f" with dirty_workers = {self.values['dirty_workers']}: gunicorn's "
                           f"dirty arbiter is not implemented")
        if 0 < self.values["max_workers"] < self.values["workers"]:
            # The ceiling below the floor: neither value alone is wrong, so name both.
            def where(name):
                source = self.sources[name]
                return "" if source in (COMMAND_LINE, "default") else f" (set in {source})"
            raise ConfigError(
                f"Invalid value for max_workers: {self.values['max_workers']}"
                f"{where('max_workers')}: it is below workers "
                f"({self.values['workers']}{where('workers')}); max_workers is "
                f"the ceiling the workers scale up to and workers the floor: set max_workers "
                f"to {self.values['workers']} or more, or 0 to turn scaling off",
                setting="max_workers", source=self.sources["max_workers"])
        self.warnings.extend(_differences(self.values, self.sources))

        if self.values["threads"] > 1 and self.values["worker_class"] == "sync":
            # As gunicorn: more than one thread with the sync class means the threaded worker.
            self.values["worker_class"] = "gthread"


def _close_setting(name: str) -> str | None:
    lowered = name.lower()
    if lowered in BY_NAME:
        return lowered
    matches = difflib.get_close_matches(lowered, list(BY_NAME), n=1, cutoff=0.85)
    return matches[0] if matches else None


def _import_dirs(values) -> list[str]:
    """sys.path as the server will have it: pythonpath, chdir, then the starting directory."""
    dirs = []
    if values["pythonpath"]:
        for entry in values["pythonpath"].split(","):
            if entry.strip():
                dirs.append(os.path.join(values["chdir"], entry.strip()))
    dirs.append(values["chdir"])
    dirs.append(os.getcwd())
    return dirs


@contextlib.contextmanager
def _sys_path(dirs):
    added = [d for d in dirs if d not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for d in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


def _cmd_args(environ: Mapping[str, str]) -> tuple[str | None, list[str]]:
    for variable in CMD_ARGS_VARIABLES:
        if variable in environ:
            try:
                return variable, shlex.split(environ[variable])
            except ValueError as exc:
                raise ConfigError(
                    f"Invalid value for {variable}: {environ[variable]!r}: {exc}", source=variable
                ) from None
    return None, []


def _config_failed(location: str, path: str | None, exc: BaseException) -> ConfigError:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == path:
            line = lineno
    summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
    where = f"{location}, line {line}" if line else location
    details = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
    return ConfigError(f"Failed to read config file {where}: {summary}\n{details}",
                       setting="config", source=location)


def _read_config(location: str, source: str) -> tuple[str, dict, list[str]]:
    """Run a config file (or import a ``python:`` module): (path, its names, warnings)."""
    warnings = []
    with _sys_path([os.getcwd()]):  # gunicorn has the current directory on sys.path here
        if location.startswith("python:"):
            modname = location[len("python:"):].strip()
            try:
                module = importlib.import_module(modname)
            except (Exception, SystemExit) as exc:
                raise _config_failed(location, None, exc) from None
            return getattr(module, "__file__", None) or location, vars(module), warnings

        filename = location[len("file:"):] if location.startswith("file:") else location
        path = os.path.abspath(filename)
        if not os.path.isfile(path):
            raise ConfigError(
                f"Invalid value for config: {location!r}: no such file{_where(source)}",
                setting="config", source=source,
            )
        if os.path.splitext(path)[1] not in (".py", ".pyc"):
            warnings.append(f"Config file {location} has no .py extension; read as Python anyway")
        module = types.ModuleType("__config__")
        module.__file__ = path
        sys.modules["__config__"] = module  # as gunicorn: the file's classes can be found
        try:
            with open(path, "rb") as f:
                code = compile(f.read(), path, "exec", dont_inherit=True)
            exec(code, module.__dict__)
        except (Exception, SystemExit) as exc:
            raise _config_failed(location, path, exc) from None
        return path, vars(module), warnings


def load_config(argv: list[str], environ: Mapping[str, str]) -> Config:
    """Load the configuration.

    ``argv`` is the command line after the program name (``sys.argv[1:]``); ``environ`` the
    environment (``os.environ``). Raises ConfigError; argparse exits by itself on usage errors
    (status 2) and on ``-h``/``--version`` (status 0).
    """
    cli = build_parser().parse_args(list(argv))
    variable, env_argv = _cmd_args(environ)
    env = argparse.Namespace()
    if variable is not None:
        parser = build_parser(_CmdArgsParser)
        parser.variable = variable
        env = parser.parse_args(env_argv)

    loader = _Loader(environ)
    app, app_source = None, None
    for ns, source in ((cli, COMMAND_LINE), (env, variable)):
        if app is None and getattr(ns, "app_module", None) is not None:
            app, app_source = ns.app_module, source
    if app is not None:  # gunicorn names processes after the app before reading the file
        loader.set("default_proc_name", app, app_source)

    location, location_source = None, None
    for ns, source in ((cli, COMMAND_LINE), (env, variable)):
        if location is None and (getattr(ns, "config", None) or "").strip():
            location, location_source = ns.config.strip(), source
    if location is None:
        for name in DEFAULT_CONFIG_FILES:
            if os.path.isfile(name):
                location, location_source = os.path.join(".", name), "default"
                break
    config_path = None
    if location is not None:
        config_path, namespace, warnings = _read_config(location, location_source)
        loader.warnings.extend(warnings)
        loader.apply_file(namespace, location)

    if variable is not None:
        loader.apply_namespace(env, variable)
    loader.apply_namespace(cli, COMMAND_LINE)
    if app is not None:
        loader.set("wsgi_app", app, app_source)
    # The file actually read (./gunicorn.conf.py when that one was found), or None.
    loader.values["config"] = location
    loader.finish()
    return Config(**loader.values, warnings=tuple(loader.warnings), config_path=config_path)

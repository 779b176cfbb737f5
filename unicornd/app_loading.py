"""Find the WSGI callable from an ``APP_MODULE`` spec, as gunicorn does.

Accepted: ``module:name``, ``module`` (meaning ``module:application``), ``module:factory()``
and ``module:factory(literal args)``. The spec is parsed with ``ast`` so only names and
literal arguments are ever evaluated.
"""

import ast
import importlib
import os
import sys


class AppImportError(Exception):
    """The app module imported, but the spec does not name a callable in it."""


def add_pythonpath(cfg) -> None:
    """``--pythonpath`` entries and the working directory go first on sys.path."""
    paths = [p.strip() for p in (cfg.pythonpath or "").split(",") if p.strip()]
    for path in reversed(paths):
        path = os.path.abspath(path)
        if path not in sys.path:
            sys.path.insert(0, path)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _parse_target(spec: str, module_name: str):
    try:
        expr = ast.parse(spec, mode="eval").body
    except SyntaxError:
        raise AppImportError(
            f"Failed to parse {spec!r} as an attribute name or function call in module {module_name!r}."
        ) from None
    if isinstance(expr, ast.Name):
        return expr.id, None
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        try:
            args = [ast.literal_eval(a) for a in expr.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in expr.keywords}
        except ValueError:
            raise AppImportError(
                f"Failed to parse arguments as literal values in {spec!r} (module {module_name!r})."
            ) from None
        return expr.func.id, (args, kwargs)
    raise AppImportError(
        f"Failed to parse {spec!r} as an attribute name or function call in module {module_name!r}."
    )


def load_wsgi_app(spec: str):
    """Import the module and return the callable; import errors propagate with their traceback."""
    module_name, sep, target = spec.partition(":")
    if not module_name:
        raise AppImportError(f"No module name in application spec {spec!r}.")
    if not sep:
        target = "application"
    name, call = _parse_target(target, module_name)
    module = importlib.import_module(module_name)
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppImportError(f"Failed to find attribute {name!r} in {module_name!r}.") from None
    if call is not None:
        args, kwargs = call
        if not callable(app):
            raise AppImportError(f"{name!r} in {module_name!r} is not callable, cannot call it as a factory.")
        app = app(*args, **kwargs)
        if app is None:
            raise AppImportError(f"The factory {name!r} in module {module_name!r} returned None.")
    if not callable(app):
        raise AppImportError(f"Application object {name!r} in {module_name!r} must be callable.")
    return app


def load_paste_app(path: str, global_conf=()):
    """``--paste PATH[#NAME]``: the app a PasteDeploy ini file declares (``main`` by default)."""
    try:
        from paste.deploy import loadapp
    except ImportError:
        raise AppImportError(
            "The paste setting needs the PasteDeploy package: pip install 'unicornd[paste]'."
        ) from None
    path, _, name = path.partition("#")
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise AppImportError(f"PasteDeploy config file {path!r} does not exist.")
    conf = {}
    for item in global_conf or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise AppImportError(f"raw_paste_global_conf entry {item!r} is not KEY=VALUE.")
        conf[key.strip()] = value
    return loadapp("config:" + path, name=name or None, relative_to=os.path.dirname(path),
                   global_conf=conf)


def load_app(cfg):
    """The app the settings name: the PasteDeploy file of ``paste``, else ``wsgi_app``."""
    if getattr(cfg, "paste", None):
        return load_paste_app(cfg.paste, cfg.raw_paste_global_conf)
    return load_wsgi_app(cfg.wsgi_app)

"""``unicornd`` and ``python -m unicornd``: load the settings, then hand over to the master.

Everything that can be wrong with the settings is found here, before any fork: a bad value
exits with status 2 and a message naming the setting, the value and what is allowed.
"""

from unicornd.workers.greenpatch import patch_early; patch_early()  # noqa: E702 (gevent/eventlet: before any other import)

import os
import sys
import traceback

from unicornd.app_loading import AppImportError, add_pythonpath, load_app
from unicornd.config import ConfigError, format_config, load_config
from unicornd.config.loader import format_config_for_log
from unicornd.logging import LogConfigError, make_logger, setup_logging
from unicornd.tls import make_ssl_context

USAGE_ERROR = 2


def _fail(message: str, status: int = USAGE_ERROR):
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(status)


def apply_process_settings(cfg) -> None:
    """What the master itself changes before anything is imported or forked (again on HUP)."""
    for item in cfg.raw_env:
        key, _, value = item.partition("=")
        os.environ[key] = value
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            raise ConfigError(f"Invalid value for chdir: {cfg.chdir!r}: {exc.strerror}") from None
    add_pythonpath(cfg)


def _loaded_from(cfg) -> str:
    """The config file as given (or found), and where it is when that is not plain."""
    path = cfg.config_path
    if path and os.path.abspath(cfg.config.removeprefix("file:")) != path:
        return f"{cfg.config} ({path})"
    return cfg.config


def _check_app(cfg) -> int:
    """--check-config: load the app as a worker would; 0 if it loads, 1 if not."""
    what = cfg.wsgi_app or f"paste {cfg.paste}"
    try:
        load_app(cfg)
    except AppImportError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        print(f"Error: the application {what} failed to load (traceback above).", file=sys.stderr)
        return 1
    print(f"Configuration OK: {what} loads.")
    return 0


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]: from unicornd.status import main as status; sys.exit(status(argv[1:]))  # noqa: E701,E702
    try:
        cfg = load_config(argv, os.environ)
    except ConfigError as exc:
        _fail(str(exc))

    if cfg.print_config:
        print(format_config(cfg))
        sys.exit(0)

    try:
        log = make_logger(cfg, setup_logging(cfg))
    except LogConfigError as exc:
        _fail(str(exc))
    if cfg.config is not None:
        log.info("Loaded configuration from %s", _loaded_from(cfg))
    log.debug("%s", format_config_for_log(cfg))
    for warning in cfg.warnings:
        log.warning("%s", warning)
    if cfg.reload and cfg.preload_app:
        log.warning("reload with preload_app: workers restart on changes, but with the code the "
                    "fork server preloaded; edits take effect after a HUP")

    if not cfg.wsgi_app and not cfg.paste:
        _fail("No application module specified (unicornd [OPTIONS] APP_MODULE, or wsgi_app in the config file).")

    environ = dict(os.environ)  # as started: a HUP re-reads the settings against this
    try:
        apply_process_settings(cfg)
    except ConfigError as exc:
        _fail(str(exc))

    try:
        make_ssl_context(cfg)  # bad TLS files are found now, not in every worker
    except ConfigError as exc:
        _fail(str(exc))

    from unicornd.workers import load_worker_class

    try:
        # Loaded (and checked) with the settings already; this is the class itself.
        worker_class = load_worker_class(cfg.worker_class)
    except ValueError as exc:
        _fail(f"Invalid value for worker_class: {cfg.worker_class!r}: {exc}")

    if cfg.check_config:
        sys.exit(_check_app(cfg))

    from unicornd.master.master import Master
    from unicornd.workers.base import APP_LOAD_ERROR

    # A master re-executed by USR2 is already detached: it must stay its old master's child
    # (that is how each of the two knows whether the other still runs), as in gunicorn.
    if cfg.daemon and "UNICORND_FD" not in os.environ:
        from unicornd.master.process import daemonize
        daemonize(keep_stdio=cfg.enable_stdio_inheritance)

    app = None
    # preload_app: where workers can be reparented to the master (Linux), the app is imported
    # by a fork server, never by the master, and a HUP loads new code (master/forkserver.py);
    # elsewhere it is imported here, in the master, as gunicorn does.
    from unicornd.master.forkserver import become_subreaper
    if cfg.preload_app and not become_subreaper():
        log.warning("preload_app: this system cannot reparent workers to the master "
                    "(PR_SET_CHILD_SUBREAPER, Linux): the app is loaded in the master, and a "
                    "HUP keeps its code")
        try:
            app = load_app(cfg)
        except AppImportError as exc:
            log.error("%s", exc)
            sys.exit(APP_LOAD_ERROR)
        except Exception:
            log.error("Exception while loading the application %r:\n%s", cfg.wsgi_app,
                      traceback.format_exc().rstrip())
            sys.exit(APP_LOAD_ERROR)
    sys.exit(Master(cfg, log, worker_class, argv=argv, environ=environ, app=app).run())


if __name__ == "__main__":
    main()

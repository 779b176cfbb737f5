"""The settings table: one declaration per setting, everything else is derived from it.

argparse (``unicornd -h``), config files, ``UNICORND_CMD_ARGS``, ``--print-config``,
``--check-config`` and the docs site's settings page all read ``SETTINGS``. Names, flags, defaults and
sections are gunicorn 27's, so that every gunicorn flag and config-file name is known here;
``supported=False`` marks the ones unicornd does not honour. Those are refused when given a
value other than the default if honouring them would change what the server does (HTTP/2, the
uWSGI protocol, dirty arbiters); the ones that only tune something unicornd refuses, that
gunicorn uses only in its ASGI worker, or that gunicorn does not read either, carry ``ignored``
(why they do nothing) and are accepted with a warning saying so. A supported setting with
another effect than gunicorn's carries ``differs``, which warns too. The warnings are logged at
startup and by ``--check-config``.

Docs are Markdown, one paragraph, written for users; the first sentence is also the
``-h`` text. The reference page is rendered at every docs build (``mkdocs build``; the
Markdown alone: ``python -m unicornd.config.docs``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, NamedTuple

from unicornd.config import default_hooks as H
from unicornd.config import validators as v
from unicornd.config import metric_addresses as metrics_addr


class Setting(NamedTuple):
    name: str
    section: str
    cli: tuple[str, ...]  # flags, as gunicorn spells them; () = config file only
    validate: Callable[[Any], Any]
    default: Any
    doc: str
    meta: str | None = None
    action: str | None = None  # argparse action; None means "store"
    nargs: str | None = None
    const: Any = None
    supported: bool = True
    # A default that depends on the environment: environ -> (variable, raw value) when an
    # environment variable provides it (validated only if it ends up used, and errors name
    # the variable), or (None, value) for a value computed at load time (cwd, euid, ...).
    default_from: Callable[[Mapping[str, str]], tuple[str | None, Any] | None] | None = None
    default_doc: str | None = None  # how the docs show such a default
    # For a setting not supported: accepted anyway, since a value other than the default would
    # do nothing in gunicorn either, or only in what unicornd refuses: why (a warning at
    # startup and in --check-config, and the reference, say so).
    ignored: str | None = None
    # Accepted with another effect than gunicorn's: value -> what differs, or None when that
    # value behaves as in gunicorn (a warning at startup and in --check-config).
    differs: Callable[[Any], str | None] | None = None


def _s(section, name, cli, validate, default, doc, **kw):
    return Setting(name, section, tuple(cli.split()), validate, default, " ".join(doc.split()), **kw)


def _flag(section, name, cli, doc, default=False, **kw):
    return _s(section, name, cli, v.boolean, default, doc, action="store_true", **kw)


def _int(section, name, cli, default, doc, validate=v.non_negative_int, meta="INT", **kw):
    return _s(section, name, cli, validate, default, doc, meta=meta, **kw)


def _hook(section, fn, doc, post_request=False, **kw):
    params = tuple(fn.__code__.co_varnames[: fn.__code__.co_argcount])
    validate = v.hook(params, post_request=post_request)
    return _s(section, fn.__name__, "", validate, fn, doc, **kw)


def _env(variable, make=lambda raw: raw):
    return lambda environ: (variable, make(environ[variable])) if variable in environ else None


def _computed(fn):
    return lambda environ: (None, fn(environ))


def _control_socket(environ):
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "gunicorn.ctl")
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".gunicorn", "gunicorn.ctl")


_SYSLOG_ADDR = {
    "darwin": "unix:///var/run/syslog",
    "freebsd": "unix:///var/run/log",
    "dragonfly": "unix:///var/run/log",
    "openbsd": "unix:///dev/log",
}.get(sys.platform, "udp://localhost:514")

CF, SOCK, WP, SEC = "Config File", "Server Socket", "Worker Processes", "Security"
MECH, LOG, PN, DBG = "Server Mechanics", "Logging", "Process Naming", "Debugging"
HOOKS, SSL, H2, CTL = "Server Hooks", "SSL", "HTTP/2", "Control"
DIRTY, DHOOKS = "Dirty Arbiters", "Dirty Arbiter Hooks"
NO = {"supported": False}


def _ignored(why):
    return {"supported": False, "ignored": why}


ASGI_ONLY = _ignored("gunicorn uses it only in its ASGI worker; unicornd serves WSGI")
HTTP2_ONLY = _ignored("it tunes HTTP/2, which unicornd does not speak (http_protocols = 'h1')")
DIRTY_ONLY = _ignored("it is for gunicorn's dirty arbiter, which runs only with dirty_apps and "
                      "dirty_workers, refused by unicornd")
CONTROL = _ignored("unicornd has no control socket; use `unicornd status` (with metrics_bind) "
                   "to see the workers, and signals to drive the master")

SETTINGS: tuple[Setting, ...] = (
    # -- Config File --------------------------------------------------------------------------
    _s(CF, "config", "-c --config", v.string, "./unicornd.conf.py", """
        The configuration file to read: `PATH`, `file:PATH`, or `python:MODULE` to import a
        module. It is Python: every module-level name that is a setting becomes its value. Without
        this option unicornd reads `./unicornd.conf.py`, or else `./gunicorn.conf.py`, from the
        directory it is started in, if one exists. Only meaningful on the command line or in
        `UNICORND_CMD_ARGS`.""", meta="CONFIG",
       default_doc="`./unicornd.conf.py`, else `./gunicorn.conf.py`, if one exists"),
    _s(CF, "wsgi_app", "", v.optional_nonempty_string, None, """
        The WSGI application to serve, as `MODULE:VARIABLE` (such as `myproject.wsgi:application`).
        The `APP_MODULE` argument on the command line takes precedence over this setting.""",
       meta="STRING"),
    # -- Server Socket ------------------------------------------------------------------------
    _s(SOCK, "bind", "-b --bind", v.bind_list, ["127.0.0.1:8000"], """
        The addresses to listen on: `HOST:PORT`, `[IPv6]:PORT`, `unix:PATH` or `fd://N`. `HOST`
        alone means port 8000, `unix:PATH` a Unix socket, and `fd://N` a socket already open on
        file descriptor N. Repeat the
        option to listen on several addresses; the ones given on the command line replace those of
        the config file. When the `PORT` environment variable is set, the default is
        `0.0.0.0:$PORT`.""", meta="ADDRESS", action="append",
       default_from=_env("PORT", lambda port: [f"0.0.0.0:{port}"]),
       default_doc="`127.0.0.1:8000`, or `0.0.0.0:$PORT` when `PORT` is set"),
    _int(SOCK, "backlog", "--backlog", 2048, """
        How many connections the kernel may queue before unicornd accepts them. Clients beyond
        this get refused while the server is saturated; values between 64 and 2048 are usual."""),
    # -- Worker Processes ---------------------------------------------------------------------
    _int(WP, "workers", "-w --workers", 1, """
        How many worker processes serve requests. Start from two to four per CPU core and adjust to
        your application. The default comes from the `WEB_CONCURRENCY` environment variable when it
        is set (as some hosting platforms do), otherwise 1.""", validate=v.positive_int,
         default_from=_env("WEB_CONCURRENCY"),
         default_doc="`$WEB_CONCURRENCY`, or `1` when it is not set"),
    _int(WP, "max_workers", "--max-workers", 0, """
        The most workers the master scales up to under load; 0 turns scaling off. The count
        moves between `workers` (the floor) and this ceiling. When every worker has been busy (its capacity in use
        at least 90% of the time) for `scale_up_period`, the master adds one; when the load
        would have fitted on one worker fewer, each at most half busy, for `scale_down_period`,
        it retires the least busy one gracefully. One change per period, never past the floor
        or the ceiling; `TTIN`/`TTOU` move the floor. Must be at least `workers`. unicornd's
        own setting: gunicorn has none."""),
    _s(WP, "scale_up_period", "--scale-up-period", v.positive_seconds, 5.0, """
        Seconds all workers must be busy to add one. With `max_workers`: long enough that a
        short burst does not fork a worker, short enough that a real surge gets one within
        seconds.""", meta="SECONDS"),
    _s(WP, "scale_down_period", "--scale-down-period", v.positive_seconds, 30.0, """
        Seconds of spare capacity to retire one. With `max_workers`: the load must have
        fitted on one worker fewer that long. Longer than `scale_up_period`, so that bursty
        traffic does not make the count flap.""", meta="SECONDS"),
    _s(WP, "worker_class", "-k --worker-class", v.worker_class, "sync", """
        How workers accept and schedule connections: `sync`, `gthread`, `gevent` or `eventlet`.
        `sync` serves one request at a time per process; `gthread` runs requests on a pool of
        threads per process (see `threads`) with keep-alive; `gevent` and `eventlet` run a
        greenlet per connection and need their library (`pip install 'unicornd[gevent]'`).
        gunicorn's names for them (`gunicorn.workers.sync.SyncWorker`, `egg:gunicorn#gthread`,
        ...) work too, as does the dotted path of your own class derived from a unicornd worker
        class. The class and its library are loaded with the settings, so `--check-config`
        reports a missing library or a class written for gunicorn's worker API; gunicorn's
        `tornado` class is refused. See the worker classes page for how to choose.""",
       meta="STRING"),
    _int(WP, "threads", "--threads", 1, """
        Threads per worker process for the `gthread` worker class: how many requests one worker
        runs at once. As with gunicorn, more than 1 with the `sync` worker class (the default)
        selects `gthread`. Idle keep-alive connections do not hold a thread; `worker_connections`
        bounds how many connections a worker holds."""),
    _int(WP, "worker_connections", "--worker-connections", 1000, """
        The most clients one worker holds at once. For `gthread`, `gevent` and `eventlet`, the
        connections it serves or keeps alive; for `sync`, which serves one request at a time,
        the connections whose request head it reads while waiting for them to be complete."""),
    _int(WP, "max_requests", "--max-requests", 0, """
        Recycle a worker after it has served this many requests, a simple guard against memory
        leaks; 0 never recycles. A hard limit: at the limit the worker takes no new request and
        exits after the ones in flight. Its replacement was started earlier, at three quarters of
        the limit, so capacity does not drop."""),
    _int(WP, "max_requests_jitter", "--max-requests-jitter", 0, """
        Add a random number of requests, up to this many, to `max_requests` for each worker so
        that workers do not all recycle at once."""),
    _s(WP, "max_worker_memory", "--max-worker-memory", v.byte_size, 0, """
        Recycle a worker whose resident memory (RSS) stays above this size, such as `512M` or
        `2G`; 0 never does. The master checks every second and recycles a worker found above
        the limit twice in a row, the same graceful way as `max_requests`, after its current
        request; the log says why. unicornd's own setting: gunicorn has none.""", meta="SIZE"),
    _int(WP, "timeout", "-t --timeout", 30, """
        Seconds a request may run, or a worker may stay silent, before the master kills and
        replaces the worker. Before the kill the worker writes the stacks of all its threads to
        the error log, after a line that names the request and how long it ran:
        `WORKER TIMEOUT (pid 123) GET /report after 31.0 s`. 0 disables the check."""),
    _int(WP, "boot_timeout", "--boot-timeout", 120, """
        Seconds a worker may take to start (importing the application) before the master kills
        it. Booting is judged by this allowance, not by `timeout`, so a slow import does not
        need a long request timeout. 0 disables the check. At the first boot a worker that runs
        out of it stops the server (exit status 3); a later replacement is retried with back-off
        while the other workers serve on. unicornd's own setting."""),
    _int(WP, "graceful_timeout", "--graceful-timeout", 30, """
        Seconds workers get to finish the requests in hand after being told to stop or restart;
        those still running when it expires are killed."""),
    _int(WP, "drain_delay", "--drain-delay", 0, """
        Seconds to keep serving after `TERM`, `/readyz` answering 503, before stopping.
        Meanwhile the listeners stay open and `GET /readyz` on the `metrics_bind` endpoint
        answers 503: time for a load balancer to stop routing here before the listeners
        close, after which the graceful stop runs as usual. A second `TERM` ends the drain at once
        (then the graceful stop runs as usual); `INT` and `QUIT` stop at once as always; `HUP`,
        `USR2` and `WINCH` are ignored while draining. No drain when the server never became
        ready, or when `TERM` ends a binary upgrade (a new master serves the sockets). The
        whole stop then takes up to `drain_delay` + `graceful_timeout` seconds (plus a few to
        reap): size a supervisor's stop timeout (Kubernetes' `terminationGracePeriodSeconds`)
        above that. 0 (the default) closes the listeners as soon as `TERM` arrives, as
        gunicorn does. unicornd's own setting."""),
    _int(WP, "keepalive", "--keep-alive", 2, """
        Seconds to wait for the next request on an idle keep-alive connection. A few seconds suit
        servers facing clients directly; behind a load balancer a longer value is common. The
        `sync` worker closes the connection after each response and ignores it."""),
    _s(WP, "asgi_loop", "--asgi-loop", v.choice("auto", "asyncio", "uvloop"), "auto", """
        The event loop for gunicorn's ASGI worker. Accepted with a warning and unused: unicornd
        serves WSGI only.""", meta="STRING", **ASGI_ONLY),
    _s(WP, "asgi_lifespan", "--asgi-lifespan", v.choice("auto", "on", "off"), "auto", """
        Whether gunicorn's ASGI worker runs the ASGI lifespan protocol. Accepted with a warning
        and unused: unicornd serves WSGI only.""", meta="STRING", **ASGI_ONLY),
    _int(WP, "asgi_disconnect_grace_period", "--asgi-disconnect-grace-period", 3, """
        Seconds gunicorn's ASGI worker lets an application react to a client disconnect.
        Accepted with a warning and unused: unicornd serves WSGI only.""", **ASGI_ONLY),
    _int(WP, "websocket_max_message_size", "--websocket-max-message-size", 16777216, """
        The largest WebSocket message, in bytes, gunicorn's ASGI worker accepts. Accepted with a
        warning and unused: WebSocket libraries for WSGI set their own limits.""", **ASGI_ONLY),
    _s(WP, "http_parser", "--http-parser", v.choice("auto", "fast", "python"), "auto", """
        Which of its HTTP parsers gunicorn uses (the choice does not change what is accepted).
        Accepted with a warning and unused: unicornd has a single strict parser.""",
       meta="STRING", **_ignored("unicornd has a single HTTP parser, the strict one")),
    # -- Security -----------------------------------------------------------------------------
    _int(SEC, "limit_request_line", "--limit-request-line", 4094, """
        The longest request line (method, target and version) accepted, in bytes; longer ones are
        refused with an error status. As in gunicorn, 0 removes the limit and values over 8190
        mean 8190."""),
    _int(SEC, "limit_request_fields", "--limit-request-fields", 100, """
        The most header fields a request may carry. As in gunicorn, 0 or a value over 32768 means
        32768."""),
    _int(SEC, "limit_request_field_size", "--limit-request-field_size", 8190, """
        The longest header field accepted, name and value together, in bytes. As in gunicorn, 0
        means the default of 8190. Note gunicorn's spelling of the flag, with an underscore."""),
    _s(SEC, "limit_request_body", "--limit-request-body", v.byte_size, 0, """
        The largest request body accepted, in bytes (`10M` style sizes too); 0, the default,
        is unlimited, as in gunicorn. A larger Content-Length is answered 413 before any of
        the body is read; a chunked body that grows past it is cut off with 413. unicornd's own
        setting.""", meta="SIZE"),
    _int(SEC, "header_timeout", "--header-timeout", 10, """
        Seconds a client has to send a complete request head, and the longest a client may
        send or take nothing in the middle of a request; past it the connection is answered
        408 and closed. A worker never waits on such a client: heads are read as they arrive,
        next to other work, and the app is called once the head is complete, so an idle
        preconnect or a slowloris client cannot hold a `sync` worker. 0 turns the deadline off.
        unicornd's own setting."""),
    _int(SEC, "min_body_rate", "--min-body-rate", 0, """
        The slowest a request body may arrive, in bytes per second, judged after the first
        five seconds of the body; slower uploads are cut off with 408. 0, the default, turns
        the check off. unicornd's own setting."""),
    # -- Server Mechanics ---------------------------------------------------------------------
    _flag(MECH, "preload_app", "--preload", """
        Import the application once, before forking workers, to share its memory and start
        faster. The master never imports it: a fork server (a child of the master) does, and
        forks the workers, which share its pages copy-on-write. A `HUP` starts a new fork server
        with the new code and rolls the workers over to it, as any reload (unlike gunicorn,
        where `HUP` keeps the preloaded code). Linux; elsewhere the master imports the app and
        a `HUP` keeps its code."""),
    _s(MECH, "sendfile", "--no-sendfile", v.optional_boolean, None, """
        Whether file responses (`wsgi.file_wrapper` on a real file) are sent with `sendfile()`.
        `--no-sendfile` turns it off. When it is not set, the `SENDFILE` environment variable
        decides (`1`, `y`, `yes` or `true` turn it on, anything else off), and without that
        variable it is on. The loaded configuration holds the resulting true or false.
        `sendfile = True` in a config file means on (gunicorn turns sendfile off for any value
        given there).""",
       action="store_const", const=False,
       differs=lambda value: ("gunicorn turns sendfile off for any value in a config file; "
                              "unicornd honours True") if value is True else None),
    _flag(MECH, "reuse_port", "--reuse-port", """
        Set `SO_REUSEPORT` on the listening sockets, so that several servers may listen on the
        same port."""),
    _s(MECH, "chdir", "--chdir", v.directory, None, """
        The directory to change to before loading the application; it is also put first on the
        Python path. A relative path is taken from the directory unicornd is started in.""",
       default_from=_computed(lambda environ: os.getcwd()), default_doc="the current directory"),
    _flag(MECH, "daemon", "-D --daemon", """
        Detach from the terminal and run in the background (standard input, output and error
        go to `/dev/null`: set `errorlog` to a file). A service manager is usually the better
        choice."""),
    _s(MECH, "raw_env", "-e --env", v.env_list, [], """
        Environment variables to set for the application, as `KEY=VALUE`. Repeat the option for
        several; in a config file give a list such as `raw_env = ["DJANGO_DEBUG=0"]`.""",
       meta="ENV", action="append"),
    _s(MECH, "pidfile", "-p --pid", v.optional_string, None, """
        A file to write the master's process id to; removed when the master exits. During a
        binary upgrade the new master writes `PIDFILE.2` and renames it to `PIDFILE` once the old
        master has exited.""", meta="FILE"),
    _s(MECH, "worker_tmp_dir", "--worker-tmp-dir", v.optional_string, None, """
        Where gunicorn keeps its per-worker heartbeat files. Accepted for compatibility and
        unused: unicornd workers report through shared memory and need no such files.""",
       meta="DIR", **_ignored("workers report through shared memory, with no heartbeat files")),
    _s(MECH, "user", "-u --user", v.user, None, """
        Run workers as this user (a name or a uid). The master keeps its own user, so it can
        still bind and read what the new settings need on `HUP`.""", meta="USER",
       default_from=_computed(lambda environ: os.geteuid()), default_doc="the current user"),
    _s(MECH, "group", "-g --group", v.group, None, """
        Run workers as this group (a name or a gid).""", meta="GROUP",
       default_from=_computed(lambda environ: os.getegid()), default_doc="the current group"),
    _int(MECH, "umask", "-m --umask", 0, """
        The file mode mask applied while creating Unix sockets, as in gunicorn. The default of 0
        leaves them open to all local users; `0o007` keeps them to user and group; octal such
        as `0022` is accepted.""", validate=v.octal_int),
    _flag(MECH, "initgroups", "--initgroups", """
        Give workers all the supplementary groups of `user`."""),
    _s(MECH, "tmp_upload_dir", "", v.optional_string, None, """
        Accepted for compatibility and unused, as in gunicorn, which declares it and never
        reads it: request bodies reach the application through `wsgi.input` as they arrive,
        never spooled to disk by the server.""", meta="DIR",
       **_ignored("gunicorn never reads it either; request bodies reach the application "
                  "through wsgi.input as they arrive")),
    _s(MECH, "secure_scheme_headers", "", v.header_dict,
       {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}, """
        Request headers, with the exact values, by which a trusted proxy (see
        `forwarded_allow_ips`) says the client connected over HTTPS; a match makes
        `wsgi.url_scheme` `https`. Header names are compared case-insensitively, values exactly. If
        several of these headers are present and disagree, the request is refused. Make sure your
        proxy strips these headers from what clients send."""),
    _s(MECH, "forwarded_allow_ips", "--forwarded-allow-ips", v.address_list, "127.0.0.1,::1", """
        The proxies whose `secure_scheme_headers` and `forwarder_headers` are believed. A
        comma-separated list of IP addresses and networks (such as `10.0.0.0/8`), or `*` to trust
        every peer, only safe when nothing else can reach the server. Connections over Unix
        sockets are always trusted. The default comes from the `FORWARDED_ALLOW_IPS` environment
        variable when it is set.""", meta="STRING",
       default_from=_env("FORWARDED_ALLOW_IPS"),
       default_doc="`$FORWARDED_ALLOW_IPS`, or `'127.0.0.1,::1'` when it is not set"),
    _s(MECH, "pythonpath", "--pythonpath", v.optional_string, None, """
        Comma-separated directories to put first on the Python path before the application is
        imported, such as `/srv/app,/srv/lib`.""", meta="STRING"),
    _s(MECH, "paste", "--paste --paster", v.optional_string, None, """
        Load the application from a PasteDeploy config file, `PATH` or `PATH#NAME` for an app
        other than `main` (needs the `PasteDeploy` package: `pip install 'unicornd[paste]'`).
        `APP_MODULE` is then not needed; the file's path is relative to `chdir`.""",
       meta="STRING"),
    _s(MECH, "proxy_protocol", "--proxy-protocol", v.proxy_protocol, "off", """
        Expect a PROXY protocol header at the start of each connection from `proxy_allow_ips`:
        `v1`, `v2`, `auto` or `off`. HAProxy, stunnel and cloud load balancers send it: `v1` is
        text, `v2` binary, `auto` accepts either. The flag without a value means `auto`; `true` and `false` are accepted
        as in gunicorn.""", meta="MODE", nargs="?", const="auto"),
    _s(MECH, "proxy_allow_ips", "--proxy-allow-from", v.address_list, "127.0.0.1,::1", """
        The peers allowed to send a PROXY protocol header: comma-separated IP addresses and
        networks, or `*` for any. Connections over Unix sockets are always allowed."""),
    _s(MECH, "protocol", "--protocol", v.choice("http", "uwsgi"), "http", """
        The wire protocol of incoming connections; gunicorn can also speak uWSGI's binary
        protocol behind nginx's `uwsgi_pass`.""", meta="STRING", **NO),
    _s(MECH, "uwsgi_allow_ips", "--uwsgi-allow-from", v.address_list, "127.0.0.1,::1", """
        The peers allowed to speak the uWSGI protocol. Accepted with a warning and unused:
        `protocol = 'uwsgi'` is refused.""",
       **_ignored("it is used only with protocol = 'uwsgi', which unicornd refuses")),
    _s(MECH, "raw_paste_global_conf", "--paste-global", v.string_list, [], """
        Global `KEY=VALUE` variables passed to a PasteDeploy application (its `global_conf`,
        which the ini file can use as `%(KEY)s`). Repeat the flag for several.""", meta="CONF",
       action="append"),
    _flag(MECH, "permit_obsolete_folding", "--permit-obsolete-folding", """
        Accept header values continued on a following line (obsolete line folding, forbidden by RFC
        9112) instead of refusing the request. Only for diagnosing old clients."""),
    _flag(MECH, "strip_header_spaces", "--strip-header-spaces", """
        Accept whitespace between a header name and its colon by stripping it, instead of refusing
        the request. This is how request smuggling gets through proxies; avoid it."""),
    _flag(MECH, "permit_unconventional_http_method", "--permit-unconventional-http-method", """
        Accept request methods that are valid tokens but unusual (lower case, shorter than 3 or
        longer than 20 characters, or containing `#`), which are refused by default."""),
    _flag(MECH, "permit_unconventional_http_version", "--permit-unconventional-http-version", """
        Accept HTTP/1 versions other than 1.0 and 1.1 in the request line, which are refused by
        default."""),
    _flag(MECH, "casefold_http_method", "--casefold-http-method", """
        Upper-case request methods before handing them to the application, as very old gunicorn
        versions did. Methods are case-sensitive; use only if a client needs it."""),
    _s(MECH, "forwarder_headers", "--forwarder-headers", v.comma_list, "SCRIPT_NAME,PATH_INFO", """
        The environ variables a trusted proxy may set through headers of the same name. A
        comma-separated list such as `SCRIPT_NAME,PATH_INFO,REMOTE_USER`; which proxies are
        trusted is `forwarded_allow_ips`. Headers absent
        from a request change nothing."""),
    _s(MECH, "header_map", "--header-map", v.header_map, "drop", """
        What to do with headers whose names become the same environ key: `drop`, `refuse` or
        `dangerous`. `X-Foo` and `X_Foo` are both `HTTP_X_FOO`: `drop` ignores such headers,
        `refuse` answers the request with an error, `dangerous` passes them on as older servers
        did. Headers listed in `forwarder_headers` from a trusted proxy are always passed."""),
    _s(MECH, "root_path", "--root-path", v.string, "", """
        The mount path gunicorn's ASGI worker gives applications as `root_path`. Accepted with a
        warning and unused: a WSGI application is mounted with `SCRIPT_NAME` (see
        `forwarder_headers`).""", meta="STRING", **ASGI_ONLY),
    # -- Logging ------------------------------------------------------------------------------
    _s(LOG, "accesslog", "--access-logfile", v.optional_string, None, """
        Where to write the access log, one line per request: a file, or `-` for standard
        output. Lines are buffered and written when the worker is idle, when 64 KiB are
        waiting, or at the latest a second after the oldest; off by default.""", meta="FILE"),
    _flag(LOG, "disable_redirect_access_to_syslog", "--disable-redirect-access-to-syslog", """
        Keep access log lines out of syslog when `syslog` is on."""),
    _s(LOG, "access_log_format", "--access-logformat", v.string,
       '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"', """
        The format of access log lines, with gunicorn's atoms. They are: `h` remote address, `l` `-`,
        `u` user (HTTP basic auth), `t` date, `r` request line, `m` method, `U` path, `q`
        query, `H` protocol, `s` status, `B` and `b` body bytes sent, `f` referer, `a` user
        agent, `T`/`M`/`D`/`L` duration in seconds/milliseconds/microseconds/decimal seconds,
        `p` worker pid, `{header}i` a request header, `{header}o` a response header,
        `{variable}e` an environ value.""", meta="STRING"),
    _flag(LOG, "access_log_json", "--access-log-json", """
        Write the access log as one JSON object per line. The atoms of `access_log_format`
        appear under readable names (`remote_addr`, `request`, `status`,
        `request_header.user-agent`, ...), escaped as JSON. unicornd's own setting."""),
    _s(LOG, "errorlog", "--error-logfile --log-file", v.string, "-", """
        Where to write the error log (server messages, tracebacks); `-` is standard error.""",
       meta="FILE"),
    _s(LOG, "loglevel", "--log-level", v.loglevel, "info", """
        The least important error log messages to write: `debug`, `info`, `warning`, `error` or
        `critical`. gunicorn silently falls back to `info` on other names; unicornd refuses
        them.""", meta="LEVEL"),
    _flag(LOG, "capture_output", "--capture-output", """
        Send the application's standard output and error (`print()`, stray tracebacks) to the
        error log file. Needs `errorlog` to be a file."""),
    _s(LOG, "logger_class", "--logger-class", v.logger_class, "gunicorn.glogging.Logger", """
        The logger class, as a dotted path. The default is the built-in logger (gunicorn's
        name for it is accepted). A class of your own follows gunicorn's Logger interface: it is
        built with the settings (`cls(cfg)`), receives every server message through its
        `critical`, `error`, `warning`, `info`, `debug` and `exception` methods and every
        request through `access(resp, req, environ, request_time)` (`resp.status`,
        `resp.status_code`, `resp.headers`, `resp.sent`; `req.method`, `req.uri`, `req.path`,
        `req.query`, `req.version`, `req.headers`; `request_time` a `timedelta`), and
        `reopen_files()`, when it has one, on `USR1`. A class missing one of the methods is
        refused at startup.""", meta="STRING"),
    _s(LOG, "logconfig", "--log-config", v.optional_string, None, """
        A `logging.config.fileConfig` file configuring logging. The loggers are named as in
        gunicorn, `gunicorn.error` and `gunicorn.access`, so existing files work.""", meta="FILE"),
    _s(LOG, "logconfig_dict", "", v.any_dict, {}, """
        A `logging.config.dictConfig` dictionary configuring logging (config file only). It
        wins over `logconfig_json` and `logconfig`."""),
    _s(LOG, "logconfig_json", "--log-config-json", v.optional_string, None, """
        A JSON file holding a `logging.config.dictConfig` dictionary.""", meta="FILE"),
    _s(LOG, "syslog_addr", "--log-syslog-to", v.string, _SYSLOG_ADDR, """
        The syslog server: `unix://PATH` (add `#stream` for a stream socket), `udp://HOST:PORT`
        or `tcp://HOST:PORT`.""",
       meta="SYSLOG_ADDR", default_doc="`'udp://localhost:514'` (a Unix socket on macOS and BSDs)"),
    _flag(LOG, "syslog", "--log-syslog", """
        Send the error log, and the access log unless `disable_redirect_access_to_syslog`, to
        syslog as well."""),
    _s(LOG, "syslog_prefix", "--log-syslog-prefix", v.optional_string, None, """
        The program name used in syslog entries (default: the logger's name).""",
       meta="SYSLOG_PREFIX"),
    _s(LOG, "syslog_facility", "--log-syslog-facility", v.string, "user", """
        The syslog facility: `user`, `daemon`, `local0` to `local7`, or another name of the
        `syslog` module's facilities.""",
       meta="SYSLOG_FACILITY"),
    _flag(LOG, "enable_stdio_inheritance", "-R --enable-stdio-inheritance", """
        In daemon mode, keep standard output and error instead of sending them to
        `/dev/null`."""),
    _s(LOG, "statsd_host", "--statsd-host", metrics_addr.statsd_address, None, """
        A StatsD server to send metrics to, over UDP (`HOST:PORT`, `HOST` for port 8125,
        `[IPV6]:PORT`) or a Unix datagram socket (`unix://PATH` or `unix:PATH`). Workers send gunicorn's
        metrics per request (`gunicorn.requests`, `gunicorn.request.duration` in ms,
        `gunicorn.request.status.NNN`), the master `gunicorn.workers`, and every process the
        log counters `gunicorn.log.critical|error|warning|exception`. Sending never blocks and
        errors are ignored. See the metrics page.""",
       meta="STATSD_ADDR"),
    _s(LOG, "dogstatsd_tags", "--dogstatsd-tags", v.string, "", """
        Comma-separated DogStatsD tags (`env:prod,app:web`) appended to every statsd metric as
        `|#TAGS`.""", meta="DOGSTATSD_TAGS"),
    _s(LOG, "statsd_prefix", "--statsd-prefix", v.string, "", """
        A prefix for statsd metric names; a dot is added after it (`web` gives
        `web.gunicorn.requests`).""", meta="STATSD_PREFIX"),
    _flag(LOG, "enable_backlog_metric", "--enable-backlog-metric", """
        Send the listen backlog to statsd as the `gunicorn.backlog` histogram, once a second. The
        backlog is the connections waiting to be accepted, summed over the TCP listeners (Linux
        only).
        The Prometheus endpoint (`metrics_bind`) always reports it, per listener."""),
    _s(LOG, "metrics_bind", "--metrics-bind", metrics_addr.metrics_address, None, """
        Where the master serves `GET /metrics` (Prometheus), `GET /status` (JSON) and the
        health checks `GET /healthz` and `GET /readyz` (docs/metrics.md):
        `HOST:PORT`, `[IPV6]:PORT` or `unix:PATH`. The metrics are counters added up over all
        workers, past and present; `/status` is what `unicornd status` shows; a Unix socket is
        created mode 0600. Unset, there is no endpoint. Keep it on loopback or a private network. unicornd's own setting.""",
       meta="ADDRESS"),
    # -- Process Naming -----------------------------------------------------------------------
    _s(PN, "proc_name", "-n --name", v.optional_string, None, """
        The name shown for unicornd's processes in `ps` and `top` (with the `setproctitle`
        package installed), to tell several servers apart. When not set, `default_proc_name` is
        used.""", meta="STRING"),
    _s(PN, "default_proc_name", "", v.string, "unicornd", """
        The process name used when `proc_name` is not set: the `APP_MODULE` argument when one is
        given, otherwise `unicornd`."""),
    # -- Debugging ----------------------------------------------------------------------------
    _flag(DBG, "reload", "--reload", """
        Restart workers when the application's code changes: every Python source file the
        worker has imported, and the files of `reload_extra_files`. A changed file is logged and
        the worker exits gracefully; the master starts a fresh one, which imports the new code.
        If the new code fails to load, the worker serves 500 and keeps watching until the file is
        fixed. For development only: it costs a thread per worker."""),
    _s(DBG, "reload_engine", "--reload-engine", v.choice("auto", "poll", "inotify"), "auto", """
        How `reload` watches files: `auto`, `inotify` or `poll`. `inotify` (Linux, through the C
        library, no extra package),
        `poll` (compare modification times once a second, works everywhere), or `auto` for
        inotify when available and polling otherwise.""", meta="STRING"),
    _s(DBG, "reload_extra_files", "--reload-extra-file", v.string_list, [], """
        More files that `reload` watches, such as templates or configuration; glob patterns (`*`,
        `?`, `**`) are expanded when a worker starts. Repeat the flag for several. Only
        watched when `reload` is on.""", meta="FILES", action="append"),
    _flag(DBG, "spew", "--spew", """
        Trace every line executed in the workers, printed to standard error as
        `pid file:line: source`, through `sys.settrace`. For debugging only: it is very slow
        and very verbose."""),
    _flag(DBG, "check_config", "--check-config", """
        Check the settings, the worker class and the application, then exit. Status 0 when all
        load, 2 with a message naming the setting when a setting is wrong or the worker class
        cannot run (gunicorn exits 1), 1 when the application cannot be loaded. Settings that
        do nothing in unicornd, or something else than in gunicorn, are logged as warnings."""),
    _flag(DBG, "print_config", "--print-config", """
        Print every setting as finally resolved, one `name = value` line each, sorted by name,
        and exit."""),
    # -- Server Hooks -------------------------------------------------------------------------
    _hook(HOOKS, H.on_starting, """
        Called in the master before it initialises, with the server (`on_starting(server)`)."""),
    _hook(HOOKS, H.on_reload, """
        Called in the master when `SIGHUP` reloads the configuration and replaces the workers
        (`on_reload(server)`)."""),
    _hook(HOOKS, H.when_ready, """
        Called in the master once it listens and is about to start workers
        (`when_ready(server)`)."""),
    _hook(HOOKS, H.pre_fork, """
        Called in the master just before forking a worker (`pre_fork(server, worker)`)."""),
    _hook(HOOKS, H.post_fork, """
        Called in the new worker just after the fork (`post_fork(server, worker)`)."""),
    _hook(HOOKS, H.post_worker_init, """
        Called in a worker once it has loaded the application (`post_worker_init(worker)`)."""),
    _hook(HOOKS, H.worker_int, """
        Called in a worker that received `SIGINT` or `SIGQUIT`, before it exits
        (`worker_int(worker)`)."""),
    _hook(HOOKS, H.worker_abort, """
        Called in a worker that received `SIGABRT`, which is how the master ends a worker that
        exceeded `timeout` (`worker_abort(worker)`)."""),
    _hook(HOOKS, H.pre_exec, """
        Called on `SIGUSR2` in the child the master forks to become the new master, just
        before it executes the new binary (`pre_exec(server)`, the old master's server object
        as the child inherited it)."""),
    _hook(HOOKS, H.pre_request, """
        Called in a worker before it hands a request to the application
        (`pre_request(worker, req)`). The default does nothing."""),
    _hook(HOOKS, H.post_request, """
        Called in a worker after the application has answered a request
        (`post_request(worker, req, environ, resp)`); as in gunicorn, a callable taking only the
        first two or three of these arguments is accepted too.""", post_request=True),
    _hook(HOOKS, H.child_exit, """
        Called in the master after a worker has exited (`child_exit(server, worker)`)."""),
    _hook(HOOKS, H.worker_exit, """
        Called in a worker as it exits (`worker_exit(server, worker)`)."""),
    _hook(HOOKS, H.nworkers_changed, """
        Called in the master when the number of workers changes, with the new and the previous
        number; the previous one is `None` the first time
        (`nworkers_changed(server, new_value, old_value)`)."""),
    _hook(HOOKS, H.on_exit, """
        Called in the master just before unicornd exits (`on_exit(server)`)."""),
    _hook(HOOKS, H.ssl_context, """
        Builds the `ssl.SSLContext` for TLS (`ssl_context(config, default_ssl_context_factory)`):
        call the factory for the context unicornd would use, adjust it, return it."""),
    # -- SSL ----------------------------------------------------------------------------------
    _s(SSL, "keyfile", "--keyfile", v.optional_string, None, """
        The TLS private key file (PEM); with `certfile`, every listener speaks HTTPS. A key
        protected by a password is refused at startup: unicornd has no way to ask for it.""",
       meta="FILE"),
    _s(SSL, "certfile", "--certfile", v.optional_string, None, """
        The TLS certificate file (PEM, the chain after the certificate). Setting it turns on
        TLS on every listener, and `wsgi.url_scheme` becomes `https`.""", meta="FILE"),
    _s(SSL, "ssl_version", "--ssl-version", v.ssl_version, 2, """
        The oldest TLS version accepted: `TLSv1_2` or `TLSv1_3`. The `ssl.PROTOCOL_TLSv1_2`
        style names and numbers gunicorn knew are read the same way; `TLS`, the default, keeps
        Python's own minimum. gunicorn ignores this setting; unicornd honours it.""",
       default_doc="`ssl.PROTOCOL_TLS`",
       differs=lambda value: "gunicorn ignores it; unicornd refuses TLS versions older than it"),
    _s(SSL, "cert_reqs", "--cert-reqs", v.non_negative_int, 0, """
        Whether clients must show a certificate signed by `ca_certs`: 0 no, 1 optional (checked
        when given), 2 required."""),
    _s(SSL, "ca_certs", "--ca-certs", v.optional_string, None, """
        The CA certificates file (PEM) that client certificates are checked against.""",
       meta="FILE"),
    _flag(SSL, "suppress_ragged_eofs", "--suppress-ragged-eofs", """
        Treat a TLS connection closed without a close-notify as a normal end of file.""",
          default=True),
    _flag(SSL, "do_handshake_on_connect", "--do-handshake-on-connect", """
        Perform the TLS handshake as soon as a connection is accepted rather than on its first
        read."""),
    _s(SSL, "ciphers", "--ciphers", v.optional_string, None, """
        The TLS cipher list, in OpenSSL's format (for TLS 1.2 and older; TLS 1.3 suites are
        OpenSSL's defaults)."""),
    # -- HTTP/2 -------------------------------------------------------------------------------
    _s(H2, "http_protocols", "--http-protocols", v.http_protocols, "h1", """
        The HTTP versions offered, in order of preference (`h1`, `h2`). unicornd speaks
        HTTP/1.x.""", meta="STRING", **NO),
    _s(H2, "http2_cleartext", "--http2-cleartext",
       v.choice("off", "prior-knowledge", "upgrade", "both", aliases={True: "prior-knowledge",
                                                                      False: "off"}, none="off"),
       "off", """
        Whether HTTP/2 is accepted without TLS, and how.""", meta="STRING", **NO),
    _int(H2, "http2_max_concurrent_streams", "--http2-max-concurrent-streams", 100, """
        The most HTTP/2 streams open at once on a connection. Accepted with a warning
        and unused: unicornd does not speak HTTP/2.""", **HTTP2_ONLY),
    _int(H2, "http2_initial_window_size", "--http2-initial-window-size", 65535, """
        The initial HTTP/2 flow control window, in bytes. Accepted with a warning
        and unused: unicornd does not speak HTTP/2.""", **HTTP2_ONLY),
    _int(H2, "http2_max_frame_size", "--http2-max-frame-size", 16384, """
        The largest HTTP/2 frame payload, in bytes. Accepted with a warning
        and unused: unicornd does not speak HTTP/2.""", **HTTP2_ONLY),
    _int(H2, "http2_max_header_list_size", "--http2-max-header-list-size", 65536, """
        The largest HTTP/2 header list, in bytes. Accepted with a warning
        and unused: unicornd does not speak HTTP/2.""", **HTTP2_ONLY),
    # -- Control ------------------------------------------------------------------------------
    _s(CTL, "control_socket", "--control-socket", v.string, None, """
        The Unix socket of gunicorn's control interface (`gunicornc`). Accepted with a warning
        and unused: unicornd has no control socket; `unicornd status` shows the workers (with
        `metrics_bind`) and signals drive the master.""", meta="PATH",
       default_from=_computed(_control_socket),
       default_doc="`$XDG_RUNTIME_DIR/gunicorn.ctl` or `~/.gunicorn/gunicorn.ctl`", **CONTROL),
    _int(CTL, "control_socket_mode", "--control-socket-mode", 0o600, """
        The permissions of gunicorn's control socket. Accepted with a warning and unused:
        unicornd has no control socket.""", validate=v.octal_int, default_doc="`0o600`",
         **CONTROL),
    _flag(CTL, "control_socket_disable", "--no-control-socket", """
        Do not open the control socket. unicornd has no control socket, so this holds already;
        the flag is accepted so that gunicorn command lines that pass it keep working."""),
    # -- Dirty Arbiters -----------------------------------------------------------------------
    _s(DIRTY, "dirty_apps", "--dirty-app", v.string_list, [], """
        Applications run in gunicorn's separate pool for long-running tasks. gunicorn starts
        that pool only when `dirty_workers` is above 0 too; unicornd refuses the two together
        and accepts either alone, which does nothing in gunicorn either.""", meta="STRING",
       action="append", **_ignored("alone it does nothing in gunicorn either: its dirty arbiter "
                                   "(refused by unicornd) runs only when dirty_workers is above "
                                   "0 too")),
    _int(DIRTY, "dirty_workers", "--dirty-workers", 0, """
        The number of dirty worker processes; with `dirty_apps`, refused (see there).""",
         **_ignored("alone it does nothing in gunicorn either: its dirty arbiter (refused by "
                    "unicornd) runs only when dirty_apps is set too")),
    _int(DIRTY, "dirty_timeout", "--dirty-timeout", 300, """
        Seconds a dirty task may run. Accepted with a warning and unused.""", **DIRTY_ONLY),
    _int(DIRTY, "dirty_threads", "--dirty-threads", 1, """
        Threads per dirty worker. Accepted with a warning and unused.""", **DIRTY_ONLY),
    _int(DIRTY, "dirty_graceful_timeout", "--dirty-graceful-timeout", 30, """
        Seconds dirty workers get to finish when stopping. Accepted with a warning and
        unused.""", **DIRTY_ONLY),
    # -- Dirty Arbiter Hooks ------------------------------------------------------------------
    _hook(DHOOKS, H.on_dirty_starting, """
        Called before the dirty arbiter starts (`on_dirty_starting(arbiter)`). Accepted with a
        warning and never called.""", **DIRTY_ONLY),
    _hook(DHOOKS, H.dirty_post_fork, """
        Called after a dirty worker is forked (`dirty_post_fork(arbiter, worker)`). Accepted
        with a warning and never called.""", **DIRTY_ONLY),
    _hook(DHOOKS, H.dirty_worker_init, """
        Called once a dirty worker has loaded its applications (`dirty_worker_init(worker)`).
        Accepted with a warning and never called.""", **DIRTY_ONLY),
    _hook(DHOOKS, H.dirty_worker_exit, """
        Called when a dirty worker exits (`dirty_worker_exit(arbiter, worker)`). Accepted with
        a warning and never called.""", **DIRTY_ONLY),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))

assert len(BY_NAME) == len(SETTINGS), "duplicate setting name"

# unicornd.conf.py: a complete, commented configuration file.
#
# Use it with `unicornd -c examples/unicornd.conf.py myapp:app`; without -c unicornd reads
# ./unicornd.conf.py, else ./gunicorn.conf.py. It is plain Python: every module-level name
# that is a setting becomes its value, other names (imports, helpers) are ignored. The names
# are gunicorn's, so a gunicorn.conf.py works unchanged and this file works with gunicorn
# (apart from the few settings marked "unicornd only"). The command line and
# UNICORND_CMD_ARGS override what is set here. Every setting: the settings reference of the docs site.
#
# Check it without serving: unicornd --check-config -c examples/unicornd.conf.py examples.hello:app

import multiprocessing
import os

# -- The application ------------------------------------------------------------------------
# The APP_MODULE argument wins over this.
wsgi_app = "examples.hello:app"
chdir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository top
pythonpath = None                 # "/srv/app,/srv/lib": put first on sys.path
raw_env = ["APP_MODE=example"]    # KEY=VALUE pairs put into the environment (-e)
preload_app = False               # import the app in the master (shared memory, no HUP code reload)
# paste = "production.ini"        # or load a PasteDeploy app (pip install 'unicornd[paste]')
# raw_paste_global_conf = ["db=postgresql:///app"]

# -- Server socket --------------------------------------------------------------------------
bind = [os.environ.get("UNICORND_BIND", "127.0.0.1:8000")]  # also unix:/run/app.sock, fd://3
backlog = 2048                    # connections waiting to be accepted (capped by somaxconn)
reuse_port = False

# -- Worker processes -----------------------------------------------------------------------
# sync: one request at a time per process, for CPU-bound apps behind nginx.
# gthread: a thread pool per process, for apps that wait on I/O (docs/workers.md).
workers = int(os.environ.get("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 4)))
worker_class = "sync"
threads = 1                       # gthread: threads per worker
worker_connections = 1000         # gevent/eventlet: connections per worker
timeout = 30                      # a worker or request silent this long is killed, stack logged
graceful_timeout = 30             # TERM/HUP: seconds a worker gets to finish its request
drain_delay = 0                   # unicornd only: seconds to serve on after TERM, /readyz 503
max_workers = 0                   # unicornd only: scale up to this many under load (0: fixed)
scale_up_period = 5.0             # unicornd only: seconds all workers are busy before one more
scale_down_period = 30.0          # unicornd only: seconds of spare capacity before one fewer
keepalive = 2                     # seconds an idle keep-alive connection is kept (gthread)
max_requests = 0                  # recycle a worker after this many requests (0: never)
max_requests_jitter = 0           # plus up to this many, so workers do not recycle together
max_worker_memory = 0             # unicornd only: recycle a worker above this RSS (0: never)
boot_timeout = 120                # unicornd only: seconds a worker may take to load the app

# -- Security: request limits ---------------------------------------------------------------
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
limit_request_body = 0            # unicornd only: the largest body, bytes (0: unlimited)
header_timeout = 10               # unicornd only: seconds to send a whole request head
min_body_rate = 0                 # unicornd only: slowest upload, bytes per second (0: no check)

# -- HTTP parsing and proxies ---------------------------------------------------------------
forwarded_allow_ips = "127.0.0.1,::1"   # proxies whose X-Forwarded-* are believed
secure_scheme_headers = {"X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on",
                         "X-FORWARDED-PROTOCOL": "ssl"}
forwarder_headers = "SCRIPT_NAME,PATH_INFO"
proxy_protocol = "off"            # v1, v2, auto: behind HAProxy or a TCP load balancer
proxy_allow_ips = "127.0.0.1,::1"
header_map = "drop"               # header names with "_": drop, refuse or dangerous
permit_obsolete_folding = False   # the leniency switches: leave them off
strip_header_spaces = False
permit_unconventional_http_method = False
permit_unconventional_http_version = False
casefold_http_method = False
sendfile = None                   # None/True: sendfile(2) for wsgi.file_wrapper

# -- Server mechanics -----------------------------------------------------------------------
daemon = False                    # under systemd or a container, stay in the foreground
pidfile = None                    # "/run/unicornd.pid"
worker_tmp_dir = None
user = None                       # drop to this user and group in the workers (when root)
group = None
umask = 0
initgroups = False

# -- Logging --------------------------------------------------------------------------------
errorlog = "-"                    # "-" is stderr
loglevel = "info"
accesslog = None                  # "-" for stdout, or a file (reopened on USR1)
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
access_log_json = False           # unicornd only: one JSON object per request
capture_output = False            # send the app's stdout/stderr to the error log
enable_stdio_inheritance = False
logger_class = "gunicorn.glogging.Logger"
logconfig = None                  # a logging.config ini file
logconfig_dict = {}               # or a dictConfig dict
logconfig_json = None             # or a dictConfig JSON file
syslog = False
syslog_addr = "udp://localhost:514"
syslog_prefix = None
syslog_facility = "user"
disable_redirect_access_to_syslog = False

# -- Metrics --------------------------------------------------------------------------------
metrics_bind = None               # unicornd only: "127.0.0.1:9100" serves /metrics and /status
statsd_host = None                # "127.0.0.1:8125"
statsd_prefix = ""
dogstatsd_tags = ""
enable_backlog_metric = False

# -- Process naming -------------------------------------------------------------------------
proc_name = None                  # shown in ps (pip install setproctitle)

# -- TLS (usually terminated by nginx instead) ----------------------------------------------
certfile = None
keyfile = None
ca_certs = None
cert_reqs = 0                     # 0: no client certificate, 1: optional, 2: required
ssl_version = 2                   # the oldest protocol accepted (TLS: any)
ciphers = None
suppress_ragged_eofs = True
do_handshake_on_connect = False

# -- Development ----------------------------------------------------------------------------
reload = False                    # restart workers when the code changes
reload_engine = "auto"            # auto, inotify, poll
reload_extra_files = []           # ["templates/**/*.html"]
spew = False                      # trace every line the workers execute

# -- Control --------------------------------------------------------------------------------
control_socket_disable = False


# -- Server hooks: functions with these names and arguments ---------------------------------
def on_starting(server):
    server.log.info("on_starting: the master is starting")


def when_ready(server):
    server.log.info("when_ready: serving")


def on_reload(server):
    pass


def pre_fork(server, worker):
    pass


def post_fork(server, worker):
    pass


def post_worker_init(worker):
    pass


def worker_int(worker):
    worker.log.info("worker_int: worker %s interrupted", worker.pid)


def worker_abort(worker):
    worker.log.info("worker_abort: worker %s timed out", worker.pid)


def pre_exec(server):
    pass


def pre_request(worker, req):
    pass


def post_request(worker, req, environ, resp):
    pass


def child_exit(server, worker):
    pass


def worker_exit(server, worker):
    pass


def nworkers_changed(server, new_value, old_value):
    pass


def on_exit(server):
    pass


# def ssl_context(config, default_ssl_context_factory):
#     context = default_ssl_context_factory()
#     context.set_alpn_protocols(["http/1.1"])
#     return context

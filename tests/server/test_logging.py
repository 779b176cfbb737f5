"""Logs end to end: the access log (text and JSON, every atom), syslog, log config files,
capture_output, USR1 reopen and HUP with a broken log config."""

import json
import os
import re
import signal
import socket
import subprocess

import pytest

from support import Server, parse_response, raw_request, run_cli, wait_for


def get(srv, target="/hello", headers=""):
    return parse_response(raw_request(srv.address, f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()))


def lines_of(path):
    return path.read_text().splitlines() if path.exists() else []


def test_default_access_log_line_is_gunicorns(tmp_path):
    log = tmp_path / "access.log"
    with Server("-b", "127.0.0.1:0", "--access-logfile", str(log), "testapp:app") as srv:
        get(srv, "/hello?x=1", "User-Agent: tester/1.0\r\nReferer: http://ref/\r\n")
        line = wait_for(lambda: next((l for l in lines_of(log) if "/hello?x=1" in l), None), 10)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                        r'"GET /hello\?x=1 HTTP/1\.1" 200 14 "http://ref/" "tester/1\.0"', line), line


def test_every_atom(tmp_path):
    log = tmp_path / "access.log"
    fmt = ("h=%(h)s l=%(l)s u=%(u)s r=%(r)s m=%(m)s U=%(U)s q=%(q)s H=%(H)s s=%(s)s B=%(B)s b=%(b)s "
           "f=%(f)s a=%(a)s T=%(T)s D=%(D)s M=%(M)s L=%(L)s p=%(p)s in=%({x-in}i)s "
           "out=%({content-type}o)s env=%({SCRIPT_NAME}e)s none=%({nope}i)s")
    with Server("-b", "127.0.0.1:0", "--access-logfile", str(log), "--access-logformat", fmt,
                "testapp:app") as srv:
        get(srv, "/hello?a=b", "X-In: given\r\nAuthorization: Basic dXNlcjpwYXNz\r\n")
        line = wait_for(lambda: next((l for l in lines_of(log) if "U=/hello" in l), None), 10)
    fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
    assert fields["h"] == "127.0.0.1" and fields["l"] == "-" and fields["u"] == "user"
    assert fields["m"] == "GET" and fields["U"] == "/hello" and fields["q"] == "a=b" and fields["H"] == "HTTP/1.1"
    assert fields["s"] == "200" and fields["B"] == "14" and fields["b"] == "14"
    assert fields["f"] == "-" and fields["a"] == "-"
    assert int(fields["D"]) >= 0 and int(fields["M"]) >= 0 and int(fields["T"]) >= 0
    assert re.fullmatch(r"\d+\.\d{6}", fields["L"])
    assert re.fullmatch(r"<\d+>", fields["p"])
    assert fields["in"] == "given" and fields["out"] == "text/plain" and fields["env"] == ""
    assert fields["none"] == "-"
    assert "r=GET /hello?a=b HTTP/1.1" in line


def test_json_access_log_escapes_correctly(tmp_path):
    log = tmp_path / "access.jsonl"
    with Server("-b", "127.0.0.1:0", "--access-logfile", str(log), "--access-log-json", "testapp:app") as srv:
        raw_request(srv.address, b'GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: evil "agent" \\ \xe9\r\n\r\n')
        line = wait_for(lambda: next((l for l in lines_of(log) if "/hello" in l), None), 10)
    record = json.loads(line)
    assert record["request"] == "GET /hello HTTP/1.1" and record["status"] == 200
    assert record["user_agent"] == 'evil "agent" \\ \xe9'
    assert record["remote_addr"] == "127.0.0.1" and record["bytes"] == 14


def test_json_access_log_numbers_are_numbers(tmp_path):
    log = tmp_path / "access.jsonl"
    fmt = "%(U)s %(h)s %(s)s %(B)s %(b)s %(T)s %(D)s %(M)s %(L)s %(p)s"
    with Server("-b", "127.0.0.1:0", "--access-logfile", str(log), "--access-log-json",
                "--access-logformat", fmt, "testapp:app") as srv:
        get(srv, "/hello")
        line = wait_for(lambda: next((l for l in lines_of(log) if "/hello" in l), None), 10)
    record = json.loads(line)
    assert record["path"] == "/hello" and record["remote_addr"] == "127.0.0.1"
    assert record["status"] == 200 and record["bytes"] == 14
    for name in ("duration_s", "duration_us", "duration_ms", "pid"):
        assert type(record[name]) is int and record[name] >= 0, (name, record)
    assert type(record["duration"]) is float


def test_access_log_to_stdout():
    with Server("-b", "127.0.0.1:0", "--access-logfile", "-", "testapp:app") as srv:
        get(srv, "/hello?on=stdout")
        srv.wait_log(r'"GET /hello\?on=stdout HTTP/1\.1" 200 14')


def test_no_access_log_by_default(tmp_path):
    with Server("-b", "127.0.0.1:0", "testapp:app") as srv:
        get(srv, "/hello?silent=1")
        get(srv, "/hello")
        assert "silent=1" not in srv.log


def test_usr1_reopens_the_access_log(tmp_path):
    log = tmp_path / "access.log"
    with Server("-w", "1", "-b", "127.0.0.1:0", "--access-logfile", str(log), "testapp:app") as srv:
        get(srv, "/hello?before=1")
        wait_for(lambda: any("before=1" in l for l in lines_of(log)), 10)
        os.rename(log, tmp_path / "access.log.1")
        srv.signal(signal.SIGUSR1)
        srv.wait_log("Handling signal: usr1")

        def new_file_gets_lines():
            get(srv, "/hello?after=1")
            return any("after=1" in l for l in lines_of(log))
        wait_for(new_file_gets_lines, 15, interval=0.2)
        assert not any("after=1" in l for l in lines_of(tmp_path / "access.log.1"))


def test_a_full_disk_does_not_stop_serving():
    with Server("-b", "127.0.0.1:0", "--access-logfile", "/dev/full", "testapp:app") as srv:
        for _ in range(200):
            assert get(srv, "/hello")[0] == 200


class Receiver:
    """A syslog server of the test's own: UDP on loopback or a unix datagram socket."""

    def __init__(self, path=None):
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
            self.url = f"unix://{path}"
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.url = f"udp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.settimeout(0.05)
        self.messages = []

    def collect(self):
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode(errors="replace"))
            except (socket.timeout, BlockingIOError):
                return self.messages

    def wait(self, pattern, timeout=15):
        rx = re.compile(pattern)
        return wait_for(lambda: next((m for m in self.collect() if rx.search(m)), None), timeout,
                        message=lambda: f"{pattern} in {self.messages}")


@pytest.mark.parametrize("kind", ["udp", "unix"])
def test_syslog(tmp_path, kind):
    receiver = Receiver(tmp_path / "syslog.sock" if kind == "unix" else None)
    with Server("-b", "127.0.0.1:0", "--log-syslog", "--log-syslog-to", receiver.url,
                "--log-syslog-prefix", "myapp", "--log-syslog-facility", "local3", "testapp:app") as srv:
        message = receiver.wait(r"myapp\[\d+\]: \[INFO\] Booting worker")
        priority = int(re.match(r"<(\d+)>", message).group(1))
        assert priority >> 3 == 19  # local3
        get(srv, "/hello?via=syslog")
        receiver.wait(r'"GET /hello\?via=syslog HTTP/1\.1" 200')


def test_disable_redirect_access_to_syslog(tmp_path):
    receiver = Receiver()
    with Server("-b", "127.0.0.1:0", "--log-syslog", "--log-syslog-to", receiver.url,
                "--disable-redirect-access-to-syslog", "testapp:app") as srv:
        receiver.wait("Booting worker")
        get(srv, "/hello?kept=out")
        get(srv, "/crash")  # something the error log writes after the request
        receiver.wait("boom")
        assert not any("kept=out" in m for m in receiver.collect())


def _dict_config(path, fmt):
    return {
        "version": 1,
        "formatters": {"mine": {"format": fmt}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path), "formatter": "mine"}},
        "loggers": {
            "gunicorn.error": {"handlers": ["file"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
        },
    }


@pytest.mark.parametrize("kind", ["dict", "json", "ini"])
def test_log_config_written_for_gunicorn_works(tmp_path, kind):
    out = tmp_path / "custom.log"
    conf = tmp_path / "conf.py"
    if kind == "dict":
        conf.write_text(f"logconfig_dict = {_dict_config(out, 'CUSTOM %(name)s %(message)s')!r}\n")
        args = ["-c", str(conf)]
    elif kind == "json":
        js = tmp_path / "log.json"
        js.write_text(json.dumps(_dict_config(out, "CUSTOM %(name)s %(message)s")))
        args = ["--log-config-json", str(js)]
    else:
        ini = tmp_path / "log.ini"
        ini.write_text(f"""[loggers]
keys=root,error,access
[handlers]
keys=file
[formatters]
keys=mine
[logger_root]
level=WARNING
handlers=
[logger_error]
level=INFO
handlers=file
propagate=0
qualname=gunicorn.error
[logger_access]
level=INFO
handlers=file
propagate=0
qualname=gunicorn.access
[handler_file]
class=FileHandler
formatter=mine
args=({str(out)!r},)
[formatter_mine]
format=CUSTOM %(name)s %(message)s
""")
        args = ["--log-config", str(ini)]
    with Server("-b", "127.0.0.1:0", *args, "testapp:app", expect_listen=False) as srv:
        line = wait_for(lambda: next((l for l in lines_of(out) if "Listening at" in l), None), 20)
        assert line.startswith("CUSTOM gunicorn.error Listening at: http://127.0.0.1:")
        port = int(re.search(r":(\d+) ", line).group(1))
        wait_for(lambda: "Booting worker" in out.read_text(), 20)

        def served():
            try:
                return parse_response(raw_request(("127.0.0.1", port), b"GET /hello?cfg=1 HTTP/1.0\r\n\r\n"))[0] == 200
            except OSError:
                return False
        wait_for(served, 20)
        wait_for(lambda: any(l.startswith("CUSTOM gunicorn.access") and "cfg=1" in l for l in lines_of(out)), 10)


def test_bad_log_config_is_a_startup_error(tmp_path):
    result = run_cli("-b", "127.0.0.1:0", "--log-config", str(tmp_path / "missing.ini"), "testapp:app")
    assert result.returncode == 2 and "logconfig" in result.stderr and "missing.ini" in result.stderr


def test_hup_with_a_broken_log_config_keeps_the_old_one(tmp_path):
    errlog = tmp_path / "error.log"
    conf = tmp_path / "conf.py"
    conf.write_text(f"errorlog = {str(errlog)!r}\n")
    with Server("-c", str(conf), "-b", "127.0.0.1:0", "testapp:app", expect_listen=False) as srv:
        wait_for(lambda: "Booting worker" in errlog.read_text() if errlog.exists() else False, 20)
        conf.write_text(f"errorlog = {str(errlog)!r}\nlogconfig_dict = {{'version': 1, 'handlers': {{'x': {{'class': 'no.such.Handler'}}}}}}\n")
        srv.signal(signal.SIGHUP)
        wait_for(lambda: "the new log settings do not work, the old ones stay" in errlog.read_text(), 20)
        wait_for(lambda: errlog.read_text().count("Booting worker") >= 2, 20)  # the reload went on


def test_capture_output_sends_print_to_the_error_log(tmp_path):
    errlog = tmp_path / "error.log"
    with Server("-b", "127.0.0.1:0", "--error-logfile", str(errlog), "--capture-output",
                "factories:printing_app", expect_listen=False) as srv:
        port = int(wait_for(lambda: errlog.exists() and re.search(r"Listening at: http://127.0.0.1:(\d+)",
                                                                  errlog.read_text()), 20).group(1))

        def printed():
            try:
                raw_request(("127.0.0.1", port), b"GET / HTTP/1.0\r\n\r\n")
            except OSError:
                return False
            return "printed by the app" in errlog.read_text()
        wait_for(printed, 20, interval=0.2)


def test_a_logger_class_of_ones_own_gets_server_messages_and_access_calls(tmp_path):
    out = tmp_path / "custom.log"
    with Server("-w", "1", "-b", "127.0.0.1:0", "--logger-class", "custom_logger.FileLogger", "testapp:app",
                env={"CUSTOM_LOG": str(out)}, expect_listen=False) as srv:
        line = wait_for(lambda: next((l for l in lines_of(out) if "Listening at" in l), None), 20)
        port = int(re.search(r":(\d+) ", line).group(1))

        def served():
            try:
                return parse_response(raw_request(("127.0.0.1", port), b"GET /hello?via=class HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 200
            except OSError:
                return False
        wait_for(served, 20)
        access = wait_for(lambda: next((l for l in lines_of(out) if l.startswith("ACCESS")), None), 10)
        assert access.startswith("ACCESS 200 OK 200 GET /hello?via=class /hello (1, 1) 14 ")
        assert any(l.startswith("INFO Booting worker") for l in lines_of(out))


def test_a_logger_class_without_the_methods_is_refused():
    result = run_cli("--logger-class", "custom_logger.NotALogger", "testapp:app")
    assert result.returncode == 2
    assert "logger_class" in result.stderr and "lacks" in result.stderr and "access" in result.stderr


def test_apps_logging_through_gunicorn_error_reach_the_error_log():
    with Server("-b", "127.0.0.1:0", "factories:logging_app") as srv:
        raw_request(srv.address, b"GET / HTTP/1.0\r\n\r\n")
        srv.wait_log(r"\[INFO\] hello from the app's logger")


def test_a_500_from_an_app_exception_is_logged_as_500(tmp_path):
    log = tmp_path / "access.log"
    with Server("-b", "127.0.0.1:0", "--access-logfile", str(log), "testapp:app") as srv:
        assert get(srv, "/crash")[0] == 500
        wait_for(lambda: any('"GET /crash HTTP/1.1" 500' in l for l in lines_of(log)), 10)


def test_daemon_keeps_stdio_with_enable_stdio_inheritance(tmp_path):
    import os
    import sys
    from support import APPS, REPO, alive
    pidfile, out = tmp_path / "d.pid", tmp_path / "stdio.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(REPO)]))
    with open(out, "w") as stdio:
        started = subprocess.run([sys.executable, "-m", "unicornd", "-D", "-R", "-p", str(pidfile),
                                  "-b", "127.0.0.1:0", "testapp:app"], cwd=APPS, env=env, timeout=30,
                                 stdout=stdio, stderr=stdio)
    assert started.returncode == 0
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20))
    try:
        wait_for(lambda: "Booting worker" in out.read_text(), 20)  # the error log, on the kept stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), 30)

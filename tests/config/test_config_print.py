"""--print-config output: one aligned `name = value` line per setting, sorted."""

import os

from unicornd.config import SETTINGS, format_config


def test_one_sorted_aligned_line_per_setting(load):
    lines = format_config(load()).splitlines()
    names = [line.split(" = ", 1)[0].rstrip() for line in lines]
    assert names == sorted(s.name for s in SETTINGS)
    width = max(len(s.name) for s in SETTINGS)
    assert all(line[width:width + 3] == " = " for line in lines)


def test_values_as_resolved(load, write, tmp_path):
    write("conf.py", "def on_starting(server):\n    pass\nsecure_scheme_headers = {'X-A': 'b'}\n")
    text = format_config(load("-c", "conf.py", "-w", "3", "-b", "[::1]:80", "--no-sendfile",
                              "app:app"))
    lines = dict(line.split(" = ", 1) for line in text.splitlines())
    lines = {k.rstrip(): v for k, v in lines.items()}
    assert lines["workers"] == "3"
    assert lines["bind"] == "['[::1]:80']"
    assert lines["sendfile"] == "False"
    assert lines["wsgi_app"] == "app:app"
    assert lines["default_proc_name"] == "app:app"
    assert lines["proc_name"] == "None"
    assert lines["on_starting"] == "<on_starting()>"
    assert lines["on_exit"] == "<on_exit()>"
    assert lines["secure_scheme_headers"] == "{'X-A': 'b'}"
    assert lines["chdir"] == str(tmp_path)
    assert lines["config"] == "conf.py"
    assert lines["worker_class"] == "sync"
    assert lines["loglevel"] == "info"
    assert lines["dogstatsd_tags"] == ""
    assert lines["user"] == str(os.geteuid())


def test_exact_lines_for_a_few_settings(load):
    text = format_config(load("--timeout", "10"))
    assert "timeout                            = 10\n" in text
    assert "forwarded_allow_ips                = ['127.0.0.1', '::1']\n" in text
    assert text.startswith("access_log_format                  = %(h)s %(l)s %(u)s %(t)s")
    assert not text.endswith("\n")


def test_print_and_check_config_are_plain_settings(load):
    cfg = load("--print-config", "--check-config")
    assert (cfg.print_config, cfg.check_config) == (True, True)
    cfg = load()
    assert (cfg.print_config, cfg.check_config) == (False, False)

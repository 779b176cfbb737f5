"""``unicornd --help`` and the settings' docs (issue 15): only options that work, texts rendered
from the Markdown without losing words, and no name of a setting or worker class that does not
exist."""

import re
import subprocess
import sys

import pytest

from unicornd import workers
from unicornd.config import SETTINGS, build_parser
from unicornd.config.loader import first_sentence, help_text, in_help
from unicornd.config.settings import BY_NAME

# Code spans in the docs that look like setting names and are not: what they are.
NOT_SETTINGS = {
    "uwsgi_pass": "an nginx directive",
    "global_conf": "PasteDeploy's argument",
    "remote_addr": "a key of the JSON access log",
    "request_time": "an argument of Logger.access()",
}
SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")


@pytest.fixture(scope="module")
def help_out():
    # A fixed width, as a terminal of 80 columns shows it.
    proc = subprocess.run([sys.executable, "-m", "unicornd", "--help"], capture_output=True,
                          text=True, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin",
                                          "PYTHONPATH": ":".join(sys.path)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def option_helps(out):
    """{first flag: its help text on one line}, from the options part of --help."""
    helps, current = {}, None
    for line in out.split("\n\n", 3)[-1].splitlines():
        m = re.match(r"  (-\S+)", line)
        if m:
            current = m.group(1).rstrip(",")
            rest = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            helps[current] = rest[1] if len(rest) > 1 and not rest[1].startswith("-") else ""
        elif line.startswith("    ") and current:
            helps[current] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            current = None
    return helps


def test_help_lists_every_working_option_and_nothing_refused_or_ignored(help_out):
    for s in SETTINGS:
        for flag in s.cli:
            listed = re.search(rf"(^|[\s,]){re.escape(flag)}(\s|,|$)", help_out, re.M) is not None
            assert listed == in_help(s), (s.name, flag)
    assert all(in_help(s) == (bool(s.cli) and s.supported) for s in SETTINGS)
    for flag in ("--http-protocols", "--protocol", "--dirty-workers", "--control-socket ",
                 "--asgi-loop", "--worker-tmp-dir"):
        assert flag not in help_out
    assert "not supported" not in help_out


def test_help_texts_are_rendered_whole(help_out):
    helps = option_helps(help_out)
    assert len(helps) > 80
    for flag, text in helps.items():
        if flag in ("-h", "-v"):
            continue
        assert text, flag
        assert "`" not in text and not re.search(r"\*\*\w", text), (flag, text)  # Markdown
        assert text.count("(") == text.count(")"), (flag, text)  # never cut mid-parenthesis
        assert text.count("[") == text.count("]"), (flag, text)
        assert not re.search(r"\[(None|False|\[\]|)\]", text), (flag, text)
        assert not re.search(r"\b(\w+) \1\b", text), (flag, text)  # "threads threads"
    assert "docs/settings.md" not in help_out  # generated, not in the repository
    assert "python -m unicornd.config.docs" in help_out


def test_the_worker_class_option_names_every_builtin_class(help_out):
    text = option_helps(help_out)["-k"]
    for name in workers.BUILTIN:
        assert name in text, text


def test_help_is_shorter_than_the_whole_table(help_out):
    # Refused and ignored options are not listed, first sentences are short: 376 lines before
    # (issue 15), 304 with only the refused options hidden.
    assert len(help_out.splitlines()) < 280


@pytest.mark.parametrize("doc, first", [
    ("The syslog facility (`user`, `daemon`, `local0` ... `local7`, ...). More.",
     "The syslog facility (`user`, `daemon`, `local0` ... `local7`, ...)."),
    ("Use `a.b` here, e.g. this. Then.", "Use `a.b` here, e.g. this."),
    ("No full stop", "No full stop"),
])
def test_first_sentence_ends_outside_parentheses_and_code(doc, first):
    assert first_sentence(doc) == first


def test_help_text_drops_markdown_and_uninformative_defaults():
    assert help_text(BY_NAME["threads"]).endswith("[1]")
    assert "[" not in help_text(BY_NAME["pidfile"])  # default None
    assert "[" not in help_text(BY_NAME["daemon"])   # a flag, default False
    assert "[0]" in help_text(BY_NAME["umask"])      # 0 is a value worth showing


def _texts():
    for s in SETTINGS:
        yield s.name, s.doc
        if s.ignored:
            yield f"{s.name} (ignored)", s.ignored


@pytest.mark.parametrize("name, text", list(_texts()), ids=[name for name, _ in _texts()])
def test_docs_name_only_settings_that_exist(name, text):
    spans = re.findall(r"`([^`]+)`", text)
    plain = re.sub(r"`[^`]*`", "", text)
    words = [w for w in spans if SNAKE.fullmatch(w)] + SNAKE.findall(plain)
    unknown = [w for w in words if w not in BY_NAME and w not in NOT_SETTINGS]
    assert not unknown, f"{name} names settings that do not exist: {unknown}"


@pytest.mark.parametrize("name, text", list(_texts()), ids=[name for name, _ in _texts()])
def test_docs_name_only_worker_classes_that_exist(name, text):
    known = set(workers.BUILTIN) | set(workers.PLANNED)
    # `name` worker / `name` class / `name` worker class, and -k `name`
    named = (re.findall(r"`([a-z][\w.:#-]{2,})`(?= (?:worker|class)\b)", text)
             + re.findall(r"-k `([^`]+)`", text))
    for cls in named:
        assert cls in known or cls in workers.GUNICORN_ALIASES, f"{name}: no worker class {cls!r}"
    for path in re.findall(r"`((?:gunicorn|unicornd)\.workers\.[\w.:]+|egg:gunicorn#\w+)`", text):
        if path.startswith(("gunicorn", "egg:")):
            assert path in workers.GUNICORN_ALIASES, f"{name}: no gunicorn worker class {path!r}"
        else:
            workers.load_worker_class(path)  # raises if it does not exist or cannot run
    # A built-in class is never said to be refused or unsupported.
    for sentence in re.split(r"(?<=\.) ", text):
        if re.search(r"refused|not supported|not available", sentence):
            builtin = [c for c in workers.BUILTIN if f"`{c}`" in sentence]
            assert not builtin, f"{name} says built-in classes {builtin} are refused: {sentence}"


def test_the_check_catches_the_stale_worker_class_text():
    """The text issue 15 found (gevent and eventlet 'refused until unicornd has them') fails."""
    stale = ("gunicorn's other classes (`gevent`, `eventlet`, `tornado`) are refused until "
             "unicornd has them.")
    with pytest.raises(AssertionError, match="built-in classes"):
        test_docs_name_only_worker_classes_that_exist("worker_class", stale)
    with pytest.raises(AssertionError, match="no worker class 'tornadoes'"):
        test_docs_name_only_worker_classes_that_exist("x", "the `tornadoes` worker")
    with pytest.raises(AssertionError, match="do not exist: \\['max_request'\\]"):
        test_docs_name_only_settings_that_exist("x", "see `max_request`")

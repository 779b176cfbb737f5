import sys
import textwrap

import pytest

from unicornd.config import load_config


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test runs in an empty directory (no config file found by default), and the
    modules its config files define or import are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    path = list(sys.path)
    yield
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]
    sys.modules.pop("__config__", None)
    sys.path[:] = path


@pytest.fixture
def write(tmp_path):
    """write("name.py", source) -> its path, the source dedented."""

    def write(name, source):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def load():
    """load(*argv, env=None, **environ) -> Config."""

    def load(*argv, env=None):
        return load_config(list(argv), dict(env or {}))

    return load

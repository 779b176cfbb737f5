"""APP_MODULE specs (unicornd.app_loading), in-process."""

import sys
import types

import pytest

from unicornd.app_loading import AppImportError, load_wsgi_app


@pytest.fixture
def module():
    mod = types.ModuleType("ucd_fake_app")

    def app(environ, start_response):
        return []

    def factory(name="x", *, n=1):
        def inner(environ, start_response):
            return [f"{name}{n}".encode()]
        return inner

    mod.app = app
    mod.application = app
    mod.factory = factory
    mod.returns_none = lambda: None
    mod.not_callable = 42
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def test_forms(module):
    assert load_wsgi_app("ucd_fake_app:app") is module.app
    assert load_wsgi_app("ucd_fake_app") is module.application
    assert load_wsgi_app("ucd_fake_app:factory()")(None, None) == [b"x1"]
    assert load_wsgi_app("ucd_fake_app:factory('y', n=2)")(None, None) == [b"y2"]


@pytest.mark.parametrize("spec, message", [
    ("ucd_fake_app:missing", "Failed to find attribute 'missing' in 'ucd_fake_app'"),
    ("ucd_fake_app:not_callable", "must be callable"),
    ("ucd_fake_app:returns_none()", "returned None"),
    ("ucd_fake_app:factory(open('x'))", "literal"),
    ("ucd_fake_app:a.b", "Failed to parse"),
    (":app", "No module name"),
])
def test_errors_name_what_was_looked_up(module, spec, message):
    with pytest.raises(AppImportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_wsgi_app(spec)


def test_import_error_propagates_with_its_traceback():
    with pytest.raises(ModuleNotFoundError):
        load_wsgi_app("ucd_no_such_module_here:app")

"""An app module whose import fails: the server must show this traceback."""
import no_such_module_anywhere  # noqa: F401


def app(environ, start_response):
    raise AssertionError("never reached")

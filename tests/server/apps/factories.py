"""Apps built by factories (``module:factory(args)``) and the default ``application`` name."""
import os


def _answer(text):
    def app(environ, start_response):
        body = text.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    return app


def make_app(word="default", loud=False):
    return _answer(word.upper() if loud else word)


application = _answer("application")


def env_app(environ, start_response):
    return _answer(os.environ.get("GREETING", "unset"))(environ, start_response)

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


def printing_app(environ, start_response):
    import sys
    print("printed by the app", flush=True)
    print("also on stderr", file=sys.stderr, flush=True)
    return _answer("ok")(environ, start_response)


def logging_app(environ, start_response):
    # The common Flask/Django pattern: log through gunicorn's error logger.
    import logging
    logging.getLogger("gunicorn.error").info("hello from the app's logger")
    return _answer("ok")(environ, start_response)

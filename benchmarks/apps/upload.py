"""WSGI app for uploads: reads the whole request body, answers its length.

A body shorter than its Content-Length gets 400, so wrk counts it as an error.
"""


def app(environ, start_response):
    expected = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    got = 0
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        got += len(piece)
    body = b"%d\n" % got
    status = "200 OK" if got == expected else "400 Bad Request"
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]

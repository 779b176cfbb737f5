"""One request and its answer, made fresh for each request on a connection.

What the access log, the metrics (``Worker.request_finished``) and the ``post_request`` hook
(as gunicorn's ``resp``) read: the request, when it started, the status the client got, the
headers and how many body bytes went out. It also holds the request body's progress while the
app runs. Nothing in it is reset by hand between requests: the next request gets a new one.
"""


class Exchange:
    __slots__ = ("req", "started", "writer", "error_status", "has_body", "body", "reader",
                 "message_done", "continue_pending", "keep_alive", "body_received",
                 "body_started", "overflow_logged", "reported")

    def __init__(self, req, started, keep_alive):
        self.req = req
        self.started = started
        self.keep_alive = keep_alive
        self.writer = None            # a ResponseWriter once the app called start_response
        self.error_status = None      # the status we answered instead (500, 413...)
        self.has_body = req.chunked or bool(req.content_length)
        self.body = None              # wsgi.input
        self.reader = None            # its BodyReader, when the request has a body
        self.message_done = False     # the request body has been read to its end
        self.continue_pending = req.expect_continue
        self.body_received = 0
        self.body_started = None
        self.overflow_logged = False
        self.reported = False         # its stall was logged (ConcurrentRequests.stalled)

    @property
    def head(self):
        """The response head the app gave (a ResponseHead), or None."""
        writer = self.writer
        return writer.head if writer is not None else None

    @property
    def head_sent(self) -> bool:
        writer = self.writer
        return writer is not None and writer.head_sent

    @property
    def sent(self) -> int:
        writer = self.writer
        return writer.sent if writer is not None else 0

    @property
    def status_code(self) -> int:
        """The status the client got: the app's, or the one we answered instead (500, 413...)."""
        if self.error_status is not None:
            return self.error_status
        writer = self.writer
        return writer.head.status_code if writer is not None else 0

    @property
    def status(self):
        """The status line the app gave, as gunicorn's ``resp.status`` (post_request hooks)."""
        writer = self.writer
        return writer.head.status if writer is not None else None

    @property
    def headers(self):
        writer = self.writer
        return list(writer.head.headers) if writer is not None else []

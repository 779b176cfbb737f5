"""One exception per way a request can be wrong, each carrying the status it is answered with.

The names follow gunicorn's (its users grep logs for them). ``status is None`` means no
response is owed: the client went away mid-request and the connection just closes.
"""


class HTTPError(Exception):
    status: "int | None" = 400
    reason = "Bad Request"

    def __init__(self, detail: str = ""):
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{type(self).__name__}: {self.detail}" if self.detail else type(self).__name__


class NoMoreData(HTTPError):
    """EOF in the middle of a request: no response is owed."""
    status = None
    reason = ""


class InvalidRequestLine(HTTPError):
    pass


class InvalidRequestMethod(HTTPError):
    pass


class InvalidHTTPVersion(HTTPError):
    pass


class UnsupportedHTTPVersion(HTTPError):
    """A well-formed version whose major number we do not speak (RFC 9110 §15.6.6)."""
    status = 505
    reason = "HTTP Version Not Supported"


class InvalidHeader(HTTPError):
    pass


class InvalidHeaderName(HTTPError):
    pass


class ObsoleteFolding(HTTPError):
    pass


class InvalidSchemeHeaders(HTTPError):
    pass


class LimitRequestLine(HTTPError):
    status = 414
    reason = "URI Too Long"


class LimitRequestHeaders(HTTPError):
    status = 431
    reason = "Request Header Fields Too Large"


class InvalidChunkSize(HTTPError):
    pass


class InvalidChunkExtension(HTTPError):
    pass


class ChunkMissingTerminator(HTTPError):
    pass


class UnsupportedTransferCoding(HTTPError):
    status = 501
    reason = "Not Implemented"


class ExpectationFailed(HTTPError):
    status = 417
    reason = "Expectation Failed"


class InvalidProxyLine(HTTPError):
    pass


class ForbiddenProxyRequest(HTTPError):
    status = 403
    reason = "Forbidden"


class InvalidProxyHeader(HTTPError):
    """A malformed PROXY protocol v2 header (v1's text line is InvalidProxyLine)."""


class PayloadTooLarge(HTTPError):
    """The body is larger than ``limit_request_body``."""
    status = 413
    reason = "Content Too Large"


class RequestTimeout(HTTPError):
    """The request head (or body) did not arrive in time: ``header_timeout``, ``min_body_rate``."""
    status = 408
    reason = "Request Timeout"

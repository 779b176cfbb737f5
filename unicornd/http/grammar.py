"""HTTP/1.1 request grammar as data: named, precompiled patterns with the section they come from.

The head of a request is decoded as latin-1 before it is matched, so every byte is one character
and these ``str`` patterns speak about octets: ``\\x80-\\xff`` is obs-text, ``\\x00-\\x1f`` and
``\\x7f`` are the controls. The chunked framing is matched as ``bytes`` (the ``B_`` patterns).

Nothing here has state; the parser picks patterns, it does not build them per request.
"""
import re

# --- RFC 9110 §5.6.2 Tokens -------------------------------------------------------------------
#   token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
#         / "~" / DIGIT / ALPHA
TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN_SRC = TCHAR + "+"
TOKEN = re.compile(TOKEN_SRC)

# --- RFC 9110 §9.1 Methods ----------------------------------------------------------------------
#   method = token
# Beyond the RFC, and as gunicorn 27 does unless permit_unconventional_http_method: every
# registered method is 3-20 characters of upper-case token characters, so lower case and "#"
# (and shorter or longer names) are refused. METHOD_CONVENTIONAL is that subset.
METHOD_CONVENTIONAL_SRC = r"[!$%&'*+\-.^_`|~0-9A-Z]{3,20}"
METHOD_CONVENTIONAL = re.compile(METHOD_CONVENTIONAL_SRC)

# --- RFC 9112 §2.3 HTTP version -----------------------------------------------------------------
#   HTTP-version = HTTP-name "/" DIGIT "." DIGIT ;  HTTP-name = %s"HTTP"  (case-sensitive)
HTTP_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")

# --- RFC 9112 §3.2 request-target, RFC 3986 §2 characters ---------------------------------------
# A request-target is printable US-ASCII (RFC 3986 §2: the rest must be percent-encoded). We take
# every VCHAR (as gunicorn 27 and the shared corpus do: valid/014 sends '"' unencoded) and refuse
# controls, SP, DEL and anything above 0x7e.
TARGET_CHAR = r"[\x21-\x7e]"
_PATH_CHAR = r"[\x21-\x22\x24-\x3e\x40-\x7e]"   # VCHAR minus "?" and "#"
_QUERY_CHAR = r"[\x21-\x22\x24-\x7e]"           # VCHAR minus "#"

# RFC 9112 §3.2.1 origin-form = absolute-path [ "?" query ]
# (a "#fragment" is not part of the grammar; like gunicorn we split it off rather than refuse it)
#   groups: path, query, fragment
ORIGIN_FORM_SRC = rf"(/{_PATH_CHAR}*)(?:\?({_QUERY_CHAR}*))?(?:#({TARGET_CHAR}*))?"
ORIGIN_FORM = re.compile(ORIGIN_FORM_SRC)

# RFC 3986 §3.2: authority = [ userinfo "@" ] host [ ":" port ]
#   unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"   (§2.3)
#   sub-delims = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="   (§2.2)
#   pct-encoded = "%" HEXDIG HEXDIG   (§2.1)
#   reg-name = *( unreserved / pct-encoded / sub-delims )   (§3.2.2)
#   IP-literal = "[" ( IPv6address / IPvFuture ) "]"   (§3.2.2; the address itself is checked
#                 loosely here: hex digits, ":" and "." for IPv6, the IPvFuture form as written)
_UNRESERVED_SUBDELIMS = r"A-Za-z0-9\-._~!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
REG_NAME_SRC = rf"[{_UNRESERVED_SUBDELIMS}]*(?:{_PCT}[{_UNRESERVED_SUBDELIMS}]*)*"
IP_LITERAL_SRC = rf"\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[{_UNRESERVED_SUBDELIMS}:]+)\]"
HOST_SRC = rf"(?:{IP_LITERAL_SRC}|{REG_NAME_SRC})"
PORT_SRC = r"[0-9]*"
USERINFO_SRC = rf"[{_UNRESERVED_SUBDELIMS}:]*(?:{_PCT}[{_UNRESERVED_SUBDELIMS}:]*)*"

# RFC 9110 §7.2 Host = uri-host [ ":" port ]  (RFC 9112 §3.2: an invalid Host value is a 400)
HOST_FIELD = re.compile(rf"{HOST_SRC}(?::{PORT_SRC})?")

# RFC 9112 §3.2.2 absolute-form = absolute-URI  (RFC 3986 §4.3, §3.1 scheme)
#   scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
# Only the hierarchical "scheme://authority" shape a proxy would forward is accepted.
#   groups: scheme, authority, path, query, fragment
ABSOLUTE_FORM = re.compile(
    rf"([A-Za-z][A-Za-z0-9+\-.]*)://((?:{USERINFO_SRC}@)?{HOST_SRC}(?::{PORT_SRC})?)"
    rf"(/{_PATH_CHAR}*)?(?:\?({_QUERY_CHAR}*))?(?:#({TARGET_CHAR}*))?")

# RFC 9112 §3.2.3 authority-form = uri-host ":" port   (CONNECT only)
AUTHORITY_FORM = re.compile(rf"{HOST_SRC}:[0-9]+")

# RFC 9112 §3.2.4 asterisk-form = "*"   (OPTIONS only)
ASTERISK_FORM = "*"

# --- RFC 9112 §3 request-line = method SP request-target SP HTTP-version -------------------------
# The fast path: a conventional method, an origin-form target, HTTP/1.0 or HTTP/1.1. Anything it
# does not match goes to the careful path, which accepts the other forms and names the error.
# (CONNECT is left to the careful path, which refuses it with an origin-form target.)
#   groups: method, target, minor
REQUEST_LINE_FAST = re.compile(
    rf"(?!CONNECT )({METHOD_CONVENTIONAL_SRC}) (/{TARGET_CHAR}*) HTTP/1\.([01])")
REQUEST_LINE_FAST_ANY_METHOD = re.compile(
    rf"(?!CONNECT )({TOKEN_SRC}) (/{TARGET_CHAR}*) HTTP/1\.([01])")

# --- RFC 9110 §5.5 field values, RFC 9112 §5 field lines ----------------------------------------
#   field-line    = field-name ":" OWS field-value OWS
#   field-name    = token                                         (RFC 9110 §5.1)
#   field-value   = *field-content
#   field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
#   field-vchar   = VCHAR / obs-text ;  obs-text = %x80-FF
#   OWS           = *( SP / HTAB )                                (RFC 9110 §5.6.3)
FIELD_VCHAR = r"[\x21-\x7e\x80-\xff]"
FIELD_VALUE_SRC = rf"(?:{FIELD_VCHAR}(?:[\t \x21-\x7e\x80-\xff]*{FIELD_VCHAR})?)?"
# One field line of the strict grammar, without its CRLF (fullmatch):  groups: name, value
FIELD_LINE = re.compile(rf"({TOKEN_SRC}):[\t ]*({FIELD_VALUE_SRC})[\t ]*")
# What may never appear in a field value: CTLs other than HTAB, and DEL (RFC 9110 §5.5: CR, LF and
# NUL "are invalid and dangerous"; the other CTLs are not field-vchar either).
FIELD_VALUE_INVALID = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
OWS = " \t"

# RFC 9110 §8.6 Content-Length = 1*DIGIT
CONTENT_LENGTH = re.compile(r"[0-9]+")

# --- RFC 9112 §2.2: every line of a head (and of a trailer section) ends with CRLF ----------------
def has_bare_lf(buf, start, end, floor):
    """True if an LF in ``buf[start:end]`` is not the end of a CRLF: a line that will not end
    the way it must. ``floor`` is where the section began: its CRs count from there, or from
    ``start - 1`` when ``start`` lies past it (the bytes before ``start`` were checked by an
    earlier call, and a CRLF may straddle ``start``)."""
    return buf.count(b"\n", start, end) != buf.count(b"\r\n", max(floor, start - 1), end)


# --- RFC 9112 §7.1 chunked transfer coding (bytes) -----------------------------------------------
#   chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
#   chunk-size = 1*HEXDIG
#   last-chunk = 1*("0") [ chunk-ext ] CRLF
#   chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )   (§7.1.1)
#   chunk-ext-name = token ; chunk-ext-val = token / quoted-string
#   quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE                     (RFC 9110 §5.6.4)
#   qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#   quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
B_TOKEN_SRC = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
B_QUOTED_STRING_SRC = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
B_CHUNK_EXT_SRC = (rb"(?:[ \t]*;[ \t]*" + B_TOKEN_SRC + rb"(?:[ \t]*=[ \t]*(?:" + B_TOKEN_SRC
                   + rb"|" + B_QUOTED_STRING_SRC + rb"))?)*")
B_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")
#   groups: size, extensions
B_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(" + B_CHUNK_EXT_SRC + rb")")

# --- RFC 9112 §6.1 Transfer-Encoding = #transfer-coding -----------------------------------------
#   transfer-coding = token *( OWS ";" OWS transfer-parameter )   (RFC 9110 §10.1.4)
TRANSFER_CODING = re.compile(rf"({TOKEN_SRC})(?:[ \t]*;.*)?", re.S)

# --- PROXY protocol (haproxy proxy-protocol.txt) --------------------------------------------------
# v1 §2.1: "PROXY" SP ( "TCP4" / "TCP6" / "UNKNOWN" ) ... CRLF, 107 bytes at most with the CRLF.
PROXY_V1_PREFIX = b"PROXY "
PROXY_V1_MAX_LINE = 107
PROXY_V1_LINE = re.compile(
    rb"PROXY (TCP4|TCP6) ([0-9A-Fa-f:.]{2,45}) ([0-9A-Fa-f:.]{2,45}) ([0-9]{1,5}) ([0-9]{1,5})")
PROXY_V1_UNKNOWN = re.compile(rb"PROXY UNKNOWN(?: [\x20-\x7e]*)?")
# v2 §2.2: a 12-byte signature, then version/command, family/protocol, a 16-bit length.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

"""The HTTP request corpus (tests/http/corpus/): every case, whole, byte by byte, random splits.

The corpus is part of the repository (its README says where each case comes from). A missing
corpus is a failure, not a skip. UNICORND_HTTP_CORPUS points elsewhere if needed.
"""
import base64
import json
import os
import random
from pathlib import Path

import pytest

from http_harness import feed, splits
from unicornd.http import errors
from unicornd.http.forwarded import AddressList, scheme_from_headers
from unicornd.http.parser import ParserOptions

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("UNICORND_HTTP_CORPUS") or HERE / "corpus")

SECURE_SCHEME_HEADERS = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                         "X-FORWARDED-SSL": "on"}

# Deliberate deviations from the corpus, one line each, with the RFC section that allows them.
DEVIATIONS = {
    # RFC 9110 §15.6.6: a well-formed version with a major we do not speak gets 505, not 400.
    "invalid/version_02": {"status": 505},
    # RFC 9112 §8: Content-Length 17914 with 8599 body bytes then EOF is an incomplete message.
    "valid/099": {"truncated": True},
    # RFC 9112 §3.2.3: authority-form has no path; path is the authority, not urlsplit's "443".
    "valid/rfc9112_target_authority_connect_01": {"path": "example.com:443"},
}


def _cases():
    cases = []
    for kind in ("valid", "invalid"):
        for js in sorted((CORPUS / kind).glob("*.json")):
            cases.append(f"{kind}/{js.stem}")
    return cases


# no corpus: each parametrised test fails on this placeholder (an empty set would be skipped)
CASES = _cases() if CORPUS.is_dir() else ["corpus-missing"]


def test_corpus_is_present():
    assert CORPUS.is_dir(), f"HTTP corpus not found at {CORPUS} (set UNICORND_HTTP_CORPUS)"
    assert len(CASES) >= 143, f"expected the 143 corpus cases, found {len(CASES)}"


def load(case):
    spec = json.loads((CORPUS / f"{case}.json").read_text())
    data = (CORPUS / f"{case}.bin").read_bytes()
    return spec, data


def options(settings):
    kw = {k: v for k, v in settings.items() if k != "forwarded_allow_ips"}
    return ParserOptions(**kw)


def expected_requests(spec, case):
    dev = DEVIATIONS.get(case, {})
    out = []
    for r in spec["requests"]:
        out.append({
            "method": r["method"], "target": r["target"], "path": dev.get("path", r["path"]),
            "query": r["query"], "fragment": r["fragment"], "version": r["version"],
            "headers": r["headers"], "body": base64.b64decode(r["body_base64"]),
            "trailers": r.get("trailers", []),
        })
    return out


def check(case, pieces):
    spec, _ = load(case)
    opts = options(spec["settings"])
    dev = DEVIATIONS.get(case, {})
    out = feed(pieces, opts)

    if spec["outcome"] == "accept":
        want = expected_requests(spec, case)
        got = [m.as_dict() for m in out.messages]
        if dev.get("truncated"):
            assert isinstance(out.error, errors.NoMoreData), out.error
            assert out.error.status is None
            assert got == want
            return
        assert out.error is None, f"{case}: refused with {out.error!r}"
        assert got == want
        for m in out.messages:
            assert m.trailers is not None, "message not complete"
        assert out.closed or out.stopped
        return

    # reject
    want_status = dev.get("status", spec["status"])
    if "forwarded_allow_ips" in spec["settings"]:
        # the head parses; the contradiction is found where the trusted scheme is read
        assert out.error is None, out.error
        allow = AddressList(spec["settings"]["forwarded_allow_ips"])
        assert allow.allows(("203.0.113.7", 40000))
        with pytest.raises(errors.HTTPError) as info:
            for m in out.messages:
                scheme_from_headers(m.request.headers, SECURE_SCHEME_HEADERS)
        exc = info.value
    else:
        assert out.error is not None, f"{case}: accepted {[m.as_dict() for m in out.messages]}"
        exc = out.error
    assert isinstance(exc, errors.HTTPError)
    assert exc.status == want_status, f"{case}: {exc!r} status {exc.status}, want {want_status}"
    if want_status is None:
        assert isinstance(exc, errors.NoMoreData)
    # and it carries the corpus's (gunicorn's) name
    if case not in DEVIATIONS:
        assert type(exc).__name__ == spec["error"]


@pytest.mark.parametrize("case", CASES)
def test_whole(case):
    _, data = load(case)
    check(case, [data])


@pytest.mark.parametrize("case", CASES)
def test_byte_by_byte(case):
    _, data = load(case)
    check(case, [data[i:i + 1] for i in range(len(data))])


@pytest.mark.parametrize("case", CASES)
def test_random_splits(case):
    _, data = load(case)
    rng = random.Random(f"unicornd:{case}")
    for pieces in splits(data, rng, 8):
        assert b"".join(pieces) == data
        check(case, pieces)

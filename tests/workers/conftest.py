"""tests/workers: the end-to-end helpers of tests/server on sys.path, and the fixture that runs
the shared behavioural suite once per worker class (workers_support.WORKER_CLASSES)."""

import sys
from pathlib import Path

import pytest

SERVER_TESTS = Path(__file__).resolve().parents[1] / "server"
if str(SERVER_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVER_TESTS))

from workers_support import WORKER_CLASSES  # noqa: E402


@pytest.fixture(scope="module", params=list(WORKER_CLASSES))
def worker_class(request):
    return request.param

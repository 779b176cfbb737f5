import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for p in (REPO / "fuzz", REPO / "tests" / "server"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

"""The endpoint catalogue (shared/src/catalogue.rs) as the checks read it: `endpoints.json`.

The Rust unit test `catalogue::tests::given_the_committed_endpoints_json_then_it_is_the_catalogue`
fails when the file and the Rust table differ, so reading the JSON here is reading the code.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "endpoints.json"


def endpoints() -> list[dict]:
    """Every endpoint of the catalogue, in its order."""
    return json.loads(CATALOGUE.read_text())["endpoints"]


def routes_of(function: str) -> set[str]:
    """The routes a function serves."""
    return {e["route"] for e in endpoints() if e["function"] == function}

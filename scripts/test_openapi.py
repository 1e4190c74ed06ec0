"""openapi.yaml against the code it describes.

    .venv/bin/python -m unittest scripts/test_openapi.py        (from the repository root)

- The document is a valid OpenAPI 3.1 document (openapi-spec-validator).
- Its operations are exactly the API's, counted four ways: the local router in Cargo.toml
  (`[workspace.metadata.lambda.watch.router]`, less the catch-all), the template's API events,
  and each function's `ENDPOINT` (route and methods, plus the OPTIONS preflight that the
  pipeline answers on every route). A route or method added, removed or renamed in any one of
  them fails.
- Each operation's `x-policy` and `security` are the function's: the rate limits and body limit
  of `shared/src/config.rs`'s defaults table, per-user limits, the store-failure mode, bearer
  authentication and CSRF.
- Every problem type the code can answer (`ApiError::slug` in shared/src/error.rs) is in the
  document's Problem schema, and the schema names no other.
"""

from __future__ import annotations

import re
import sys
import tomllib
import unittest
from pathlib import Path

import yaml
from openapi_spec_validator import validate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_template import load_template  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "openapi.yaml"
CATCH_ALL = "/{*path}"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace", "query"}


def load_document() -> dict:
    return yaml.safe_load(DOCUMENT.read_text())


def document_operations(doc: dict) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def router() -> dict[str, str]:
    """Path -> function of the local router."""
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    routes = cargo["workspace"]["metadata"]["lambda"]["watch"]["router"]
    return {path: function for path, function in routes.items() if path != CATCH_ALL}


def template_events() -> dict[str, tuple[str, str]]:
    """Path -> (function binary, method) of every API event in template.yaml."""
    out = {}
    for resource in load_template()["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        binary = resource["Metadata"]["BuildProperties"]["Binary"]
        for event in resource["Properties"].get("Events", {}).values():
            if event.get("Type") != "Api":
                continue
            props = event["Properties"]
            assert props["Path"] not in out, f"{props['Path']} has two functions in the template"
            out[props["Path"]] = (binary, props["Method"])
    return out


def rust_source(path: Path) -> str:
    """Source without comments and without its test module."""
    text = path.read_text()
    text = text.split("#[cfg(test)]")[0]
    return re.sub(r"//[^\n]*", "", text)


def endpoints() -> dict[str, dict]:
    """Function -> its `ENDPOINT` policy, read from functions/<name>/src/handler.rs."""
    out = {}
    for handler in sorted(ROOT.glob("functions/*/src/handler.rs")):
        text = rust_source(handler)
        m = re.search(r"const ENDPOINT: Endpoint = Endpoint \{(.*?)\n\};", text, re.S)
        assert m, f"{handler}: no ENDPOINT"
        body = m.group(1)

        def field(name: str) -> str:
            f = re.search(rf"\b{name}: (&\[[^\]]*\]|[^,\n]+),", body)
            assert f, f"{handler}: ENDPOINT has no {name}"
            return f.group(1).strip()

        out[handler.parent.parent.name] = {
            "name": field("name").strip('"'),
            "route": field("route").strip('"'),
            "methods": set(re.findall(r"Method::([A-Z]+)", field("methods"))),
            "auth": field("auth") == "true",
            "csrf": field("csrf") == "true",
            "per_user": field("per_user_limit") == "true",
            "store_failure": field("store_failure").split("::")[-1].lower(),
        }
    return out


def default_limits() -> dict[str, tuple[int, int | None, int]]:
    """Endpoint name -> (per minute, burst, body bytes) from config.rs's defaults table."""
    text = rust_source(ROOT / "shared/src/config.rs")
    kib = int(re.search(r"const KIB: usize = (\d+)", text).group(1))
    out = {}
    for name, minute, burst, body in re.findall(
        r'\("([a-z-]+)", limits\((\d+), (Some\(\d+\)|None), ([0-9 *A-Z]+)\)\)', text
    ):
        size = eval(body.replace("KIB", str(kib)), {"__builtins__": {}})  # digits, * and KIB only
        out[name] = (int(minute), int(burst[5:-1]) if burst != "None" else None, size)
    assert out, "no defaults table found in shared/src/config.rs"
    return out


def problem_slugs() -> set[str]:
    text = rust_source(ROOT / "shared/src/error.rs")
    m = re.search(r"pub fn slug\(&self\) -> &'static str \{(.*?)\n    \}", text, re.S)
    assert m, "ApiError::slug not found"
    return set(re.findall(r'=> "([a-z-]+)"', m.group(1)))


class DocumentTest(unittest.TestCase):
    def test_the_document_is_valid_openapi_3_1(self):
        doc = load_document()
        self.assertTrue(doc["openapi"].startswith("3.1."))
        validate(doc)

    def test_every_route_of_the_router_is_in_the_document_and_back(self):
        doc_paths = {path for path, _ in document_operations(load_document())}
        self.assertEqual(set(router()), doc_paths)

    def test_every_api_event_of_the_template_is_in_the_document_and_back(self):
        events = template_events()
        self.assertEqual(set(events), {p for p, _ in document_operations(load_document())})
        routes = router()
        for path, (binary, method) in events.items():
            self.assertEqual(method, "ANY", f"{path}: the function answers every method itself")
            self.assertEqual(binary, routes[path], f"{path}: the template and router disagree")

    def test_every_function_endpoint_is_in_the_document_and_back(self):
        ops = document_operations(load_document())
        declared = set()
        routes = router()
        for function, e in endpoints().items():
            self.assertEqual(routes.get(e["route"]), function, f"{function} serves {e['route']}")
            declared |= {(e["route"], m) for m in e["methods"]}
            declared.add((e["route"], "OPTIONS"))  # the pipeline's CORS preflight
        self.assertEqual(declared, ops)

    def test_each_operation_states_its_functions_policy(self):
        doc = load_document()
        limits = default_limits()
        for function, e in endpoints().items():
            for method in e["methods"]:
                op = doc["paths"][e["route"]][method.lower()]
                label = f"{method} {e['route']}"
                policy = op["x-policy"]
                minute, burst, body = limits[e["name"]]
                self.assertEqual(policy["per_minute"], minute, label)
                self.assertEqual(policy["burst_per_10s"], burst, label)
                self.assertEqual(policy["body_limit_bytes"], body, label)
                self.assertEqual(policy["per_user"], e["per_user"], label)
                self.assertEqual(policy["rate_limit_store_failure"], e["store_failure"], label)
                schemes = {name for req in op.get("security", []) for name in req}
                self.assertEqual("bearerAuth" in schemes, e["auth"], f"{label}: bearer auth")
                self.assertEqual("csrfToken" in schemes, e["csrf"], f"{label}: CSRF")
                if e["auth"]:
                    self.assertIn("401", op["responses"], label)
                if body:
                    self.assertIn("413", op["responses"], label)
                    self.assertIn("415", op["responses"], label)

    def test_every_problem_type_of_the_code_is_in_the_problem_schema_and_back(self):
        doc = load_document()
        enum = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
        slugs = problem_slugs()
        self.assertGreaterEqual(len(slugs), 15)
        self.assertEqual({f"/problems/{s}" for s in slugs}, set(enum))


if __name__ == "__main__":
    unittest.main()

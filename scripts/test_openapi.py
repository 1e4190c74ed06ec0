"""openapi.yaml against the code it describes.

    .venv/bin/python -m unittest scripts/test_openapi.py        (from the repository root)

- The document is a valid OpenAPI 3.1 document (openapi-spec-validator).
- Its operations are exactly the API's, counted four ways: the endpoint catalogue
  (`endpoints.json`, written from shared/src/catalogue.rs: route and methods, plus the OPTIONS
  preflight that the pipeline answers on every route), the local router in Cargo.toml
  (`[workspace.metadata.lambda.watch.router]`, less the catch-all) and the template's API
  events. A route, method or function added, removed or renamed in any one of them fails,
  naming both sides.
- Each operation's `x-policy` and `security` are the catalogue's: the rate limits and body
  limit, per-user limits, the store-failure mode, bearer authentication and CSRF.
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
from catalogue import endpoints  # noqa: E402
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

    def test_the_router_serves_each_catalogue_route_with_its_function(self):
        catalogue = {e["route"]: e["function"] for e in endpoints()}
        routes = router()
        for path in sorted(set(catalogue) | set(routes)):
            self.assertEqual(
                routes.get(path),
                catalogue.get(path),
                f"{path}: Cargo.toml's router says {routes.get(path)!r}, endpoints.json says {catalogue.get(path)!r}",
            )

    def test_every_route_of_the_router_is_in_the_document_and_back(self):
        doc_paths = {path for path, _ in document_operations(load_document())}
        for path in sorted(set(router()) ^ doc_paths):
            side = "Cargo.toml's router" if path in router() else "openapi.yaml"
            self.fail(f"{path} is only in {side}")

    def test_every_api_event_of_the_template_is_in_the_catalogue_and_back(self):
        events = template_events()
        catalogue = {e["route"]: e["function"] for e in endpoints()}
        for path in sorted(set(events) | set(catalogue)):
            binary = events.get(path, (None,))[0]
            self.assertEqual(
                binary,
                catalogue.get(path),
                f"{path}: template.yaml routes it to {binary!r}, endpoints.json to {catalogue.get(path)!r}",
            )
        for path, (_, method) in events.items():
            self.assertEqual(method, "ANY", f"{path}: the function answers every method itself")

    def test_every_catalogue_operation_is_in_the_document_and_back(self):
        ops = document_operations(load_document())
        declared = set()
        for e in endpoints():
            declared |= {(e["route"], m) for m in e["methods"]}
            declared.add((e["route"], "OPTIONS"))  # the pipeline's CORS preflight
        for path, method in sorted(declared - ops):
            self.fail(f"{method} {path} is in endpoints.json but not in openapi.yaml")
        for path, method in sorted(ops - declared):
            self.fail(f"{method} {path} is in openapi.yaml but not in endpoints.json")

    def test_each_operation_states_its_catalogue_policy(self):
        doc = load_document()
        for e in endpoints():
            for method in e["methods"]:
                op = doc["paths"][e["route"]][method.lower()]
                label = f"{method} {e['route']}: openapi.yaml vs endpoints.json"
                policy = op["x-policy"]
                self.assertEqual(policy["per_minute"], e["per_minute"], label)
                self.assertEqual(policy["burst_per_10s"], e["burst_per_10s"], label)
                self.assertEqual(policy["body_limit_bytes"], e["body_bytes"], label)
                self.assertEqual(policy["per_user"], e["per_user"], label)
                self.assertEqual(policy["rate_limit_store_failure"], e["store_failure"], label)
                schemes = {name for req in op.get("security", []) for name in req}
                self.assertEqual("bearerAuth" in schemes, e["auth"], f"{label}: bearer auth")
                self.assertEqual("csrfToken" in schemes, e["csrf"], f"{label}: CSRF")
                if e["auth"]:
                    self.assertIn("401", op["responses"], label)
                if e["body_bytes"]:
                    self.assertIn("413", op["responses"], label)
                    self.assertIn("415", op["responses"], label)

    def test_the_readme_endpoint_table_is_the_catalogue(self):
        rows = re.findall(r"^\| `([A-Z]+) (/api/[^`]+)` \| `([a-z-]+)` \| ([^|]+) \| ([^|]+) \|", (ROOT / "README.md").read_text(), re.M)
        readme = {(m, path): (fn, auth.strip().startswith("Bearer"), csrf.strip() == "required") for m, path, fn, auth, csrf in rows}
        catalogue = {
            (m, e["route"]): (e["function"], e["auth"], e["csrf"]) for e in endpoints() for m in e["methods"]
        }
        for op in sorted(set(readme) | set(catalogue)):
            self.assertEqual(
                readme.get(op), catalogue.get(op),
                f"{op[0]} {op[1]}: README.md's table says (function, bearer, CSRF) = {readme.get(op)}, endpoints.json {catalogue.get(op)}",
            )

    def test_every_problem_type_of_the_code_is_in_the_problem_schema_and_back(self):
        doc = load_document()
        enum = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
        slugs = problem_slugs()
        self.assertGreaterEqual(len(slugs), 15)
        self.assertEqual({f"/problems/{s}" for s in slugs}, set(enum))


if __name__ == "__main__":
    unittest.main()

"""Drift test: template.yaml against the code it deploys.

    .venv/bin/python -m unittest scripts/test_template.py        (from the repository root)

For every function of the template whose crate exists (functions/<Binary>), the test derives
from the Rust sources what the function needs, and compares it with what the template gives it:

- DynamoDB: which stores the crate constructs (directly, or through a shared factory such as
  `runtime::limiter`), the table each store is built on (`config.tables.<field>`, whose variable
  comes from `shared/src/config.rs`), which store methods are called, and the SDK calls each of
  those methods makes (`.update_item()`, `.transact_write_items()` with its Put/Update/Delete
  items, ...) mapped to IAM actions. The function's policy must grant exactly those actions on
  exactly those tables: a missing grant fails, and so does a grant the code does not use.
- Secrets: the `Need::` values the crate declares, the secrets of shared components it builds
  (such as `Sessions`, which reads JWT_SECRET_KEY, JWT_SECRET_KEY_PREVIOUS and CSRF_SECRET_KEY),
  `config.<secret field>` reads and secret variable names used as literals. The function's
  environment must hold exactly those, each as a Secrets Manager dynamic reference.

Functions of the template whose crate does not exist yet are skipped, with a message. The
analysis is static (regular expressions over comment-free, test-free sources); when it meets
something it cannot classify (an unmapped store or SDK call), it fails rather than guess.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import unittest
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"

# ------------------------------------------------------------------------------------------------
# The data the analysis needs. Add a store here when the code gains one.
# ------------------------------------------------------------------------------------------------

# Store type -> where it is implemented, the variable naming its table, and where its methods
# are called from: None for the function's own crate, or shared files that call the store on
# the function's behalf (the rate limiter calls its store; the function never does).
STORES = {
    "DynamoRateLimitStore": {
        "source": "shared/src/store/dynamodb.rs",
        "table_env": "RATE_LIMIT_TABLE",
        "callers": ["shared/src/ratelimit/mod.rs"],
    },
    "DynamoUserStore": {
        "source": "shared/src/accounts/dynamodb.rs",
        "table_env": "USERS_TABLE",
        "callers": None,
    },
    "DynamoLedger": {
        "source": "shared/src/payments/dynamodb.rs",
        "table_env": "PAYMENTS_TABLE",
        "callers": None,
    },
    "DynamoCustomers": {
        "source": "shared/src/payments/customers.rs",
        "table_env": "USERS_TABLE",
        "callers": None,
    },
}

# Secrets that are not (yet) fields of Config: found as literals in a function's crate.
EXTRA_SECRET_VARS = {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "AI_API_KEY"}

# Secrets passed only when a template condition holds (a rotation in progress).
OPTIONAL_SECRETS = {"JWT_SECRET_KEY_PREVIOUS": "HasJwtPreviousKey"}

# aws-sdk-dynamodb client operations -> the IAM actions that authorise them. Transactions are
# authorised by the item actions inside them (there is no dynamodb:TransactWriteItems action).
SDK_ACTIONS = {
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    "batch_get_item": {"dynamodb:BatchGetItem"},
    "batch_write_item": {"dynamodb:BatchWriteItem"},
    "transact_write_items": "transaction",
    "transact_get_items": "transaction",
}
TRANSACTION_ITEMS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}
NOT_OPERATIONS = {"clone", "config"}

SECRET_REF = re.compile(
    r"^\{\{resolve:secretsmanager:\$\{SecretsPrefix\}/\$\{Environment\}/([a-z0-9-]+):SecretString\}\}$"
)


class AnalysisError(AssertionError):
    """The code has a shape the analysis does not understand; fix the code or STORES."""


# ------------------------------------------------------------------------------------------------
# Rust sources
# ------------------------------------------------------------------------------------------------

_CHAR_LITERAL = re.compile(r"'(?:\\u\{[0-9A-Fa-f]+\}|\\.|[^\\'\n])'")


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


class RustSource:
    """A Rust file with comments removed (`code`) and, for structure, string contents blanked
    too (`masked`); both keep every offset, and `#[cfg(test)]` items are removed from both."""

    def __init__(self, text: str, path: str = "<memory>"):
        self.path = path
        code, masked = self._lex(text)
        self.code, self.masked = self._strip_tests(code, masked)

    @classmethod
    def load(cls, relative: str) -> "RustSource":
        return cls((ROOT / relative).read_text(encoding="utf-8"), relative)

    @staticmethod
    def _lex(text: str) -> tuple[str, str]:
        code, masked = [], []
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if text.startswith("//", i):
                j = text.find("\n", i)
                j = n if j < 0 else j
                code.append(_blank(text[i:j]))
                masked.append(_blank(text[i:j]))
                i = j
            elif text.startswith("/*", i):
                depth, j = 1, i + 2
                while j < n and depth:
                    if text.startswith("/*", j):
                        depth, j = depth + 1, j + 2
                    elif text.startswith("*/", j):
                        depth, j = depth - 1, j + 2
                    else:
                        j += 1
                code.append(_blank(text[i:j]))
                masked.append(_blank(text[i:j]))
                i = j
            elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
                close = '"' + m.group(1)
                start = i + m.end()
                j = text.find(close, start)
                j = n if j < 0 else j + len(close)
                code.append(text[i:j])
                masked.append(text[i:start] + _blank(text[start:j - len(close)]) + close)
                i = j
            elif c == '"':
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                j = min(j + 1, n)
                code.append(text[i:j])
                masked.append('"' + _blank(text[i + 1:j - 1]) + '"')
                i = j
            elif c == "'" and (m := _CHAR_LITERAL.match(text, i)):
                code.append(m.group(0))
                masked.append("'" + _blank(m.group(0)[1:-1]) + "'")
                i = m.end()
            else:
                code.append(c)
                masked.append(c)
                i += 1
        return "".join(code), "".join(masked)

    @staticmethod
    def _strip_tests(code: str, masked: str) -> tuple[str, str]:
        for m in reversed(list(re.finditer(r"#\[cfg\(test\)\]", masked))):
            start, i = m.start(), m.end()
            while True:  # further attributes of the same item
                a = re.compile(r"\s*#\[").match(masked, i)
                if not a:
                    break
                i = matching(masked, masked.index("[", a.start()), "[", "]") + 1
            brace, semi = masked.find("{", i), masked.find(";", i)
            if brace >= 0 and (semi < 0 or brace < semi):
                end = matching(masked, brace) + 1
            else:
                end = semi + 1
            code = code[:start] + _blank(code[start:end]) + code[end:]
            masked = masked[:start] + _blank(masked[start:end]) + masked[end:]
        return code, masked

    def functions(self) -> dict[str, list[str]]:
        """Every `fn` with a body: name -> bodies (the masked text between its braces)."""
        found: dict[str, list[str]] = {}
        for m in re.finditer(r"\bfn\s+(\w+)\s*(?:<[^{;]*?>)?\s*\(", self.masked):
            close = matching(self.masked, m.end() - 1, "(", ")")
            brace, semi = self.masked.find("{", close), self.masked.find(";", close)
            if brace < 0 or (0 <= semi < brace):
                continue
            found.setdefault(m.group(1), []).append(self.masked[brace:matching(self.masked, brace) + 1])
        return found

    def impl_of(self, type_name: str) -> tuple[str, str]:
        """The trait implemented for `type_name` and the body of that impl block."""
        m = re.search(r"\bimpl(?:\s*<[^{]*?>)?\s+((?:\w+::)*(\w+))\s+for\s+" + re.escape(type_name) + r"\s*\{", self.masked)
        if not m:
            raise AnalysisError(f"{self.path}: no `impl <Trait> for {type_name}` block")
        brace = m.end() - 1
        return m.group(2), self.masked[brace:matching(self.masked, brace) + 1]

    def literals(self) -> set[str]:
        return {m.group(1) for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', self.code)}


def matching(text: str, open_at: int, opening: str = "{", closing: str = "}") -> int:
    """Offset of the bracket closing the one at `open_at` (in masked text)."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            depth -= 1
            if depth == 0:
                return i
    raise AnalysisError(f"unbalanced {opening}{closing} at offset {open_at}")


def call_args(masked: str, code: str, after: int) -> str:
    """The (comment-free) argument text of the call whose `(` is at or after `after`."""
    open_at = masked.index("(", after)
    return code[open_at + 1:matching(masked, open_at, "(", ")")]


def crate_sources(crate: Path) -> list[RustSource]:
    return [RustSource(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT))) for p in sorted((crate / "src").rglob("*.rs"))]


def shared_sources() -> dict[str, RustSource]:
    return {str(p.relative_to(ROOT)): RustSource.load(str(p.relative_to(ROOT))) for p in sorted((ROOT / "shared/src").rglob("*.rs"))}


# ------------------------------------------------------------------------------------------------
# What the code needs
# ------------------------------------------------------------------------------------------------


@dataclass
class Config:
    """Facts from shared/src/config.rs."""

    table_vars: dict[str, str]  # Tables field -> variable
    need_vars: dict[str, str]  # Need variant -> variable
    secret_fields: dict[str, str]  # Config field holding a secret -> variable

    @classmethod
    def read(cls) -> "Config":
        src = RustSource.load("shared/src/config.rs")
        init = re.search(r"\btables\s*:\s*Tables\s*\{", src.masked)
        if not init:
            raise AnalysisError("shared/src/config.rs: no `tables: Tables { ... }` initialiser")
        body = src.code[init.end() - 1:matching(src.masked, init.end() - 1) + 1]
        table_vars = dict(re.findall(r'(\w+)\s*:\s*get\(\s*"([A-Z0-9_]+)"\s*\)', body))
        impl_need = re.search(r"\bimpl\s+Need\s*\{", src.masked)
        if not impl_need:
            raise AnalysisError("shared/src/config.rs: no `impl Need` block")
        body = src.code[impl_need.end() - 1:matching(src.masked, impl_need.end() - 1) + 1]
        need_vars = dict(re.findall(r'Self::(\w+)\s*=>\s*"([A-Z0-9_]+)"', body))
        secret_fields = {}
        for m in re.finditer(r'(?:\blet\s+(\w+)\s*=|\b(\w+)\s*:)\s*optional_secret\s*\(\s*&?\s*get\s*,\s*"([A-Z0-9_]+)"', src.code):
            secret_fields[m.group(1) or m.group(2)] = m.group(3)
        for m in re.finditer(r'\b(\w+)\s*:\s*get\(\s*"([A-Z0-9_]+)"\s*\)[^,;]*\bSecret\b', src.code):
            secret_fields[m.group(1)] = m.group(2)
        if not table_vars or not need_vars or not secret_fields:
            raise AnalysisError("shared/src/config.rs: tables, Need or secrets not found")
        return cls(table_vars, need_vars, secret_fields)

    @property
    def secret_vars(self) -> set[str]:
        return set(self.need_vars.values()) | set(self.secret_fields.values()) | EXTRA_SECRET_VARS


def transaction_actions(text: str) -> set[str]:
    items = set(re.findall(r"\b(Put|Update|Delete|ConditionCheck|Get)::builder\s*\(", text))
    items |= {
        {"put": "Put", "update": "Update", "delete": "Delete", "condition_check": "ConditionCheck", "get": "Get"}[w]
        for w in re.findall(r"\bTransact(?:Write|Get)Item::builder\s*\(\s*\)\s*\.\s*(put|update|delete|condition_check|get)\s*\(", text)
    }
    return {TRANSACTION_ITEMS[i] for i in items}


def actions_of(text: str, where: str) -> set[str]:
    """IAM actions of the DynamoDB client calls in `text` (masked Rust)."""
    actions: set[str] = set()
    for op in re.findall(r"\bclient\s*\.\s*([a-z_]+)\s*\(\s*\)", text):
        if op in NOT_OPERATIONS:
            continue
        mapped = SDK_ACTIONS.get(op)
        if mapped is None:
            raise AnalysisError(f"{where}: DynamoDB call `.{op}()` is not in SDK_ACTIONS")
        if mapped == "transaction":
            items = transaction_actions(text)
            if not items:
                raise AnalysisError(f"{where}: `.{op}()` with no recognisable Put/Update/Delete/ConditionCheck/Get items")
            actions |= items
        else:
            actions |= mapped
    return actions


def store_methods(store: str) -> tuple[str, dict[str, set[str]]]:
    """The trait a store implements and, per trait method, the IAM actions it needs (following
    calls into other functions of the same file)."""
    src = RustSource.load(STORES[store]["source"])
    trait, impl_body = src.impl_of(store)
    helpers = src.functions()
    methods = RustSource.__new__(RustSource)
    methods.masked = impl_body
    result = {}
    for name, bodies in methods.functions().items():
        seen, todo, text = {name}, list(bodies), []
        while todo:
            body = todo.pop()
            text.append(body)
            for callee in re.findall(r"\b(\w+)\s*\(", body):
                if callee in helpers and callee not in seen:
                    seen.add(callee)
                    todo.extend(helpers[callee])
        result[name] = actions_of("\n".join(text), f"{STORES[store]['source']} {store}::{name}")
    return trait, result


def called_methods(sources: list[RustSource], trait: str, store: str, methods: set[str]) -> set[str]:
    """Trait methods called on a receiver typed with `trait` (or holding a new `store`)."""
    called = set()
    for src in sources:
        receivers = set(re.findall(r"\b(\w+)\s*:\s*[^,;=(){}]*?\b" + re.escape(trait) + r"\b", src.masked))
        receivers |= set(re.findall(r"\blet\s+(?:mut\s+)?(\w+)\s*=[^;]*\b" + re.escape(store) + r"::new\b", src.masked))
        for recv in receivers:
            for method in re.findall(r"\b" + re.escape(recv) + r"\s*\.\s*(\w+)\s*\(", src.masked):
                if method in methods:
                    called.add(method)
    return called


@dataclass
class Needs:
    tables: dict[str, set[str]] = field(default_factory=dict)  # table variable -> IAM actions
    secrets: set[str] = field(default_factory=set)


def factories(shared: dict[str, RustSource]) -> dict[tuple[str, str], tuple[str, str, str]]:
    """Shared functions that construct a Dynamo store: (module, fn) -> (store, file, args)."""
    found = {}
    for path, src in shared.items():
        module = Path(path).stem if Path(path).stem not in ("mod", "lib") else Path(path).parent.name
        for m in re.finditer(r"\bpub\s+(?:async\s+)?fn\s+(\w+)", src.masked):
            brace = src.masked.find("{", m.end())
            body_end = matching(src.masked, brace)
            for s in re.finditer(r"\b(Dynamo\w+)::new\s*\(", src.masked[brace:body_end]):
                at = brace + s.start()
                found[(module, m.group(1))] = (s.group(1), path, call_args(src.masked, src.code, at))
    return found


def derive_needs(crate: Path, config: Config | None = None, shared: dict[str, RustSource] | None = None) -> Needs:
    config = config or Config.read()
    shared = shared if shared is not None else shared_sources()
    sources = crate_sources(crate)
    needs = Needs()

    # Stores: constructed in the crate, or by a shared factory the crate calls.
    built: list[tuple[str, str, str]] = []  # (store, args, where)
    for src in sources:
        for m in re.finditer(r"\b(Dynamo\w+)::new\s*\(", src.masked):
            built.append((m.group(1), call_args(src.masked, src.code, m.start()), src.path))
    for (module, fn), (store, path, args) in factories(shared).items():
        for src in sources:
            imported = re.search(r"\buse\s+[^;]*\b" + module + r"::(?:\{[^}]*\b" + fn + r"\b[^}]*\}|" + fn + r"\b)", src.masked)
            pattern = r"\b" + module + r"::" + fn + r"\s*\(" + (r"|(?<![\w:.])" + fn + r"\s*\(" if imported else "")
            if re.search(pattern, src.masked):
                built.append((store, args, f"{src.path} via {path} {module}::{fn}"))
    for store, args, where in built:
        if store not in STORES:
            raise AnalysisError(f"{where}: constructs {store}, which STORES in scripts/test_template.py does not map")
        fields = re.findall(r"\btables\s*\.\s*(\w+)", args)
        if len(set(fields)) != 1:
            raise AnalysisError(f"{where}: cannot tell the table of {store}::new({args.strip()})")
        var = config.table_vars.get(fields[0])
        if var != STORES[store]["table_env"]:
            raise AnalysisError(f"{where}: {store} is built on tables.{fields[0]} ({var}), STORES says {STORES[store]['table_env']}")
        trait, methods = store_methods(store)
        callers = STORES[store]["callers"]
        caller_sources = sources if callers is None else [shared[c] for c in callers]
        used = called_methods(caller_sources, trait, store, set(methods))
        if not used:
            raise AnalysisError(f"{where}: builds {store} but no call of a {trait} method was found")
        actions = set().union(*(methods[m] for m in used))
        needs.tables.setdefault(var, set()).update(actions)

    # Secrets: Need values, shared components built with them, config fields and literals.
    def secrets_in(src: RustSource) -> set[str]:
        found = {config.need_vars[n] for n in re.findall(r"\bNeed::(\w+)", src.masked) if n in config.need_vars}
        found |= {config.secret_fields[f] for f in re.findall(r"\bconfig\s*\.\s*(\w+)", src.masked) if f in config.secret_fields}
        found |= src.literals() & config.secret_vars
        return found

    structs = {}
    for path, src in shared.items():
        if path == "shared/src/config.rs":
            continue
        for name in re.findall(r"\bpub\s+struct\s+(\w+)", src.masked):
            structs[name] = src
    for src in sources:
        needs.secrets |= secrets_in(src)
        for type_name in set(re.findall(r"\b([A-Z]\w*)::\w+\s*\(", src.masked)):
            if type_name in structs:
                needs.secrets |= secrets_in(structs[type_name])
    return needs


# ------------------------------------------------------------------------------------------------
# What the template gives
# ------------------------------------------------------------------------------------------------


# The same reader of CloudFormation short-form tags as the local table creation.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from create_tables import CfnLoader  # noqa: E402


def _normalise(value):
    if isinstance(value, dict):
        return {(k[5:] if k.startswith("Fn::") else k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def load_template(path: Path = TEMPLATE) -> dict:
    with open(path, encoding="utf-8") as f:
        return _normalise(yaml.load(f, Loader=CfnLoader))


def functions_of(template: dict) -> dict[str, str]:
    """Binary (crate) name -> logical id of every function."""
    out = {}
    for logical, res in template["Resources"].items():
        if res.get("Type") == "AWS::Serverless::Function":
            out[res["Metadata"]["BuildProperties"]["Binary"]] = logical
    return out


def environment(template: dict, logical: str) -> dict:
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    props = template["Resources"][logical]["Properties"]
    env.update(props.get("Environment", {}).get("Variables", {}))
    return env


def table_of_var(template: dict) -> dict[str, str]:
    """Table variable -> logical table, from Globals (the contract create_tables.py reads)."""
    out = {}
    for var, value in template["Globals"]["Function"]["Environment"]["Variables"].items():
        if isinstance(value, dict) and "Ref" in value:
            res = template["Resources"].get(value["Ref"], {})
            if res.get("Type") == "AWS::DynamoDB::Table":
                out[var] = value["Ref"]
    return out


def secret_reference(value) -> tuple[str | None, str | None]:
    """(secret name, condition) when `value` is a Secrets Manager reference, else (None, None)."""
    condition = None
    if isinstance(value, dict) and "If" in value:
        condition, present, absent = value["If"]
        if absent != {"Ref": "AWS::NoValue"}:
            return None, None
        value = present
    text = value.get("Sub") if isinstance(value, dict) else value
    if isinstance(text, str) and "{{resolve:secretsmanager:" in text:
        m = SECRET_REF.match(text)
        return (m.group(1) if m else "<malformed>"), condition
    return None, None


def _arn_table(resource) -> str | None:
    if isinstance(resource, dict) and "GetAtt" in resource:
        target = resource["GetAtt"]
        parts = target.split(".") if isinstance(target, str) else target
        if len(parts) == 2 and parts[1] == "Arn":
            return parts[0]
    # A table's index: !Sub "${Table.Arn}/index/<name>" (Query on a global secondary index).
    if isinstance(resource, dict) and isinstance(resource.get("Sub"), str):
        m = re.fullmatch(r"\$\{(\w+)\.Arn\}/index/[A-Za-z0-9_.-]+", resource["Sub"])
        if m:
            return m.group(1)
    return None


def granted(template: dict, logical: str) -> tuple[dict[str, set[str]], list[str]]:
    """Logical table -> actions the function's policies allow, and problems with the policies."""
    grants: dict[str, set[str]] = {}
    problems = []
    for policy in template["Resources"][logical]["Properties"].get("Policies", []):
        if not isinstance(policy, dict) or set(policy) - {"Version", "Statement"}:
            problems.append(f"policy {policy!r} is not an inline statement list (no managed policies or SAM policy templates)")
            continue
        for st in policy["Statement"]:
            actions = st.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            resources = st.get("Resource", [])
            resources = resources if isinstance(resources, list) else [resources]
            if st.get("Effect") != "Allow" or "NotAction" in st or "NotResource" in st or "Condition" in st:
                problems.append(f"statement {st.get('Sid')!r}: only plain Allow statements are expected")
                continue
            for action in actions:
                if "*" in action or not action.startswith("dynamodb:"):
                    problems.append(f"statement {st.get('Sid')!r}: action {action!r} is not an exact DynamoDB action")
            for resource in resources:
                table = _arn_table(resource)
                if table is None or template["Resources"].get(table, {}).get("Type") != "AWS::DynamoDB::Table":
                    problems.append(f"statement {st.get('Sid')!r}: resource {resource!r} is not a table's Arn")
                    continue
                grants.setdefault(table, set()).update(a for a in actions if a.startswith("dynamodb:") and "*" not in a)
    return grants, problems


def drift(template: dict, binary: str, needs: Needs, config: Config) -> list[str]:
    """Every difference between what the code needs and what the template gives `binary`."""
    logical = functions_of(template)[binary]
    problems = []
    tables = table_of_var(template)
    expected: dict[str, set[str]] = {}
    for var, actions in needs.tables.items():
        if var not in tables:
            problems.append(f"{var} is not a Globals variable `!Ref`-ing a table")
            continue
        expected.setdefault(tables[var], set()).update(actions)
    grants, policy_problems = granted(template, logical)
    problems += policy_problems
    for table in sorted(set(expected) | set(grants)):
        missing = expected.get(table, set()) - grants.get(table, set())
        extra = grants.get(table, set()) - expected.get(table, set())
        if missing:
            problems.append(f"policy lacks {sorted(missing)} on {table}, which the code uses")
        if extra:
            problems.append(f"policy grants {sorted(extra)} on {table}, which the code does not use")

    env = environment(template, logical)
    given = {}
    for var, value in env.items():
        name, condition = secret_reference(value)
        if name is not None:
            given[var] = (name, condition)
        elif var in config.secret_vars:
            problems.append(f"{var} is set but not as a Secrets Manager dynamic reference")
    for var in sorted(needs.secrets - set(given)):
        problems.append(f"environment lacks secret {var}, which the code uses")
    for var in sorted(set(given) - needs.secrets):
        problems.append(f"environment holds secret {var}, which the code does not use")
    for var, (name, condition) in sorted(given.items()):
        if name != var.lower().replace("_", "-"):
            problems.append(f"{var} must be {{{{resolve:secretsmanager:${{SecretsPrefix}}/${{Environment}}/{var.lower().replace('_', '-')}:SecretString}}}}")
        if condition != OPTIONAL_SECRETS.get(var):
            problems.append(f"{var} condition is {condition}, expected {OPTIONAL_SECRETS.get(var)}")
    return problems


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------


class DriftTest(unittest.TestCase):
    """One test per function of the template (added below), plus the checks of the checker."""

    @classmethod
    def setUpClass(cls):
        cls.template = load_template()
        cls.config = Config.read()
        cls.shared = shared_sources()

    def needs(self, binary: str) -> Needs:
        crate = ROOT / "functions" / binary
        if not (crate / "src").is_dir():
            self.skipTest(f"functions/{binary} does not exist yet: template entry {functions_of(self.template)[binary]} is not checked against code")
        return derive_needs(crate, self.config, self.shared)

    def check(self, binary: str):
        problems = drift(self.template, binary, self.needs(binary), self.config)
        self.assertEqual(problems, [], f"{binary}: template.yaml and the code disagree:\n  " + "\n  ".join(problems))

    def test_every_crate_has_a_template_function(self):
        crates = {p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").is_file()}
        missing = crates - set(functions_of(self.template))
        self.assertFalse(missing, f"crates without a function in template.yaml: {sorted(missing)}")

    def test_every_dynamo_store_in_the_shared_crate_is_mapped(self):
        structs = {n for src in self.shared.values() for n in re.findall(r"\bpub\s+struct\s+(Dynamo\w+)", src.masked)}
        self.assertEqual(structs - set(STORES), set(), "add these stores to STORES in scripts/test_template.py")
        for store, spec in STORES.items():
            self.assertIn(store, re.findall(r"\bpub\s+struct\s+(\w+)", self.shared[spec["source"]].masked), spec["source"])

    def test_the_analysis_finds_what_the_stores_call(self):
        _, users = store_methods("DynamoUserStore")
        self.assertEqual(users["create"], {"dynamodb:PutItem"})
        self.assertEqual(users["erase"], {"dynamodb:GetItem", "dynamodb:DeleteItem"})
        self.assertEqual(users["lookup"], {"dynamodb:BatchGetItem"})
        _, limits = store_methods("DynamoRateLimitStore")
        self.assertEqual(limits["block"], {"dynamodb:UpdateItem"})
        self.assertEqual(limits["requests"], set())

    def test_a_synthetic_store_maps_transactions_to_item_actions(self):
        src = RustSource(
            """
            impl Ledger for DynamoLedger {
                // self.client.scan() is a comment, not a call
                async fn record(&self) { let s = "client.query()"; helper(&self.client).await; }
            }
            async fn helper(client: &Client) {
                let item = TransactWriteItem::builder().put(Put::builder().build()).build();
                client.transact_write_items().transact_items(item).send().await;
                client.get_item().send().await;
            }
            #[cfg(test)]
            mod tests { fn t(client: Client) { client.delete_item(); } }
            """
        )
        trait, body = src.impl_of("DynamoLedger")
        self.assertEqual(trait, "Ledger")
        text = body + "\n".join(src.functions()["helper"])
        self.assertEqual(actions_of(text, "synthetic"), {"dynamodb:PutItem", "dynamodb:GetItem"})
        with self.assertRaises(AnalysisError):
            actions_of("client.execute_statement()", "synthetic")

    def _mutated(self, binary: str, mutate) -> list[str]:
        template = copy.deepcopy(self.template)
        mutate(template["Resources"][functions_of(template)[binary]]["Properties"])
        return drift(template, binary, self.needs(binary), self.config)

    def test_the_check_fails_when_a_policy_drops_an_action(self):
        def drop(props):
            users = next(s for s in props["Policies"][0]["Statement"] if s["Sid"] == "Users")
            users["Action"].remove("dynamodb:UpdateItem")
        problems = self._mutated("login", drop)
        self.assertTrue(any("lacks ['dynamodb:UpdateItem'] on UsersTable" in p for p in problems), problems)

    def test_the_check_fails_when_a_policy_grants_more(self):
        def widen(props):
            props["Policies"][0]["Statement"][0]["Action"].append("dynamodb:Scan")
        problems = self._mutated("health", widen)
        self.assertTrue(any("grants ['dynamodb:Scan'] on RateLimitTable" in p for p in problems), problems)

        def template_policy(props):
            props["Policies"].append({"DynamoDBCrudPolicy": {"TableName": {"Ref": "UsersTable"}}})
        self.assertTrue(any("SAM policy templates" in p for p in self._mutated("health", template_policy)))

    def test_the_check_fails_on_a_missing_or_extra_secret(self):
        def drop(props):
            del props["Environment"]["Variables"]["CSRF_SECRET_KEY"]
        self.assertIn("environment lacks secret CSRF_SECRET_KEY, which the code uses", self._mutated("account", drop))

        def add(props):
            props.setdefault("Environment", {"Variables": {}})["Variables"]["STRIPE_SECRET_KEY"] = {
                "Sub": "{{resolve:secretsmanager:${SecretsPrefix}/${Environment}/stripe-secret-key:SecretString}}"
            }
        self.assertIn("environment holds secret STRIPE_SECRET_KEY, which the code does not use", self._mutated("health", add))

        def plaintext(props):
            props["Environment"]["Variables"]["JWT_SECRET_KEY"] = "0123456789abcdef0123456789abcdef"
        self.assertIn("JWT_SECRET_KEY is set but not as a Secrets Manager dynamic reference", self._mutated("login", plaintext))

    def test_no_secret_in_globals_or_parameters(self):
        for var in self.template["Globals"]["Function"]["Environment"]["Variables"]:
            self.assertNotIn(var, self.config.secret_vars, "secrets go to the functions that use them, not Globals")
        allowed = {"SecretsPrefix", "SecretsRevision", "JwtPreviousKeyEnabled"}
        for name, param in self.template["Parameters"].items():
            self.assertNotIn("NoEcho", param, f"parameter {name}: secrets come from Secrets Manager, not parameters")
            if re.search(r"(?i)secret|password|token|key", name):
                self.assertIn(name, allowed, f"parameter {name} looks like a secret")

    def test_functions_are_built_and_wired_as_the_api_expects(self):
        g = self.template["Globals"]["Function"]
        self.assertEqual((g["Runtime"], g["Handler"], g["Tracing"]), ("provided.al2023", "bootstrap", "Active"))
        self.assertEqual(g["Architectures"], [{"Ref": "Architecture"}])
        self.assertEqual(g["Environment"]["Variables"]["AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"], "true")
        for binary, logical in functions_of(self.template).items():
            res = self.template["Resources"][logical]
            props = res["Properties"]
            self.assertEqual(res["Metadata"]["BuildMethod"], "rust-cargolambda", logical)
            logging = props["LoggingConfig"]
            self.assertEqual(logging["LogFormat"], "JSON", logical)
            group = self.template["Resources"][logging["LogGroup"]["Ref"]]
            self.assertEqual(group["Type"], "AWS::Logs::LogGroup", logical)
            self.assertIn("RetentionInDays", group["Properties"], logical)
            (event,) = props["Events"].values()
            self.assertEqual((event["Type"], event["Properties"]["Method"]), ("Api", "ANY"), logical)
            handler = ROOT / "functions" / binary / "src" / "handler.rs"
            if handler.is_file():
                route = re.search(r'\broute\s*:\s*"([^"]+)"', handler.read_text(encoding="utf-8"))
                self.assertEqual(event["Properties"]["Path"], route.group(1), f"{logical} path vs ENDPOINT.route")

    def test_gateway_responses_are_problem_json_with_the_security_headers(self):
        headers_rs = RustSource.load("shared/src/headers.rs")
        block = re.search(r"SECURITY_HEADERS[^=]*=\s*\[", headers_rs.masked)
        body = headers_rs.code[block.end():matching(headers_rs.masked, block.end() - 1, "[", "]")]
        expected = {k: v for k, v in re.findall(r'\(\s*"([^"]+)"\s*,\s*"([^"]*)"\s*,?\s*\)', body)}
        self.assertGreaterEqual(len(expected), 10)
        error_rs = RustSource.load("shared/src/error.rs")

        def arms(fn: str) -> dict[str, str]:
            start = error_rs.masked.index("{", re.search(r"\bfn\s+" + fn + r"\s*\(", error_rs.masked).end())
            body = error_rs.code[start:matching(error_rs.masked, start)]
            return dict(re.findall(r'(Self::\w+[^=]*?)\s*=>\s*"([^"]+)"', body))

        slugs, titles = arms("slug"), arms("title")
        title_of_slug = {slug: titles[k] for k, slug in slugs.items() if k in titles}
        responses = self.template["Resources"]["Api"]["Properties"]["GatewayResponses"]
        for kind in ("DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED", "UNAUTHORIZED", "MISSING_AUTHENTICATION_TOKEN", "WAF_FILTERED"):
            self.assertIn(kind, responses)
        for kind, resp in responses.items():
            got = {k.lower(): v for k, v in resp["ResponseParameters"]["Headers"].items()}
            self.assertEqual(got.pop("content-type"), "'application/problem+json'", kind)
            got.pop("retry-after", None)
            self.assertEqual(got, {k: f"'{v}'" for k, v in expected.items()}, kind)
            problem = json.loads(resp["ResponseTemplates"]["application/json"])
            self.assertEqual(set(problem), {"type", "title", "status", "detail", "request_id"}, kind)
            self.assertEqual(str(problem["status"]), resp["StatusCode"], kind)
            self.assertEqual(problem["request_id"], "$context.requestId", kind)
            slug = problem["type"].removeprefix("/problems/")
            if slug in title_of_slug:
                self.assertEqual(problem["title"], title_of_slug[slug], f"{kind}: title differs from error.rs")
            if problem["status"] == 429:
                self.assertIn("Retry-After", resp["ResponseParameters"]["Headers"], kind)

    def test_every_function_log_group_feeds_the_alarms(self):
        resources = self.template["Resources"]
        filters = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::MetricFilter"]
        by_group: dict[str, set[str]] = {}
        for f in filters:
            by_group.setdefault(f["LogGroupName"]["Ref"], set()).add(f["MetricTransformations"][0]["MetricName"])
        alarmed = {r["Properties"].get("MetricName") for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"}
        for binary, logical in functions_of(self.template).items():
            group = resources[logical]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            self.assertLessEqual({"RateLimited", "ServerErrors", "IpBlocked"}, by_group.get(group, set()), logical)
        for metric in set().union(*by_group.values()):
            self.assertIn(metric, alarmed, f"metric {metric} has no alarm")
        for name, res in resources.items():
            if res["Type"] == "AWS::Logs::QueryDefinition":
                groups = {g["Ref"] for g in res["Properties"]["LogGroupNames"]}
                every = {resources[l]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for l in functions_of(self.template).values()}
                self.assertEqual(groups, every, name)


def _add_function_tests():
    for binary in functions_of(load_template()):
        def test(self, binary=binary):
            self.check(binary)
        test.__doc__ = f"functions/{binary}: policy and secrets match the code"
        setattr(DriftTest, "test_drift_" + binary.replace("-", "_"), test)


_add_function_tests()

if __name__ == "__main__":
    unittest.main()

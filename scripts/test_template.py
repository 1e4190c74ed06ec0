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
- Secrets: the `Need::` values the crate names, and those of shared components it builds (such
  as `Sessions`, which needs the JWT and CSRF keys). Each need is one environment variable
  holding the id of one secret (NEEDS); the function fetches the value from Secrets Manager at
  start. The environment must hold exactly those variables, each naming the right secret, and
  the policy must grant `secretsmanager:GetSecretValue` on exactly those secrets, plus
  `kms:Decrypt` through Secrets Manager on `KmsKeyArn` when it is set. No environment holds a
  secret's value.
- The key rotation function (ROTATION) has no API route and no secret of its own to read: its
  grants on the rotated secrets are the fixed table below, checked against the template and,
  once its crate exists, against the Secrets Manager calls of its code.

Functions of the template whose crate does not exist yet are skipped, with a message. The
analysis is static (regular expressions over comment-free, test-free sources); when it meets
something it cannot classify (an unmapped store, SDK call or `Need`), it fails rather than guess.

The same file checks settings the template shares with the code and the documentation: the AI
provider's base URL, chat's timeout against its AI timeout and API Gateway's, the architecture
named by the README, samconfig.toml and the template, and the customer-managed KMS key.

OperationsTest (issue 16) checks what lets people run the stack: each function's live alias and
deployment preference with its rollback alarms (also on the SAM-transformed template: the API
integrations and the rotation invoke the alias), its reserve and the README's arithmetic, the
alarms per function, table, API and WAF, that every metric an alarm or the dashboard names is
produced, the runbook against the alarms, WAF, TLS and retained log groups; and that each of
these checks fails when its piece is removed.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
import unittest
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalogue import routes_of  # noqa: E402

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
    "DynamoBudgetStore": {
        "source": "shared/src/budget/dynamodb.rs",
        "table_env": "RATE_LIMIT_TABLE",
        "callers": ["shared/src/budget/mod.rs"],
    },
    "DynamoSessionStore": {
        "source": "shared/src/revocation/dynamodb.rs",
        "table_env": "USERS_TABLE",
        "callers": ["shared/src/pipeline.rs"],
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
    "DynamoTokenStore": {
        "source": "shared/src/accounts/tokens/dynamodb.rs",
        "table_env": "USERS_TABLE",
        "callers": None,
    },
    "DynamoCustomers": {
        "source": "shared/src/payments/customers.rs",
        "table_env": "USERS_TABLE",
        "callers": None,
    },
}

# The secrets the code can ask for: `Need` variant -> the variable holding the secret's id (its
# name or ARN) and the secret's name under <SecretsPrefix>/<Environment>/.
NEEDS = {
    "JwtKey": ("JWT_SECRET_KEY_ID", "jwt-secret-key"),
    "CsrfKey": ("CSRF_SECRET_KEY_ID", "csrf-secret-key"),
    "StripeSecretKey": ("STRIPE_SECRET_KEY_ID", "stripe-secret-key"),
    "StripeWebhookSecret": ("STRIPE_WEBHOOK_SECRET_ID", "stripe-webhook-secret"),
    "AiApiKey": ("AI_API_KEY_ID", "ai-api-key"),
}

# Secrets the stack creates and rotates (AWS::SecretsManager::Secret with a RotationSchedule);
# the others hold values issued by Stripe or the AI provider and are created outside the stack.
ROTATED = {"jwt-secret-key", "csrf-secret-key"}

# Shared components whose construction needs secrets.
IMPLIED_NEEDS = {"Sessions": {"JwtKey", "CsrfKey"}}

# Account mail: SES v2 SendEmail on the MailIdentity, only from MailFrom, with the two settings.
MAIL_RESOURCE = {"Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${MailIdentity}"}
MAIL_CONDITION = {"StringEquals": {"ses:FromAddress": {"Ref": "MailFrom"}}}
MAIL_ENV = {"MAIL_FROM": {"Ref": "MailFrom"}, "APP_BASE_URL": {"Ref": "AppBaseUrl"}}

# The rotation function: its grants on each rotated secret, the action that has no resource to
# scope to, and its KMS actions when KmsKeyArn is set (it reads and writes secret versions).
ROTATION = {
    "binary": "rotate-keys",
    "actions": {
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    },
    "unscoped": {"secretsmanager:GetRandomPassword"},
    "kms": {"kms:Decrypt", "kms:GenerateDataKey"},
}

# KMS actions of a function that reads secrets, when KmsKeyArn is set.
READER_KMS = {"kms:Decrypt"}

# Variables that carried secret values into the functions before they fetched them at run time.
VALUE_VARS = {"JWT_SECRET_KEY", "JWT_SECRET_KEY_PREVIOUS", "CSRF_SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "AI_API_KEY"}

SECRET_NAME = re.compile(r"^\$\{SecretsPrefix\}/\$\{Environment\}/([a-z0-9-]+)$")
SECRET_ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:secretsmanager:\$\{AWS::Region\}:\$\{AWS::AccountId\}:secret:"
    r"\$\{SecretsPrefix\}/\$\{Environment\}/([a-z0-9-]+)-\?\?\?\?\?\?$"
)

# API Gateway's fixed integration timeout, in seconds.
API_GATEWAY_TIMEOUT_S = 29

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
    """The crate's code, less its test modules kept in files of their own (`tests.rs`,
    `tests/`), whose fixtures are not what the deployed function runs."""
    return [
        RustSource(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
        for p in sorted((crate / "src").rglob("*.rs"))
        if p.name != "tests.rs" and "tests" not in p.relative_to(crate / "src").parts[:-1]
    ]


def shared_sources() -> dict[str, RustSource]:
    return {str(p.relative_to(ROOT)): RustSource.load(str(p.relative_to(ROOT))) for p in sorted((ROOT / "shared/src").rglob("*.rs"))}


# ------------------------------------------------------------------------------------------------
# What the code needs
# ------------------------------------------------------------------------------------------------

@dataclass
class Config:
    """Facts from the shared crate: table variables (shared/src/config.rs) and the `Need`
    variants (wherever `enum Need` is declared)."""

    table_vars: dict[str, str]  # Tables field -> variable
    need_variants: set[str]

    @classmethod
    def read(cls, shared: dict[str, RustSource] | None = None) -> "Config":
        shared = shared if shared is not None else shared_sources()
        src = shared["shared/src/config.rs"]
        init = re.search(r"\btables\s*:\s*Tables\s*\{", src.masked)
        if not init:
            raise AnalysisError("shared/src/config.rs: no `tables: Tables { ... }` initialiser")
        body = src.code[init.end() - 1:matching(src.masked, init.end() - 1) + 1]
        table_vars = dict(re.findall(r'(\w+)\s*:\s*get\(\s*"([A-Z0-9_]+)"\s*\)', body))
        if not table_vars:
            raise AnalysisError("shared/src/config.rs: table variables not found")
        return cls(table_vars, need_variants(shared))


def need_variants(shared: dict[str, RustSource]) -> set[str]:
    """The variants of the shared crate's `enum Need`."""
    for src in shared.values():
        m = re.search(r"\benum\s+Need\s*\{", src.masked)
        if m:
            body = src.masked[m.end():matching(src.masked, m.end() - 1)]
            body = re.sub(r"#\[[^\]]*\]", " ", body)
            return set(re.findall(r"\b([A-Z]\w*)\s*(?:,|$|\(|\{)", body.strip()))
    raise AnalysisError("shared/src: no `enum Need`")


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


def _receivers(masked: str, trait: str) -> set[str]:
    """Names typed with `trait` (fields, parameters, bindings) in `masked`."""
    return set(re.findall(r"\b(\w+)\s*:\s*[^,;=(){}]*?\b" + re.escape(trait) + r"\b", masked))


def _shared_fns(shared: dict[str, RustSource]) -> dict[tuple[str, str], str]:
    """(module, fn) -> the whole text (signature and body) of each free function of the crate."""
    out = {}
    for path, src in shared.items():
        module = Path(path).stem if Path(path).stem not in ("mod", "lib") else Path(path).parent.name
        for m in re.finditer(r"^pub\s+(?:async\s+)?fn\s+(\w+)", src.masked, re.M):
            brace = src.masked.find("{", m.end())
            out[(module, m.group(1))] = src.masked[m.start():matching(src.masked, brace)]
    return out


def _trait_defaults(shared: dict[str, RustSource], trait: str) -> dict[str, set[str]]:
    """Default methods of `trait` -> the `self.` methods their bodies call."""
    for src in shared.values():
        m = re.search(r"\bpub\s+trait\s+" + re.escape(trait) + r"\b[^{]*\{", src.masked)
        if not m:
            continue
        body = src.masked[m.end():matching(src.masked, m.end() - 1)]
        out = {}
        for f in re.finditer(r"\bfn\s+(\w+)\s*(?:<[^{;]*?>)?\s*\(", body):
            end_sig = re.compile(r"[;{]").search(body, f.end())
            if end_sig and body[end_sig.start()] == "{":
                inner = body[end_sig.start():matching(body, end_sig.start())]
                out[f.group(1)] = set(re.findall(r"\bself\s*\.\s*(\w+)\s*\(", inner))
        return out
    return {}


def called_methods(sources: list[RustSource], trait: str, store: str, methods: set[str]) -> set[str]:
    """Trait methods called on a receiver typed with `trait` (or holding a new `store`), also
    inside the shared crate's free functions the sources call (`module::function(...)`,
    followed transitively), with a default trait method standing for the methods it calls."""
    shared = shared_sources()
    shared_fns = _shared_fns(shared)
    defaults = _trait_defaults(shared, trait)
    called = set()

    def scan(masked: str, receivers: set[str]):
        for recv in receivers:
            for method in re.findall(r"\b" + re.escape(recv) + r"\s*\.\s*(\w+)\s*\(", masked):
                if method in methods:
                    called.add(method)
                elif method in defaults:
                    called.update(m for m in defaults[method] if m in methods)

    todo, seen = [], set()
    for src in sources:
        receivers = _receivers(src.masked, trait)
        receivers |= set(re.findall(r"\blet\s+(?:mut\s+)?(\w+)\s*=[^;]*\b" + re.escape(store) + r"::new\b", src.masked))
        scan(src.masked, receivers)
        todo.extend(re.findall(r"\b(\w+)::(\w+)\s*\(", src.masked))
    while todo:
        key = todo.pop()
        if key in seen or key not in shared_fns:
            continue
        seen.add(key)
        text = shared_fns[key]
        scan(text, _receivers(text, trait))
        todo.extend(re.findall(r"\b(\w+)::(\w+)\s*\(", text))
    return called


@dataclass
class Needs:
    tables: dict[str, set[str]] = field(default_factory=dict)  # table variable -> IAM actions
    secrets: set[str] = field(default_factory=set)  # Need variants
    mail: bool = False  # sends account mail through SES (runtime::mailer)


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

    # Secrets: the Need values the crate names, and those of shared components it builds.
    for src in sources:
        if re.search(r"\bruntime::mailer\s*\(|\bSesMailer::new\s*\(", src.masked):
            needs.mail = True
        for variant in re.findall(r"\bNeed::(\w+)", src.masked):
            if variant not in NEEDS:
                raise AnalysisError(f"{src.path}: Need::{variant} is not in NEEDS in scripts/test_template.py")
            needs.secrets.add(variant)
        for type_name in set(re.findall(r"\b([A-Z]\w*)::\w+\s*\(", src.masked)):
            needs.secrets |= IMPLIED_NEEDS.get(type_name, set())
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

def stack_secrets(template: dict) -> dict[str, str]:
    """Secret name -> logical id of every AWS::SecretsManager::Secret of the template."""
    out = {}
    for logical, res in template["Resources"].items():
        if res.get("Type") == "AWS::SecretsManager::Secret":
            name = res.get("Properties", {}).get("Name")
            text = name.get("Sub") if isinstance(name, dict) else None
            m = SECRET_NAME.match(text) if isinstance(text, str) else None
            out[m.group(1) if m else f"<{logical}: Name is not !Sub ${{SecretsPrefix}}/${{Environment}}/<name>>"] = logical
    return out


def secret_id(template: dict, value) -> str | None:
    """The secret an environment value names (`!Ref <Secret>` or `!Sub ${SecretsPrefix}/${Environment}/<name>`)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return {logical: name for name, logical in stack_secrets(template).items()}.get(value["Ref"])
    if isinstance(value, dict) and set(value) == {"Sub"} and isinstance(value["Sub"], str):
        m = SECRET_NAME.match(value["Sub"])
        return m.group(1) if m else None
    return None


def expected_id(template: dict, name: str):
    """How the environment must name secret `name`: the stack's secret by `!Ref` (its ARN), a
    secret created outside the stack by its name."""
    if name in ROTATED:
        return {"Ref": stack_secrets(template).get(name, f"<the AWS::SecretsManager::Secret named {name}>")}
    return {"Sub": f"${{SecretsPrefix}}/${{Environment}}/{name}"}


def show(value) -> str:
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        return f"!{k} {v}"
    return repr(value)


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


def _secret_resource(template: dict, resource) -> tuple[str | None, str]:
    """(secret name, problem) of a policy resource: `!Ref <Secret>` for the stack's secrets, the
    ARN with Secrets Manager's random `-??????` suffix for the others."""
    if isinstance(resource, dict) and set(resource) == {"Ref"}:
        name = {logical: name for name, logical in stack_secrets(template).items()}.get(resource["Ref"])
        if name:
            return name, ""
    if isinstance(resource, dict) and set(resource) == {"Sub"} and isinstance(resource["Sub"], str):
        m = SECRET_ARN.match(resource["Sub"])
        if m and m.group(1) in ROTATED:
            return m.group(1), f"secret {m.group(1)} belongs to the stack: grant it with !Ref {stack_secrets(template).get(m.group(1))}"
        if m:
            return m.group(1), ""
    return None, f"resource {resource!r} is neither `!Ref <Secret>` nor arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:${{SecretsPrefix}}/${{Environment}}/<name>-??????"


KMS_CONDITION = {"StringEquals": {"kms:ViaService": {"Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}}


@dataclass
class Grants:
    """What a function's policies allow."""

    tables: dict[str, set[str]] = field(default_factory=dict)  # logical table -> actions
    secrets: dict[str, set[str]] = field(default_factory=dict)  # secret name -> actions
    unscoped: set[str] = field(default_factory=set)  # actions on Resource "*"
    kms: set[str] = field(default_factory=set)  # actions on KmsKeyArn when it is set
    mail: set[str] = field(default_factory=set)  # SES actions on the MailIdentity, from MailFrom
    problems: list[str] = field(default_factory=list)


def granted(template: dict, logical: str) -> Grants:
    g = Grants()
    for policy in template["Resources"][logical]["Properties"].get("Policies", []):
        if not isinstance(policy, dict) or set(policy) - {"Version", "Statement"}:
            g.problems.append(f"policy {policy!r} is not an inline statement list (no managed policies or SAM policy templates)")
            continue
        for st in policy["Statement"]:
            conditional = False
            if isinstance(st, dict) and set(st) == {"If"}:
                cond, present, absent = st["If"]
                if cond != "HasKmsKey" or absent != {"Ref": "AWS::NoValue"}:
                    g.problems.append(f"statement {st!r}: the only conditional statement expected is `!If [HasKmsKey, <statement>, !Ref AWS::NoValue]`")
                    continue
                st, conditional = present, True
            sid = st.get("Sid")
            actions = st.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            resources = st.get("Resource", [])
            resources = resources if isinstance(resources, list) else [resources]
            if st.get("Effect") != "Allow" or "NotAction" in st or "NotResource" in st:
                g.problems.append(f"statement {sid!r}: only Allow statements with Action and Resource are expected")
                continue
            bad = [a for a in actions if "*" in a or ":" not in a]
            if bad:
                g.problems.append(f"statement {sid!r}: {bad} are not exact actions")
                continue
            services = {a.split(":")[0] for a in actions}
            if len(services) != 1:
                g.problems.append(f"statement {sid!r}: mixes the services {sorted(services)}")
                continue
            (service,) = services
            if service == "kms":
                if not conditional:
                    g.problems.append(f"statement {sid!r}: KMS grants belong in `!If [HasKmsKey, ...]`")
                if resources != [{"Ref": "KmsKeyArn"}]:
                    g.problems.append(f"statement {sid!r}: the KMS resource must be !Ref KmsKeyArn")
                if st.get("Condition") != KMS_CONDITION:
                    g.problems.append(f"statement {sid!r}: the KMS grant must be scoped with kms:ViaService to secretsmanager.${{AWS::Region}}.amazonaws.com")
                g.kms.update(actions)
                continue
            if service == "ses":
                if conditional or resources != [MAIL_RESOURCE] or st.get("Condition") != MAIL_CONDITION:
                    g.problems.append(f"statement {sid!r}: SES grants must be on the MailIdentity identity, scoped with ses:FromAddress to MailFrom")
                    continue
                g.mail.update(actions)
                continue
            if conditional or "Condition" in st:
                g.problems.append(f"statement {sid!r}: only plain Allow statements are expected for {service}")
                continue
            if service == "dynamodb":
                for resource in resources:
                    table = _arn_table(resource)
                    if table is None or template["Resources"].get(table, {}).get("Type") != "AWS::DynamoDB::Table":
                        g.problems.append(f"statement {sid!r}: resource {resource!r} is not a table's Arn")
                        continue
                    g.tables.setdefault(table, set()).update(actions)
            elif service == "secretsmanager":
                for resource in resources:
                    if resource == "*":
                        g.unscoped.update(actions)
                        continue
                    name, problem = _secret_resource(template, resource)
                    if problem:
                        g.problems.append(f"statement {sid!r}: {problem}")
                    if name:
                        g.secrets.setdefault(name, set()).update(actions)
            else:
                g.problems.append(f"statement {sid!r}: {service} actions are not expected")
    return g


def _compare(problems: list[str], what: str, want: set[str], got: set[str]):
    if want - got:
        problems.append(f"policy lacks {sorted(want - got)} {what}, which the code uses")
    if got - want:
        problems.append(f"policy grants {sorted(got - want)} {what}, which the code does not use")


def drift(template: dict, binary: str, needs: Needs) -> list[str]:
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
    g = granted(template, logical)
    problems += g.problems
    for table in sorted(set(expected) | set(g.tables)):
        _compare(problems, f"on {table}", expected.get(table, set()), g.tables.get(table, set()))

    if binary == ROTATION["binary"]:
        want_vars: dict[str, tuple[str, str]] = {}
        want_secrets = {name: set(ROTATION["actions"]) for name in ROTATED}
        want_unscoped, want_kms = set(ROTATION["unscoped"]), set(ROTATION["kms"])
    else:
        want_vars = {NEEDS[n][0]: (n, NEEDS[n][1]) for n in needs.secrets}
        want_secrets = {name: {"secretsmanager:GetSecretValue"} for _, name in want_vars.values()}
        want_unscoped, want_kms = set(), set(READER_KMS) if want_secrets else set()
    for name in sorted(set(want_secrets) | set(g.secrets)):
        _compare(problems, f"on secret {name}", want_secrets.get(name, set()), g.secrets.get(name, set()))
    _compare(problems, 'on Resource "*"', want_unscoped, g.unscoped)
    _compare(problems, "on KmsKeyArn", want_kms, g.kms)
    _compare(problems, "on the MailIdentity", {"ses:SendEmail"} if needs.mail else set(), g.mail)

    env = environment(template, logical)
    mail_env = {var: env.get(var) for var in MAIL_ENV}
    if needs.mail and mail_env != MAIL_ENV:
        problems.append(f"the function sends mail: its environment must set {MAIL_ENV}, not {mail_env}")
    if not needs.mail and any(mail_env.values()):
        problems.append("the environment holds mail settings, which the code does not use")
    id_vars = {var for var, _ in NEEDS.values()}
    for var, value in env.items():
        if var in VALUE_VARS:
            problems.append(f"{var} puts a secret's value in the environment; the function fetches it at run time from the id in {var}_ID")
        elif "{{resolve:" in json.dumps(value):
            problems.append(f"{var} resolves a Secrets Manager value into the environment")
    given = {var for var, value in env.items() if var in id_vars or secret_id(template, value) is not None}
    for var in sorted(set(want_vars) - given):
        problems.append(f"environment lacks {var}, which the code uses (Need::{want_vars[var][0]})")
    for var in sorted(given - set(want_vars)):
        problems.append(f"environment holds {var}, which the code does not use")
    for var in sorted(given & set(want_vars)):
        name = want_vars[var][1]
        if env[var] != expected_id(template, name):
            problems.append(f"{var} is {show(env[var])}; it must be {show(expected_id(template, name))}, the id of secret {name}")
    return problems


# ------------------------------------------------------------------------------------------------
# Settings shared by the template, the code and the documentation
# ------------------------------------------------------------------------------------------------


def chat_url(api_base: str, chat_sources: list[RustSource]) -> str:
    """The URL the chat function calls for `api_base`: the code's `format!("{}<suffix>", base)`
    with the base's trailing slashes trimmed, as the code does."""
    suffixes = {s for src in chat_sources for s in re.findall(r'"\{\}(/[^"{}]*chat/completions)"', src.code)}
    if len(suffixes) != 1:
        raise AnalysisError(f"functions/chat: expected one `\"{{}}/.../chat/completions\"` URL format, found {sorted(suffixes)}")
    return api_base.rstrip("/") + suffixes.pop()


def code_default(sources: list[RustSource], var: str) -> str:
    """The literal default of `var` in `get("VAR").unwrap_or_else(|| "...".into())` or
    `number(&get, "VAR", 123)`."""
    for src in sources:
        m = re.search(r'"' + var + r'"\s*\)\s*\.\s*unwrap_or_else\s*\(\s*\|\|\s*"([^"]*)"', src.code)
        m = m or re.search(r'\(\s*&\s*get\s*,\s*"' + var + r'"\s*,\s*([0-9_]+)\s*\)', src.code)
        if m:
            return m.group(1).replace("_", "")
    raise AnalysisError(f"no default for {var} found")


ARCH_PATTERNS = [
    (re.compile(r"\bArchitecture=([A-Za-z0-9_]+)"), None),
    (re.compile(r"--arm64\b"), "arm64"),
    (re.compile(r"--x86-64\b"), "x86_64"),
    (re.compile(r"--target[ =](aarch64|x86_64)"), None),
    # A native build (no cross-compiler) builds for the machine; the README's is x86_64.
    (re.compile(r"\bCARGO_LAMBDA_COMPILER=cargo\b"), "x86_64"),
]


def architectures(texts: dict[str, str], template: dict) -> dict[str, set[str]]:
    """Architecture -> where it is named: build and deploy commands of the documents, the
    `Architecture=` overrides of samconfig.toml, the template's default."""
    found: dict[str, set[str]] = {}
    for where, text in texts.items():
        if where.endswith(".toml"):
            config = tomllib.loads(text)
            chunks = [
                (f"{where} [{env}.{command}]", params.get("parameters", {}).get("parameter_overrides", ""))
                for env, commands in config.items() if isinstance(commands, dict)
                for command, params in commands.items() if isinstance(params, dict)
            ]
        else:
            chunks = [(where, "\n".join(re.findall(r"```(?:sh|bash|toml)?\n(.*?)```", text, re.S)) if where.endswith(".md") else text)]
        for label, chunk in chunks:
            for pattern, arch in ARCH_PATTERNS:
                for m in pattern.finditer(chunk):
                    name = {"aarch64": "arm64"}.get(arch or m.group(1), arch or m.group(1))
                    found.setdefault(name, set()).add(label)
    found.setdefault(template["Parameters"]["Architecture"].get("Default", "<no default>"), set()).add("template.yaml Architecture default")
    return found


def architecture_texts() -> dict[str, str]:
    return {p: (ROOT / p).read_text(encoding="utf-8") for p in ("README.md", "docs/deployment.md", "samconfig.toml", "scripts/sam-build.sh")}


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

KMS_OR_DEFAULT = {"If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}


def _rotation_logical(template: dict) -> str:
    return functions_of(template)[ROTATION["binary"]]


def _api_functions(template: dict) -> dict[str, str]:
    return {b: l for b, l in functions_of(template).items() if template["Resources"][l]["Properties"].get("Events")}


class DriftTest(unittest.TestCase):
    """One test per function of the template (added below), plus the checks of the checker."""

    @classmethod
    def setUpClass(cls):
        cls.template = load_template()
        cls.shared = shared_sources()
        cls.config = Config.read(cls.shared)

    def needs(self, binary: str) -> Needs:
        crate = ROOT / "functions" / binary
        if not (crate / "src").is_dir():
            self.skipTest(f"functions/{binary} does not exist yet: template entry {functions_of(self.template)[binary]} is not checked against code")
        return derive_needs(crate, self.config, self.shared)

    def check(self, binary: str):
        problems = drift(self.template, binary, self.needs(binary))
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

    def test_every_need_of_the_code_is_mapped_to_its_variable(self):
        self.assertEqual(self.config.need_variants - set(NEEDS), set(), "Need variants without an entry in NEEDS")
        self.assertEqual(set(NEEDS) - self.config.need_variants, set(), "NEEDS names variants the shared crate's `enum Need` lacks")
        literals = set().union(*(src.literals() for src in self.shared.values()))
        for variant, (var, _) in NEEDS.items():
            self.assertIn(var, literals, f"Need::{variant}: the shared crate never names {var}")

    def test_need_variants_are_read_from_the_enum(self):
        src = RustSource('pub enum Need {\n    /// doc\n    JwtKey,\n    #[allow(dead_code)]\n    AiApiKey,\n}\nfn f() { "Need::Nope"; }', "synthetic")
        self.assertEqual(need_variants({"synthetic": src}), {"JwtKey", "AiApiKey"})

    def test_sessions_need_what_the_table_says(self):
        for type_name, variants in IMPLIED_NEEDS.items():
            (src,) = [s for s in self.shared.values() if re.search(r"\bpub\s+struct\s+" + type_name + r"\b", s.masked)]
            named = set(re.findall(r"\bNeed::(\w+)", src.masked))
            self.assertLessEqual(variants, named, f"{src.path}: IMPLIED_NEEDS[{type_name!r}] names needs the code does not")

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

    def _mutated(self, binary: str, mutate, needs: Needs | None = None) -> list[str]:
        template = copy.deepcopy(self.template)
        mutate(template["Resources"][functions_of(template)[binary]]["Properties"])
        return drift(template, binary, needs if needs is not None else self.needs(binary))

    @staticmethod
    def _statement(props, sid):
        for st in props["Policies"][0]["Statement"]:
            inner = st["If"][1] if set(st) == {"If"} else st
            if inner.get("Sid") == sid:
                return inner
        raise KeyError(sid)

    def test_the_check_fails_when_a_policy_drops_an_action(self):
        def drop(props):
            self._statement(props, "Users")["Action"].remove("dynamodb:UpdateItem")
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

    def test_the_check_fails_on_a_missing_extra_or_wrong_secret_id(self):
        sessions = Needs(secrets={"JwtKey", "CsrfKey"})

        def drop(props):
            del props["Environment"]["Variables"]["CSRF_SECRET_KEY_ID"]
        self.assertIn("environment lacks CSRF_SECRET_KEY_ID, which the code uses (Need::CsrfKey)", self._mutated("account", drop, sessions))

        def add(props):
            props.setdefault("Environment", {"Variables": {}})["Variables"]["STRIPE_SECRET_KEY_ID"] = {"Sub": "${SecretsPrefix}/${Environment}/stripe-secret-key"}
        self.assertIn("environment holds STRIPE_SECRET_KEY_ID, which the code does not use", self._mutated("health", add, Needs()))

        def swapped(props):
            props["Environment"]["Variables"]["JWT_SECRET_KEY_ID"] = {"Ref": "CsrfSecret"}
        self.assertIn("JWT_SECRET_KEY_ID is !Ref CsrfSecret; it must be !Ref JwtSecret, the id of secret jwt-secret-key", self._mutated("login", swapped, sessions))

        def by_name(props):
            props["Environment"]["Variables"]["JWT_SECRET_KEY_ID"] = {"Sub": "${SecretsPrefix}/${Environment}/jwt-secret-key"}
        self.assertTrue(any(p.startswith("JWT_SECRET_KEY_ID is !Sub") for p in self._mutated("login", by_name, sessions)))

        def plaintext(props):
            props["Environment"]["Variables"]["JWT_SECRET_KEY"] = "0123456789abcdef0123456789abcdef"
        self.assertIn("JWT_SECRET_KEY puts a secret's value in the environment; the function fetches it at run time from the id in JWT_SECRET_KEY_ID", self._mutated("login", plaintext, sessions))

        def resolved(props):
            props["Environment"]["Variables"]["SIGNING"] = {"Sub": "{{resolve:secretsmanager:${SecretsPrefix}/${Environment}/jwt-secret-key:SecretString}}"}
        self.assertIn("SIGNING resolves a Secrets Manager value into the environment", self._mutated("login", resolved, sessions))

    def test_the_check_fails_when_secret_grants_drift(self):
        sessions = Needs(secrets={"JwtKey", "CsrfKey"})

        def narrow(props):
            self._statement(props, "Secrets")["Resource"].remove({"Ref": "CsrfSecret"})
        self.assertIn("policy lacks ['secretsmanager:GetSecretValue'] on secret csrf-secret-key, which the code uses", self._mutated("login", narrow, sessions))

        def widen(props):
            self._statement(props, "Secrets")["Resource"].append({"Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SecretsPrefix}/${Environment}/stripe-secret-key-??????"})
        self.assertIn("policy grants ['secretsmanager:GetSecretValue'] on secret stripe-secret-key, which the code does not use", self._mutated("login", widen, sessions))

        def wildcard(props):
            self._statement(props, "Secrets")["Action"] = ["secretsmanager:*"]
        self.assertTrue(any("are not exact actions" in p for p in self._mutated("login", wildcard, sessions)))

        def unscoped_kms(props):
            del self._statement(props, "SecretsKey")["Condition"]
        self.assertTrue(any("kms:ViaService" in p for p in self._mutated("login", unscoped_kms, sessions)))

        def no_kms(props):
            props["Policies"][0]["Statement"] = [s for s in props["Policies"][0]["Statement"] if set(s) != {"If"}]
        self.assertIn("policy lacks ['kms:Decrypt'] on KmsKeyArn, which the code uses", self._mutated("login", no_kms, sessions))

        def unconditional_kms(props):
            statements = props["Policies"][0]["Statement"]
            statements[:] = [s["If"][1] if set(s) == {"If"} else s for s in statements]
        self.assertTrue(any("belong in `!If [HasKmsKey" in p for p in self._mutated("login", unconditional_kms, sessions)))

        def owned_by_arn(props):
            self._statement(props, "Secrets")["Resource"][0] = {"Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SecretsPrefix}/${Environment}/jwt-secret-key-??????"}
        self.assertTrue(any("belongs to the stack: grant it with !Ref JwtSecret" in p for p in self._mutated("login", owned_by_arn, sessions)))

    def test_the_rotation_function_gets_exactly_its_table(self):
        self.assertEqual(drift(self.template, ROTATION["binary"], Needs()), [])

        def no_stage(props):
            self._statement(props, "RotateKeys")["Action"].remove("secretsmanager:UpdateSecretVersionStage")
        problems = self._mutated(ROTATION["binary"], no_stage, Needs())
        self.assertIn("policy lacks ['secretsmanager:UpdateSecretVersionStage'] on secret jwt-secret-key, which the code uses", problems)

        def everywhere(props):
            self._statement(props, "RotateKeys")["Resource"] = "*"
        problems = self._mutated(ROTATION["binary"], everywhere, Needs())
        self.assertTrue(any("on Resource \"*\", which the code does not use" in p for p in problems), problems)

        def reads_stripe(props):
            props["Environment"] = {"Variables": {"STRIPE_SECRET_KEY_ID": {"Sub": "${SecretsPrefix}/${Environment}/stripe-secret-key"}}}
        self.assertIn("environment holds STRIPE_SECRET_KEY_ID, which the code does not use", self._mutated(ROTATION["binary"], reads_stripe, Needs()))

    def test_the_rotation_code_calls_what_its_policy_grants(self):
        crate = ROOT / "functions" / ROTATION["binary"]
        if not (crate / "src").is_dir():
            self.skipTest(f"functions/{ROTATION['binary']} does not exist yet")
        text = "\n".join(s.masked for s in crate_sources(crate) + list(self.shared.values()))
        for action in sorted(ROTATION["actions"] | ROTATION["unscoped"]):
            op = re.sub(r"(?<!^)(?=[A-Z])", "_", action.split(":")[1]).lower()
            self.assertTrue(re.search(r"\.\s*" + op + r"\s*\(", text), f"ROTATION grants {action}, which functions/{ROTATION['binary']} never calls (.{op}())")

    def test_the_stack_owns_and_rotates_the_jwt_and_csrf_keys(self):
        resources = self.template["Resources"]
        owned = stack_secrets(self.template)
        self.assertEqual(set(owned), ROTATED)
        rotation_fn = _rotation_logical(self.template)
        fn = resources[rotation_fn]
        self.assertNotIn("Events", fn["Properties"], "the rotation function answers no API route")
        schedules = {r["Properties"]["SecretId"]["Ref"]: (n, r) for n, r in resources.items() if r["Type"] == "AWS::SecretsManager::RotationSchedule"}
        self.assertEqual(set(schedules), set(owned.values()), "one rotation schedule per stack secret")
        permissions = [(n, r["Properties"]) for n, r in resources.items() if r["Type"] == "AWS::Lambda::Permission"]
        (permission, props), = [(n, p) for n, p in permissions if p["Principal"] == "secretsmanager.amazonaws.com"]
        self.assertEqual(props["FunctionName"], {"Ref": f"{rotation_fn}.Alias"}, "Secrets Manager invokes the live alias, which CodeDeploy shifts and rolls back")
        self.assertEqual(props["Action"], "lambda:InvokeFunction")
        self.assertEqual(props["SourceAccount"], {"Ref": "AWS::AccountId"})
        for name, logical in owned.items():
            secret = resources[logical]["Properties"]
            self.assertEqual(secret["GenerateSecretString"], {"PasswordLength": 64, "ExcludePunctuation": True}, name)
            self.assertNotIn("SecretString", secret, name)
            schedule_name, schedule = schedules[logical]
            self.assertEqual(schedule["Properties"]["RotationLambdaARN"], {"Ref": f"{rotation_fn}.Alias"}, schedule_name)
            self.assertEqual(schedule["Properties"]["RotationRules"], {"ScheduleExpression": {"Ref": "KeyRotationSchedule"}}, schedule_name)
            self.assertEqual(schedule.get("DependsOn"), permission, f"{schedule_name}: Secrets Manager must be allowed to invoke the function first")
        self.assertEqual(self.template["Parameters"]["KeyRotationSchedule"]["Default"], "rate(30 days)")

    def test_no_secret_value_anywhere_in_the_template(self):
        self.assertNotIn("{{resolve:", TEMPLATE.read_text(encoding="utf-8"), "secrets are fetched at run time, never resolved at deploy time")
        for logical in functions_of(self.template).values():
            self.assertEqual(set(environment(self.template, logical)) & VALUE_VARS, set(), logical)

    def test_no_secret_in_globals_or_parameters(self):
        variables = self.template["Globals"]["Function"]["Environment"]["Variables"]
        ids = {var for var, _ in NEEDS.values()}
        for var, value in variables.items():
            self.assertNotIn(var, ids | VALUE_VARS, "secrets go to the functions that use them, not Globals")
            self.assertIsNone(secret_id(self.template, value), f"Globals {var} names a secret")
        self.assertEqual(variables["SECRETS_TTL_SECONDS"], {"Ref": "SecretsTtlSeconds"})
        self.assertEqual(self.template["Parameters"]["SecretsTtlSeconds"]["Default"], 300)
        allowed = {"SecretsPrefix", "SecretsTtlSeconds", "KeyRotationSchedule", "KmsKeyArn"}
        for name, param in self.template["Parameters"].items():
            self.assertNotIn("NoEcho", param, f"parameter {name}: secrets come from Secrets Manager, not parameters")
            if re.search(r"(?i)secret|password|token|key", name):
                self.assertIn(name, allowed, f"parameter {name} looks like a secret")

    def test_the_environment_is_never_a_default(self):
        param = self.template["Parameters"]["Environment"]
        self.assertNotIn("Default", param, "a deploy that names no environment must fail, not deploy development")
        config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
        for env, commands in config.items():
            if not isinstance(commands, dict):
                continue
            for command, params in commands.items():
                overrides = params.get("parameters", {}).get("parameter_overrides") if isinstance(params, dict) else None
                if overrides is None:
                    continue
                named = re.findall(r"\bEnvironment=(\w+)", overrides)
                self.assertEqual(len(named), 1, f"samconfig.toml [{env}.{command}] must set Environment")
                self.assertIn(named[0], param["AllowedValues"], f"samconfig.toml [{env}.{command}]")
                if env in param["AllowedValues"]:
                    self.assertEqual(named[0], env, f"samconfig.toml [{env}.{command}]")

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
            if binary == ROTATION["binary"]:
                continue
            events = list(props["Events"].values())
            for event in events:
                self.assertEqual((event["Type"], event["Properties"]["Method"]), ("Api", "ANY"), logical)
            paths = {event["Properties"]["Path"] for event in events}
            self.assertEqual(paths, routes_of(binary), f"{logical}: template.yaml's paths vs endpoints.json's routes of {binary}")

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
        alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
        alarmed = {a.get("MetricName") for a in alarms} | {
            m["MetricStat"]["Metric"]["MetricName"] for a in alarms for m in a.get("Metrics", []) if "MetricStat" in m
        }
        group_of = {l: resources[l]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for l in functions_of(self.template).values()}
        api = {group_of[l] for l in _api_functions(self.template).values()}
        for group in api:
            self.assertLessEqual({"RateLimited", "ServerErrors", "IpBlocked"}, by_group.get(group, set()), group)
        for metric in set().union(*by_group.values()):
            self.assertIn(metric, alarmed, f"metric {metric} has no alarm")
        rotation = _rotation_logical(self.template)
        self.assertTrue(
            any(a.get("Namespace") == "AWS/Lambda" and a.get("MetricName") == "Errors" and a.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": rotation}}] for a in alarms),
            f"no alarm on the errors of {rotation}: a failed rotation must reach someone",
        )
        for name, res in resources.items():
            if res["Type"] == "AWS::Logs::QueryDefinition":
                groups = {g["Ref"] for g in res["Properties"]["LogGroupNames"]}
                self.assertLessEqual(api, groups, name)
                self.assertLessEqual(groups, set(group_of.values()), name)

    def test_the_kms_key_reaches_every_store(self):
        self.assertEqual(self.template["Parameters"]["KmsKeyArn"]["Default"], "")
        self.assertEqual(self.template["Conditions"]["HasKmsKey"], {"Not": [{"Equals": [{"Ref": "KmsKeyArn"}, ""]}]})
        where = {
            "AWS::SecretsManager::Secret": lambda p: p.get("KmsKeyId"),
            "AWS::DynamoDB::Table": lambda p: p.get("SSESpecification", {}).get("KMSMasterKeyId"),
            "AWS::Logs::LogGroup": lambda p: p.get("KmsKeyId"),
            "AWS::SNS::Topic": lambda p: p.get("KmsMasterKeyId"),
        }
        seen = set()
        for name, res in self.template["Resources"].items():
            if res["Type"] in where:
                seen.add(res["Type"])
                self.assertEqual(where[res["Type"]](res["Properties"]), KMS_OR_DEFAULT, f"{name}: encrypt with KmsKeyArn when it is set")
            if res["Type"] == "AWS::DynamoDB::Table":
                sse = res["Properties"]["SSESpecification"]
                self.assertEqual((sse["SSEEnabled"], sse["SSEType"]), (True, "KMS"), name)
        self.assertEqual(seen, set(where))

    def test_the_ai_base_default_yields_the_url_the_code_calls(self):
        chat = crate_sources(ROOT / "functions" / "chat")
        default = self.template["Parameters"]["AiApiBase"]["Default"]
        self.assertEqual(self.template["Resources"]["ChatFunction"]["Properties"]["Environment"]["Variables"]["AI_API_BASE"], {"Ref": "AiApiBase"})
        url = chat_url(default, chat)
        self.assertNotIn("/v1/v1/", url, f"AiApiBase default {default} makes chat call {url}")
        self.assertRegex(url, r"^https://[^/]+/v1/chat/completions$")
        self.assertEqual(default.rstrip("/"), code_default(chat, "AI_API_BASE").rstrip("/"), "the template's and the code's default provider differ")
        self.assertIn("/v1/v1/", chat_url("https://api.openai.com/v1", chat), "the check must catch a base ending in /v1")

    def test_chat_times_out_after_its_ai_call_and_before_api_gateway(self):
        chat = crate_sources(ROOT / "functions" / "chat")
        ai_s = int(code_default(chat, "AI_TIMEOUT_MS")) / 1000
        props = self.template["Resources"]["ChatFunction"]["Properties"]
        timeout = props.get("Timeout", self.template["Globals"]["Function"]["Timeout"])
        self.assertGreater(timeout, ai_s, "chat's Lambda timeout must leave its AI call time to answer 504 itself")
        self.assertLess(timeout, API_GATEWAY_TIMEOUT_S, "API Gateway gives up after 29 s; the function must answer first")
        text = TEMPLATE.read_text(encoding="utf-8")
        block = text[text.index("\n  ChatFunction:\n"):text.index(f"      Timeout: {timeout}\n", text.index("\n  ChatFunction:\n"))]
        comment = " ".join(line.strip().lstrip("# ") for line in block.splitlines() if line.strip().startswith("#"))
        for fact in ("AI_TIMEOUT_MS", f"{ai_s:g} s", f"{API_GATEWAY_TIMEOUT_S} s"):
            self.assertIn(fact, comment, "the comment above chat's Timeout must state the bounds it sits between")

    def test_one_architecture_everywhere(self):
        found = architectures(architecture_texts(), self.template)
        self.assertEqual(len(found), 1, "architectures named by the build and deploy commands, samconfig.toml and the template: " + "; ".join(f"{a}: {sorted(w)}" for a, w in sorted(found.items())))
        self.assertEqual(set(found), {"x86_64"})
        texts = architecture_texts()
        texts["samconfig.toml"] = texts["samconfig.toml"].replace("Environment=production Architecture=x86_64", "Environment=production Architecture=arm64")
        self.assertIn("samconfig.toml [production.global]", architectures(texts, self.template).get("arm64", set()), "the check must catch a config env that deploys another architecture")
        texts = architecture_texts()
        texts["README.md"] += "\n```sh\ncargo lambda build --release --arm64\n```\n"
        self.assertIn("arm64", architectures(texts, self.template))


# ------------------------------------------------------------------------------------------------
# Operations (issue 16): aliases and deployment preferences, reserves, alarms, the dashboard, WAF,
# TLS, retained logs, the runbook. Each check returns its problems, so the tests below can also
# show that it fails when a piece is removed.
# ------------------------------------------------------------------------------------------------

RUNBOOK = ROOT / "docs" / "runbook.md"
README = ROOT / "README.md"

# AWS namespaces whose metrics the alarms and the dashboard may name: AWS publishes them.
AWS_METRICS = {
    "AWS/Lambda": {"Errors", "Throttles", "Duration", "ConcurrentExecutions", "Invocations"},
    "AWS/ApiGateway": {"Count", "4XXError", "5XXError", "Latency", "IntegrationLatency"},
    "AWS/DynamoDB": {"ThrottledRequests", "SystemErrors", "SuccessfulRequestLatency", "UserErrors"},
    "AWS/WAFV2": {"AllowedRequests", "BlockedRequests", "CountedRequests"},
}
OWN_NAMESPACE = "FlowBotz/${Environment}"
# IAM action -> the DynamoDB metric's Operation dimension; transactions are their own operation.
DDB_OPERATION = {a: a.split(":")[1] for a in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchGetItem", "dynamodb:Query")}
WAF_REDACTED = {"authorization", "cookie", "x-csrf-token"}
AUTH_ROUTE_FUNCTIONS = ("login", "register", "reset")
ALARM_KINDS = ("Errors", "Throttles", "Duration", "Concurrency")


def _ref(value) -> str | None:
    return value.get("Ref") if isinstance(value, dict) else None


def _alarms(template: dict) -> dict[str, dict]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def _prefix(logical: str) -> str:
    return logical.removesuffix("Function")


def _sub_text(value) -> str:
    if isinstance(value, dict) and "Sub" in value:
        return value["Sub"] if isinstance(value["Sub"], str) else value["Sub"][0]
    return value if isinstance(value, str) else ""


def _metric_stats(alarm: dict) -> list[dict]:
    """Each metric an alarm reads: {Namespace, MetricName, Dimensions}."""
    props = alarm["Properties"]
    if "MetricName" in props:
        return [{"Namespace": props["Namespace"], "MetricName": props["MetricName"], "Dimensions": props.get("Dimensions", [])}]
    return [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]


def _dims(metric: dict) -> dict:
    return {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def _namespace(value) -> str:
    return _sub_text(value) if isinstance(value, dict) else value


def dashboard_metrics(template: dict) -> list[tuple[str, str, dict]]:
    """(namespace, metric, dimensions) of every metric widget of every dashboard; the body's
    ${...} substitutions are kept as written."""
    out = []
    for res in template["Resources"].values():
        if res["Type"] != "AWS::CloudWatch::Dashboard":
            continue
        body = json.loads(_sub_text(res["Properties"]["DashboardBody"]))
        for widget in body["widgets"]:
            for metric in widget["properties"].get("metrics", []):
                items = [m for m in metric if not isinstance(m, dict)]
                out.append((items[0], items[1], dict(zip(items[2::2], items[3::2]))))
    return out


def produced_metrics(template: dict) -> set[tuple[str, str]]:
    """Metrics the stack produces: its metric filters', and those AWS publishes."""
    made = set()
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Logs::MetricFilter":
            for t in res["Properties"]["MetricTransformations"]:
                made.add((_namespace(t["MetricNamespace"]), t["MetricName"]))
    return made | {(ns, m) for ns, ms in AWS_METRICS.items() for m in ms}


def deployment_problems(template: dict) -> list[str]:
    problems = []
    g = template["Globals"]["Function"]
    if g.get("AutoPublishAlias") != "live":
        problems.append("Globals: AutoPublishAlias live missing")
    kind = json.dumps(g.get("DeploymentPreference", {}).get("Type"))
    for needed in ("Canary10Percent5Minutes", "IsProduction", "DeploymentStrategy", "AllAtOnce"):
        if needed not in kind:
            problems.append(f"Globals DeploymentPreference Type names no {needed}")
    alarms = _alarms(template)
    rotation = _rotation_logical(template)
    for binary, logical in functions_of(template).items():
        props = template["Resources"][logical]["Properties"]
        errors = f"{_prefix(logical)}ErrorsAlarm"
        want = [errors] if logical == rotation else [errors, "ApiGatewayServerErrorsAlarm"]
        got = [_ref(a) for a in props.get("DeploymentPreference", {}).get("Alarms", [])]
        if got != want:
            problems.append(f"{logical}: DeploymentPreference Alarms {got}, want {want}")
        if props.get("AutoPublishAlias", "live") != "live":
            problems.append(f"{logical}: another alias")
        alarm = alarms.get(errors)
        if not alarm or _metric_stats(alarm) != [{"Namespace": "AWS/Lambda", "MetricName": "Errors", "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": logical}}]}]:
            problems.append(f"{logical}: {errors} is not the AWS/Lambda Errors alarm of the function")
    api5xx = alarms.get("ApiGatewayServerErrorsAlarm")
    if not api5xx or _metric_stats(api5xx)[0]["MetricName"] != "5XXError":
        problems.append("ApiGatewayServerErrorsAlarm is not the API's 5XXError alarm")
    return problems


def transformed_problems(transformed: dict, template: dict) -> list[str]:
    """On the SAM-transformed template: every API integration and the rotation invoke the alias,
    and every function has its CodeDeploy deployment group with automatic rollback."""
    problems = []
    res = transformed["Resources"]
    for path, ops in res["Api"]["Properties"]["Body"]["paths"].items():
        for op in ops.values():
            uri = json.dumps(op["x-amazon-apigateway-integration"]["uri"])
            if not re.search(r"\$\{\w+FunctionAliaslive\}", uri):
                problems.append(f"{path}: the integration does not invoke a live alias: {uri}")
    for name, r in res.items():
        if r["Type"] == "AWS::Lambda::Permission" and not str(r["Properties"]["FunctionName"].get("Ref", "")).endswith("Aliaslive"):
            problems.append(f"{name}: invoke permission not on the alias")
    for logical in functions_of(template).values():
        group = res.get(f"{logical}DeploymentGroup")
        if not group:
            problems.append(f"{logical}: no deployment group")
            continue
        if "DEPLOYMENT_STOP_ON_ALARM" not in group["Properties"]["AutoRollbackConfiguration"]["Events"]:
            problems.append(f"{logical}: no rollback on alarm")
    return problems


def reserve_problems(template: dict, readme: str) -> list[str]:
    problems = []
    params = template["Parameters"]
    defaults = {}
    for binary, logical in functions_of(template).items():
        param = _ref(template["Resources"][logical]["Properties"].get("ReservedConcurrentExecutions"))
        if not param or param not in params:
            problems.append(f"{logical}: ReservedConcurrentExecutions is not a parameter")
            continue
        p = params[param]
        if p.get("Type") != "Number" or p.get("MinValue", 0) < 1 or "Default" not in p:
            problems.append(f"{param}: a Number with a Default and MinValue 1")
            continue
        defaults[binary] = (param, p["Default"])
        if not re.search(rf"^\| `{param}` \| {re.escape(binary)} \| {p['Default']} \|", readme, re.M):
            problems.append(f"README's capacity table has no row `{param}` | {binary} | {p['Default']}")
    if len(defaults) == len(functions_of(template)):
        chat = defaults["chat"][1]
        for always in ("login", "webhook"):
            if defaults[always][1] < 2 * chat:
                problems.append(f"{always} must always have room: its reserve {defaults[always][1]} < twice chat's {chat}")
        if chat > 10:
            problems.append(f"chat's reserve {chat} no longer caps AI spend")
        total = sum(d for _, d in defaults.values())
        if not re.search(rf"\*\*total\*\* \| \*\*{total}\*\*", readme) or f"{total} + 100 = {total + 100}" not in readme:
            problems.append(f"README's capacity total is not {total} (quota {total + 100})")
    return problems


def alarm_problems(template: dict) -> list[str]:
    problems = []
    alarms = _alarms(template)
    res = template["Resources"]
    timeout_default = template["Globals"]["Function"]["Timeout"]
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        if props.get("AlarmActions") != [{"Ref": "AlertTopic"}]:
            problems.append(f"{name}: does not notify AlertTopic")
    for binary, logical in functions_of(template).items():
        prefix = _prefix(logical)
        props = res[logical]["Properties"]
        for kind in ALARM_KINDS:
            if f"{prefix}{kind}Alarm" not in alarms:
                problems.append(f"{logical}: no {prefix}{kind}Alarm")
        fn = {"FunctionName": {"Ref": logical}}
        if (a := alarms.get(f"{prefix}ThrottlesAlarm")) and [(m["MetricName"], _dims(m)) for m in _metric_stats(a)] != [("Throttles", fn)]:
            problems.append(f"{prefix}ThrottlesAlarm: not the function's Throttles")
        if a := alarms.get(f"{prefix}DurationAlarm"):
            timeout = props.get("Timeout", timeout_default)
            p = a["Properties"]
            if [(m["MetricName"], _dims(m)) for m in _metric_stats(a)] != [("Duration", fn)] or p.get("ExtendedStatistic") != "p99" or p.get("Threshold") != int(timeout * 1000 * 0.8):
                problems.append(f"{prefix}DurationAlarm: not p99 Duration at 80% of the {timeout} s timeout")
        if a := alarms.get(f"{prefix}ConcurrencyAlarm"):
            reserve = _ref(props.get("ReservedConcurrentExecutions"))
            expressions = " ".join(_sub_text(m.get("Expression")) for m in a["Properties"].get("Metrics", []))
            if [(m["MetricName"], _dims(m)) for m in _metric_stats(a)] != [("ConcurrentExecutions", fn)] or not reserve or "${" + reserve + "}" not in expressions:
                problems.append(f"{prefix}ConcurrencyAlarm: not ConcurrentExecutions against {reserve}")
    # Tables: ThrottledRequests and SystemErrors over every operation the functions call on them.
    for logical, r in res.items():
        if r["Type"] != "AWS::DynamoDB::Table":
            continue
        used = set()
        for fn in functions_of(template).values():
            used |= granted(template, fn).tables.get(logical, set())
        want = {DDB_OPERATION[a] for a in used if a in DDB_OPERATION}
        for metric in ("ThrottledRequests", "SystemErrors"):
            ops = {
                _dims(m).get("Operation")
                for a in alarms.values() for m in _metric_stats(a)
                if m["MetricName"] == metric and m["Namespace"] == "AWS/DynamoDB" and _dims(m).get("TableName") == {"Ref": logical}
            }
            if not want <= ops:
                problems.append(f"{logical}: no {metric} alarm over {sorted(want - ops)}")
    api = {(_namespace(m["Namespace"]), m["MetricName"]) for a in alarms.values() for m in _metric_stats(a)} | {
        (_namespace(a["Properties"].get("Namespace")), a["Properties"].get("MetricName"), a["Properties"].get("ExtendedStatistic")) for a in alarms.values()
    }
    for needed in (("AWS/ApiGateway", "5XXError"), ("AWS/ApiGateway", "4XXError"), ("AWS/ApiGateway", "Latency", "p99"), ("AWS/WAFV2", "BlockedRequests")):
        if needed not in api:
            problems.append(f"no alarm on {needed}")
    rules = template.get("Rules", {})
    if not any("AlertEmail" in json.dumps(r.get("Assertions")) and "development" in json.dumps(r.get("RuleCondition")) for r in rules.values()):
        problems.append("no rule refusing staging and production without an AlertEmail")
    return problems


def metric_problems(template: dict) -> list[str]:
    problems = []
    made = produced_metrics(template)
    res = template["Resources"]
    named = [(_namespace(m["Namespace"]), m["MetricName"], f"alarm {n}") for n, a in _alarms(template).items() for m in _metric_stats(a)]
    named += [(ns, m, "the dashboard") for ns, m, _ in dashboard_metrics(template)]
    for ns, metric, where in named:
        if (ns, metric) not in made:
            problems.append(f"{where} names {ns} {metric}, which no metric filter or AWS namespace produces")
    for ns, metric, dims in dashboard_metrics(template):
        for value in dims.values():
            for ref in re.findall(r"\$\{(\w+)\}", str(value)):
                if ref not in res and ref not in template["Parameters"] and not ref.startswith("AWS::"):
                    problems.append(f"the dashboard's {metric} names ${{{ref}}}, no resource")
    own = {m for ns, m in made if ns == OWN_NAMESPACE}
    shown = {m for ns, m, _ in dashboard_metrics(template) if ns == OWN_NAMESPACE}
    if own - shown:
        problems.append(f"the dashboard leaves out metric filters {sorted(own - shown)}")
    fns = {v["Ref"] if isinstance(v, dict) else v.strip("${}") for ns, m, d in dashboard_metrics(template) if ns == "AWS/Lambda" for v in d.values()}
    for logical in functions_of(template).values():
        if logical not in fns:
            problems.append(f"the dashboard does not show {logical}")
    return problems


def runbook_problems(template: dict, runbook: str) -> list[str]:
    problems = []
    alarms = set(_alarms(template))
    queries = {_sub_text(r["Properties"]["Name"]).split("/")[-1] for r in template["Resources"].values() if r["Type"] == "AWS::Logs::QueryDefinition"}
    entries = re.split(r"^### ", runbook, flags=re.M)[1:]
    covered = set()
    for entry in entries:
        title = entry.splitlines()[0]
        named = re.search(r"^Alarms: (.+)$", entry, re.M)
        query = re.search(r"^Query first: `flowbotz/\$ENV/([a-z-]+)`", entry, re.M)
        if not named or not query:
            problems.append(f"runbook entry {title!r}: needs an `Alarms:` line and a `Query first:` saved query")
            continue
        names = set(re.findall(r"`(\w+)`", named.group(1)))
        for name in sorted(names - alarms):
            problems.append(f"runbook entry {title!r} names {name}, which template.yaml does not have")
        if query.group(1) not in queries:
            problems.append(f"runbook entry {title!r}: no saved query {query.group(1)}")
        if "Actions" not in entry:
            problems.append(f"runbook entry {title!r}: no actions")
        covered |= names
    for name in sorted(alarms - covered):
        problems.append(f"alarm {name} has no runbook entry")
    for section in ("## Incident response", "Article 33", "72 hours", "## Restore drill", "restore-table-to-point-in-time"):
        if section not in runbook:
            problems.append(f"runbook: no {section!r}")
    return problems


def edge_problems(template: dict) -> list[str]:
    """WAF, TLS and retained logs."""
    problems = []
    res = template["Resources"]
    if "WafAutoOutsideDevelopment" not in json.dumps(template["Conditions"].get("WafEnabled")) or '"development"' not in json.dumps(template["Conditions"].get("WafAutoOutsideDevelopment")):
        problems.append("EnableWaf=auto must enable the WAF outside development")
    logging = [r for r in res.values() if r["Type"] == "AWS::WAFv2::LoggingConfiguration"]
    redacted = {f["SingleHeader"]["Name"].lower() for r in logging for f in r["Properties"].get("RedactedFields", []) if "SingleHeader" in f}
    if not logging or redacted != WAF_REDACTED:
        problems.append(f"WAF logging must redact {sorted(WAF_REDACTED)}, redacts {sorted(redacted)}")
    rules = [r for r in res.get("WebAcl", {}).get("Properties", {}).get("Rules", []) if isinstance(r, dict) and "Name" in r]
    conditional = [r["If"][1] for r in res.get("WebAcl", {}).get("Properties", {}).get("Rules", []) if isinstance(r, dict) and "If" in r]
    groups = {r["Statement"].get("ManagedRuleGroupStatement", {}).get("Name") for r in rules}
    if "AWSManagedRulesAnonymousIpList" not in groups:
        problems.append("WAF: no anonymous-IP list")
    want = set().union(*(routes_of(f) for f in AUTH_ROUTE_FUNCTIONS))
    scoped = [
        {s["ByteMatchStatement"]["SearchString"] for s in r["Statement"]["RateBasedStatement"].get("ScopeDownStatement", {}).get("OrStatement", {}).get("Statements", [])}
        for r in rules if "RateBasedStatement" in r["Statement"]
    ]
    if want not in scoped:
        problems.append(f"WAF: no rate-based rule scoped to exactly {sorted(want)} (endpoints.json), found {scoped}")
    atp = [r for r in conditional if r["Statement"].get("ManagedRuleGroupStatement", {}).get("Name") == "AWSManagedRulesATPRuleSet"]
    if not atp or template["Parameters"].get("EnableWafAtp", {}).get("Default") != "false":
        problems.append("WAF: the account takeover group must be optional and off by default (EnableWafAtp)")
    api = res["Api"]["Properties"]
    if api.get("SecurityPolicy") != "TLS_1_2":
        problems.append("Api: SecurityPolicy TLS_1_2 missing")
    if api.get("DisableExecuteApiEndpoint") != {"If": ["HasCustomDomain", True, False]}:
        problems.append("Api: the execute-api endpoint must be disabled when a custom domain is set")
    domains = [r for r in res.values() if r["Type"] == "AWS::ApiGateway::DomainName"]
    if not domains or any(d["Properties"].get("SecurityPolicy") != "TLS_1_2" or d.get("Condition") != "HasCustomDomain" for d in domains):
        problems.append("the optional custom domain (HasCustomDomain) with TLS_1_2 is missing")
    for p in ("DomainName", "DomainCertificateArn", "DomainHostedZoneId"):
        if template["Parameters"].get(p, {}).get("Default") != "":
            problems.append(f"parameter {p} must be optional")
    for name, r in res.items():
        if r["Type"] == "AWS::Logs::LogGroup" and (r.get("DeletionPolicy"), r.get("UpdateReplacePolicy")) != ("Retain", "Retain"):
            problems.append(f"{name}: log groups are retained (DeletionPolicy and UpdateReplacePolicy Retain)")
    return problems


def checkov_skip_problems(template: dict) -> list[str]:
    """Checkov skips live in the resource's Metadata, each with a reason."""
    problems = []
    for name, r in template["Resources"].items():
        for skip in r.get("Metadata", {}).get("checkov", {}).get("skip", []):
            if not re.fullmatch(r"CKV2?_AWS_\d+", skip.get("id", "")) or len(skip.get("comment", "")) < 20:
                problems.append(f"{name}: checkov skip {skip} needs an id and a reason")
    return problems


def sam_transform(template_text: str, mutate=None) -> dict:
    """template.yaml through the SAM translator, as `sam validate` and CloudFormation see it."""
    import os
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicies:
        def load(self):
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    tpl = yaml_parse(template_text)
    tpl["Globals"]["Function"]["CodeUri"] = "s3://bucket/key"  # the translator wants an S3 URI; sam build makes one
    if mutate:
        mutate(tpl)
    return _normalise(transform(tpl, {"Environment": "production"}, NoManagedPolicies()))


class OperationsTest(unittest.TestCase):
    """Issue 16: what lets people run the stack safely."""

    @classmethod
    def setUpClass(cls):
        cls.template = load_template()
        cls.readme = README.read_text(encoding="utf-8")
        cls.runbook = RUNBOOK.read_text(encoding="utf-8")

    def mutated(self, mutate) -> dict:
        t = copy.deepcopy(self.template)
        mutate(t)
        return t

    def test_every_function_deploys_through_its_alias_with_rollback_alarms(self):
        self.assertEqual(deployment_problems(self.template), [])

    def test_the_api_and_the_rotation_invoke_the_alias_after_the_sam_transform(self):
        import logging
        logging.getLogger("samtranslator").setLevel(logging.ERROR)
        text = TEMPLATE.read_text(encoding="utf-8")
        self.assertEqual(transformed_problems(sam_transform(text), self.template), [])
        def no_alias(tpl):
            for props in [tpl["Globals"]["Function"]] + [r["Properties"] for r in tpl["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]:
                props.pop("AutoPublishAlias", None)
                props.pop("DeploymentPreference", None)

        self.assertTrue(transformed_problems(sam_transform(text, no_alias), self.template), "the check must catch functions without the alias")

    def test_every_function_has_a_reserve_and_the_readme_its_arithmetic(self):
        self.assertEqual(reserve_problems(self.template, self.readme), [])

    def test_every_function_table_api_and_waf_has_its_alarms(self):
        self.assertEqual(alarm_problems(self.template), [])

    def test_every_metric_an_alarm_or_the_dashboard_names_is_produced(self):
        self.assertEqual(metric_problems(self.template), [])

    def test_every_alarm_has_a_runbook_entry_and_every_entry_an_alarm(self):
        self.assertEqual(runbook_problems(self.template, self.runbook), [])

    def test_waf_tls_and_retained_logs(self):
        self.assertEqual(edge_problems(self.template), [])

    def test_checkov_skips_give_reasons(self):
        self.assertEqual(checkov_skip_problems(self.template), [])
        skipped = {s["id"] for r in self.template["Resources"].values() for s in r.get("Metadata", {}).get("checkov", {}).get("skip", [])}
        self.assertNotIn("CKV_AWS_115", skipped, "reserved concurrency is fixed, not skipped")
        self.assertNotIn("CKV_AWS_28", {s["id"] for n in ("UsersTable", "PaymentsTable") for s in self.template["Resources"][n].get("Metadata", {}).get("checkov", {}).get("skip", [])})

    def test_the_checks_fail_when_a_piece_is_removed(self):
        fns = functions_of(self.template)
        login, chat = fns["login"], fns["chat"]

        def drop(path):
            def go(t):
                node = t
                for key in path[:-1]:
                    node = node[key]
                del node[path[-1]]
            return go

        def remove_resource(name):
            return lambda t: t["Resources"].pop(name)

        def set_(path, value):
            def go(t):
                node = t
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = value
            return go

        cases = {
            "alias": (deployment_problems, drop(["Globals", "Function", "AutoPublishAlias"])),
            "deployment preference": (deployment_problems, drop(["Resources", login, "Properties", "DeploymentPreference"])),
            "api 5xx rollback trigger": (deployment_problems, set_(["Resources", login, "Properties", "DeploymentPreference", "Alarms"], [{"Ref": "LoginErrorsAlarm"}])),
            "canary in production": (deployment_problems, set_(["Globals", "Function", "DeploymentPreference", "Type"], "AllAtOnce")),
            "reserve": (lambda t: reserve_problems(t, self.readme), drop(["Resources", login, "Properties", "ReservedConcurrentExecutions"])),
            "chat cap": (lambda t: reserve_problems(t, self.readme), set_(["Parameters", "ReserveChat", "Default"], 100)),
            "throttles alarm": (alarm_problems, remove_resource("ChatThrottlesAlarm")),
            "duration alarm": (alarm_problems, remove_resource(f"{_prefix(chat)}DurationAlarm")),
            "concurrency alarm": (alarm_problems, remove_resource("LoginConcurrencyAlarm")),
            "table alarm": (alarm_problems, remove_resource("UsersTableThrottledRequestsAlarm")),
            "latency alarm": (alarm_problems, remove_resource("ApiLatencyAlarm")),
            "4xx alarm": (alarm_problems, remove_resource("Api4xxRateAlarm")),
            "waf alarm": (alarm_problems, remove_resource("WafBlockedRequestsAlarm")),
            "alert email rule": (alarm_problems, drop(["Rules"])),
            "metric filter": (metric_problems, lambda t: [t["Resources"].pop(n) for n in [n for n, r in t["Resources"].items() if r["Type"] == "AWS::Logs::MetricFilter" and r["Properties"]["MetricTransformations"][0]["MetricName"] == "CsrfFailures"]]),
            "dashboard": (metric_problems, remove_resource("Dashboard")),
            "runbook alarm": (lambda t: runbook_problems(t, self.runbook), remove_resource("AuthFailuresAlarm")),
            "waf redaction": (edge_problems, lambda t: t["Resources"]["WafLogging"]["Properties"]["RedactedFields"].pop()),
            "waf outside production": (edge_problems, set_(["Conditions", "WafEnabled"], {"Or": [{"Condition": "WafForced"}, {"Condition": "IsProduction"}]})),
            "auth route rate rule": (edge_problems, lambda t: t["Resources"]["WebAcl"]["Properties"]["Rules"].__setitem__(slice(None), [r for r in t["Resources"]["WebAcl"]["Properties"]["Rules"] if not (isinstance(r, dict) and r.get("Name") == "RateLimitAuthRoutes")])),
            "tls": (edge_problems, drop(["Resources", "Api", "Properties", "SecurityPolicy"])),
            "retained logs": (edge_problems, drop(["Resources", "ChatLogGroup", "DeletionPolicy"])),
        }
        for what, (check, mutate) in cases.items():
            with self.subTest(removed=what):
                self.assertTrue(check(self.mutated(mutate)), f"removing the {what} must fail its check")
        for entry in ("Alarms: `AuthFailuresAlarm`\n", "Query first: `flowbotz/$ENV/failed-authentications`\n", "## Restore drill", "72 hours"):
            with self.subTest(removed=entry):
                self.assertTrue(runbook_problems(self.template, self.runbook.replace(entry, "", 1)), entry)
        readme = self.readme.replace("| `ReserveWebhook` | webhook | 20 |", "| `ReserveWebhook` | webhook | 30 |")
        self.assertTrue(reserve_problems(self.template, readme), "a README default that differs must fail")


def _add_function_tests():
    for binary in functions_of(load_template()):
        def test(self, binary=binary):
            self.check(binary)
        test.__doc__ = f"functions/{binary}: policy and secrets match the code"
        setattr(DriftTest, "test_drift_" + binary.replace("-", "_"), test)


_add_function_tests()

if __name__ == "__main__":
    unittest.main()

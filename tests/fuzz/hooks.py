"""Schemathesis hooks for the fuzz run (scripts/fuzz.sh): real credentials, real signatures, and
positive cases that honour the rules of `openapi.yaml` that JSON Schema cannot express.

- Authenticated operations get a bearer token and a CSRF token of a user that these hooks
  register, verify (the link is read from the local SES's mailbox in moto) and log in once
  through the API itself. `DELETE /api/account` erases the caller, so each of its cases gets a
  user of its own; logout, logout-all and change password end sessions, so each of their cases
  gets a new session of a user kept for that operation. Tokens that the stateful phase carried over from a
  login through the document's links are kept: they are checked against the stack's JWT key.
- `POST /api/payments/webhook` bodies are signed with the stack's `STRIPE_WEBHOOK_SECRET`
  exactly as Stripe signs them, so the fuzzer reaches the code behind the signature check.
  Cases whose `Stripe-Signature` is itself the fuzzed value, or is missing, are sent as generated.
- Positive (schema-valid) cases keep to what the document states in words: each operation's
  body limit (`x-policy.body_limit_bytes`), chat's 32,000 characters in all, and a password
  strong enough for registration. Negative cases are sent as generated.
- Header values stay within what the local transport carries (see schemathesis.toml).
- `POST /api/payments/create-payment-intent` takes no `customer`, `payment_method` or
  `receipt_email` (the server owns the customer and the receipt address; `receipt: true` asks for
  a receipt): the document's schema says so with `additionalProperties: false`, so generated cases
  that add them are negative cases, sent as generated and expected to be refused with 400.

Nothing here relaxes a check: every schemathesis check runs on every response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import requests
import schemathesis
import yaml
from schemathesis.core import NotSet
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import TestPhase
from schemathesis.transport.serialization import Binary

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = os.environ.get("FLOWBOTZ_API_URL", "http://127.0.0.1:9200").rstrip("/")
PASSWORD = "violet quasar mangrove tundra 71"
WEBHOOK = "/api/payments/webhook"
REGISTER = "/api/auth/register"
CHAT = "/api/ai/chat"
PAYMENT = "/api/payments/create-payment-intent"
ACCOUNT = "/api/account"
CONFIRM = "/api/auth/password-reset/confirm"
CHANGE_PASSWORD = "/api/auth/password"
# Operations that end sessions: each case gets a session of its own (see `ending_session`).
ENDING = ("/api/auth/logout", "/api/auth/logout-all", "/api/auth/password")
MOTO_URL = (
    os.environ.get("AWS_ENDPOINT_URL_SESV2")
    or f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5205')}"
).rstrip("/")
LINK_TOKEN = {
    purpose: re.compile(rf"#{purpose}=([A-Za-z0-9_-]+)") for purpose in ("verify", "reset")
}
CHAT_MAX_TOTAL_CHARS = 32_000
WORDS = (
    "amber basalt cobalt dune ember fjord glacier harbor indigo juniper kestrel lagoon meadow "
    "nebula orchid prairie quartz raven saffron tundra umber violet willow xenon yarrow zephyr "
    "anvil bramble cinder delta falcon garnet hollow inlet jasper kiln lichen mosaic nectar "
    "obsidian pylon quiver rampart sequoia thistle"
).split()


def _env_value(name: str) -> str:
    for line in (ROOT / ".env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"{name} is not in .env; start the stack first")


WEBHOOK_SECRET = _env_value("STRIPE_WEBHOOK_SECRET").split(",")[0].strip()
JWT_KEY = _env_value("JWT_SECRET_KEY").encode()
DOCUMENT = yaml.safe_load((ROOT / "openapi.yaml").read_text())

_lock = threading.Lock()
_session: dict[str, str] | None = None
_ending_users: dict[str, str] = {}
_rng = random.SystemRandom()


def _mail_tokens(email: str, purpose: str) -> list[str]:
    """The `#<purpose>=` tokens of the mails the local SES holds for `email`, oldest first.

    moto keeps every sent message at GET /moto-api/data.json under ses -> Message (the shape
    scripts/mailbox.py and tests/mailbox.rs read)."""
    resp = requests.get(f"{MOTO_URL}/moto-api/data.json", timeout=60)
    resp.raise_for_status()
    tokens = []
    for message in resp.json().get("ses", {}).get("Message", []):
        if email in message.get("destinations", {}).get("ToAddresses", []):
            match = LINK_TOKEN[purpose].search(message.get("body", ""))
            if match:
                tokens.append(match.group(1))
    return tokens


def _verification_token(email: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        tokens = _mail_tokens(email, "verify")
        if tokens:
            return tokens[-1]
        if time.monotonic() > deadline:
            raise RuntimeError(f"no verification mail to {email} in the local SES")
        time.sleep(0.2)


def log_in(email: str, password: str = PASSWORD) -> dict[str, str] | None:
    """A new session of an existing user: its bearer and CSRF tokens, or None if refused."""
    creds = {"email": email, "password": password}
    login = requests.post(f"{BASE_URL}/api/auth/login", json=creds, timeout=30)
    if login.status_code != 200:
        return None
    body = login.json()
    return {"bearer": body["access_token"], "csrf": body["csrf_token"], "email": email}


def new_session() -> dict[str, str]:
    """Registers a new user through the API, follows the verification link mailed to it (read
    from the local SES) with the same password, and logs in: a bearer token and a CSRF token."""
    email = f"fuzz-{uuid.uuid4().hex}@example.com"
    creds = {"email": email, "password": PASSWORD}
    reg = requests.post(f"{BASE_URL}/api/auth/register", json=creds, timeout=30)
    if reg.status_code != 202:
        raise RuntimeError(f"register answered {reg.status_code}: {reg.text}")
    verify = requests.post(
        f"{BASE_URL}/api/auth/verify-email",
        json={"token": _verification_token(email), "password": PASSWORD},
        timeout=30,
    )
    # 409 account-exists: a retried attempt of this very verification already created the
    # account (moto ignores the transaction's idempotency token); the login below proves it.
    if verify.status_code not in (204, 409):
        raise RuntimeError(f"verify-email answered {verify.status_code}: {verify.text}")
    session = log_in(email)
    if session is None:
        raise RuntimeError(f"login of the verified {email} was refused")
    return session


def ending_session(path: str) -> dict[str, str]:
    """A session that an operation ending sessions (logout, logout-all, change password) may end
    without touching the shared one: a new login of a user kept for that operation, and a new
    user when that one no longer signs in (a generated case changed its password)."""
    with _lock:
        email = _ending_users.get(path)
    session = log_in(email) if email else None
    if session is None:
        session = new_session()
        with _lock:
            _ending_users[path] = session["email"]
    return session


def shared_session() -> dict[str, str]:
    global _session
    with _lock:
        if _session is None:
            _session = new_session()
        return _session


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def issued_by_the_api(authorization: object) -> bool:
    """Whether `authorization` is `Bearer <a JWT signed with the stack's key>`."""
    if not isinstance(authorization, str) or not authorization.startswith("Bearer "):
        return False
    parts = authorization[len("Bearer ") :].split(".")
    if len(parts) != 3:
        return False
    try:
        mac = hmac.new(JWT_KEY, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        return hmac.compare_digest(mac, _b64(parts[2]))
    except (ValueError, TypeError):
        return False


# No caching here: `get` hands out the shared user, or a new one for each account deletion.
@schemathesis.auth(refresh_interval=None).apply_to(
    path_regex=(
        "^/api/(ai/chat|payments/create-payment-intent|auth/csrf-token|account"
        "|auth/password|auth/logout|auth/logout-all)$"
    ),
    method_regex="^(GET|POST|DELETE)$",
)
class FlowBotzSession:
    """Bearer and CSRF tokens of a registered user (the API's `bearerAuth` and `csrfToken`)."""

    def get(self, case, context):
        if context.operation.path == ACCOUNT and case.method.upper() == "DELETE":
            return new_session()
        if context.operation.path in ENDING:
            return ending_session(context.operation.path)
        return shared_session()

    def set(self, case, data, context):
        headers = case.headers or {}
        if issued_by_the_api(headers.get("Authorization")):
            return  # a login's tokens, carried over by a link in the stateful phase
        headers["Authorization"] = f"Bearer {data['bearer']}"
        if case.method.upper() != "GET":
            headers["X-CSRF-Token"] = data["csrf"]
        case.headers = headers


def _positive_body(case) -> bool:
    return (
        case.meta is not None
        and not isinstance(case.body, NotSet)
        and not case.meta.is_negative_at(ParameterLocation.BODY)
    )


def _wire_bytes(body) -> bytes | None:
    """The bytes schemathesis sends for a JSON body (its `serialize_json`, then `requests`)."""
    try:
        if isinstance(body, (bytes, bytearray)):
            return bytes(body)
        if isinstance(body, Binary):
            return json.dumps(str(body)).encode("utf-8")
        if body is None:
            return b"null"
        return json.dumps(body, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        return None


def _body_limit(path: str, method: str) -> int | None:
    operation = DOCUMENT["paths"].get(path, {}).get(method.lower(), {})
    return operation.get("x-policy", {}).get("body_limit_bytes")


def _carried(value: object) -> bool:
    # Visible ASCII, space and tab: what hyper and the emulator pass on to a function.
    return all(ch == "\t" or " " <= ch <= "~" for ch in str(value))


def _encodes_control(value: object) -> bool:
    # The request guard refuses a header whose value, percent-decoded up to three times, holds a
    # control character (400 /problems/malicious-input, as the document's 400 says for headers).
    text = str(value)
    for _ in range(3):
        text = unquote(text)
        if any(ch < " " or ch == "\x7f" for ch in text):
            return True
    return False


def _carried_body(case) -> bool:
    # The emulator turns a JSON body into event text and answers invalid UTF-8 with its own 500.
    body = case.body
    if isinstance(body, (bytes, bytearray)) and "json" in (case.media_type or "").lower():
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


@schemathesis.hook
def filter_case(context, case):
    headers = (case.headers or {}).values()
    if any(not _carried(v) or _encodes_control(v) for v in headers) or not _carried_body(case):
        return False
    if not _positive_body(case):
        return True
    limit = _body_limit(case.path, case.method)
    payload = _wire_bytes(case.body)
    if limit is not None and payload is not None and len(payload) > limit:
        return False  # documented as 413, so not a schema-valid request
    if case.path == CHAT and isinstance(case.body, dict):
        messages = case.body.get("messages")
        if isinstance(messages, list):
            total = sum(len(m.get("content", "")) for m in messages if isinstance(m, dict))
            if total > CHAT_MAX_TOTAL_CHARS:
                return False  # documented as 422
    return True


def strong_password(email: object) -> str:
    """A passphrase that meets the documented policy: five random words and a number."""
    local = str(email).split("@")[0].lower() if isinstance(email, str) else ""
    while True:
        words = " ".join(_rng.choice(WORDS) for _ in range(5))
        candidate = f"{words} {_rng.randrange(10, 100)}"
        if len(local) < 3 or local not in candidate:
            return candidate


@schemathesis.hook
def map_case(context, case):
    # The strength rule (zxcvbn score 3, no common password, not the email's local part) is
    # stated in words in the document; a schema-valid body gets a password that keeps it.
    # The document's own examples already keep it, and login's example signs in with them.
    if (
        case.path == REGISTER
        and _positive_body(case)
        and case.meta.phase.name != TestPhase.EXAMPLES
        and isinstance(case.body, dict)
    ):
        case.body["password"] = strong_password(case.body.get("email"))
    # A new password keeps the same documented rule. A schema-valid password change sends the
    # operation's user's real password (any other is a documented 422 on `current_password`,
    # the login's "wrong password") and sets it again, so that user keeps signing in.
    # The document's own example is a schema-valid case too (examples phase).
    example = case.meta is None or case.meta.phase.name == TestPhase.EXAMPLES
    positive = isinstance(case.body, dict) and (example or _positive_body(case))
    if case.path == CONFIRM and positive:
        case.body["password"] = strong_password("")
    if case.path == CHANGE_PASSWORD and positive:
        case.body["current_password"] = PASSWORD
        case.body["new_password"] = PASSWORD
    # An Idempotency-Key names one request body for good (reused with another body it is a
    # documented 422), so each schema-valid case gets a key of its own.
    if case.path == PAYMENT and case.meta is not None and case.headers:
        key = case.headers.get("Idempotency-Key")
        if isinstance(key, str) and not case.meta.is_negative_at(ParameterLocation.HEADER):
            case.headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4().hex}"
    return case


def stripe_signature(payload: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.path != WEBHOOK or case.method.upper() != "POST":
        return
    headers = case.headers or {}
    name = next((k for k in headers if k.lower() == "stripe-signature"), None)
    if name is None:
        return
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
        return
    media = (case.media_type or "").lower()
    if isinstance(case.body, NotSet) or "json" not in media:
        return
    payload = _wire_bytes(case.body)
    if payload is None:
        return
    headers[name] = stripe_signature(payload, WEBHOOK_SECRET, int(time.time()))
    case.headers = headers
    kwargs["data"] = payload

#!/usr/bin/env python3
"""A local stand-in for the part of Stripe's API that FlowBotz uses. It is a test double.

Production talks to Stripe through the async-stripe crate. Locally, that client is pointed at
this server instead (its base URL, e.g. http://127.0.0.1:12111/). The server answers like Stripe
for the calls the project makes, and it delivers signed webhooks:

    POST /v1/payment_intents                create (form-encoded, Stripe's bracket notation)
    GET  /v1/payment_intents/{id}           retrieve
    POST /v1/payment_intents/{id}/confirm   confirm; then sends payment_intent.succeeded
    POST /v1/customers                      create (Idempotency-Key honoured, as for intents)
    GET  /v1/customers/{id}                 retrieve (a deleted customer as Stripe's stub)
    DELETE /v1/customers/{id}               delete
    POST /v1/refunds                        refund a succeeded intent; then sends charge.refunded
    GET  /v1/charges/{id}, /v1/refunds/{id}, /v1/disputes/{id}   retrieve
    POST /_standin/disputes                 (test hook; Stripe has no API for it) open a dispute
                                            on payment_intent=pi_...; sends charge.dispute.created
    POST /_standin/disputes/{id}/close      status=won|lost; sends charge.dispute.closed
    POST /_standin/outage                   target=<id>&down=true|false: while down, every request
                                            whose path names the id gets its connection closed
                                            unanswered, as if Stripe were unreachable
    POST /_standin/hold                     user_id=<id>&seconds=N: the next customer creation
                                            with metadata[user_id]=<id> waits N seconds before it
                                            runs (to interleave a request with it)
    GET  /_standin/customers?user_id=<id>   every customer created with that metadata user_id,
                                            deleted or not, and the creations held now:
                                            {"customers": [{"id", "deleted"}], "held": n}
    GET  /_standin/deliveries               webhook delivery attempts, for tests
    GET  /_standin/health                   200 when up

The objects it replies with have the key set of Stripe's own fixtures (openapi/fixtures3.json,
copied to tests/fixtures/stripe; customers, charges, refunds and disputes are built from those
files, with the request's values filled in). Some fields are null where the fixture has an example
value. On a new intent Stripe sends those fields as null: canceled_at, last_payment_error,
next_action, processing, shipping and transfer_data, for example. The fixture's values come from
stripe-mock's generator, and a fresh intent has none of them.

Run:
    STRIPE_WEBHOOK_SECRET=whsec_... python3 scripts/stripe_standin.py --host 127.0.0.1 \\
        --port 12111 --webhook-url http://127.0.0.1:9000/api/payments/webhook

and point the client at it with the trailing slash, since async-stripe appends "v1/...":
`stripe::ClientBuilder::new(key).url("http://127.0.0.1:12111/")`.

Only the standard library is used. State lives in memory and is lost when the server exits.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import string
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY_BYTES = 1 << 20
MAX_IDEMPOTENCY_KEY_LEN = 255
# Stripe keeps idempotency keys for at least 24 hours.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600

# Stripe's presentment currencies. An unsupported code gets the same 400 that Stripe sends.
SUPPORTED_CURRENCIES = frozenset(
    """usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd
    bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel
    gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd
    kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok
    npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos
    srd std szl thb tjs tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer
    zar zmw""".split()
)
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
# Minimum charge amounts (minor units) from Stripe's currency documentation. The minimum for
# GBP is £0.30, not 0.50. Stripe checks other currencies by converting to the settlement
# currency. The stand-in cannot do that, so for them it only requires a positive amount.
MIN_AMOUNT = {
    "usd": 50, "eur": 50, "gbp": 30, "aud": 50, "cad": 50, "chf": 50, "nzd": 50, "sgd": 50,
    "brl": 50, "inr": 50, "jpy": 50, "aed": 200, "bgn": 100, "czk": 1500, "dkk": 250,
    "hkd": 400, "huf": 17500, "mxn": 1000, "myr": 200, "nok": 300, "pln": 200, "ron": 200,
    "sek": 300, "thb": 1000,
}
MAX_AMOUNT = 99_999_999  # "The amount value supports up to eight digits."
CURRENCY_SYMBOL = {"usd": "$", "eur": "€", "gbp": "£"}

CREATE_PARAMS = frozenset(
    """amount currency customer payment_method description receipt_email metadata confirm
    capture_method payment_method_types automatic_payment_methods""".split()
)
CONFIRM_PARAMS = frozenset({"payment_method"})
CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")

CUSTOMER_PARAMS = frozenset({"metadata", "email", "description", "name"})
REFUND_PARAMS = frozenset({"payment_intent", "charge", "amount", "reason", "metadata"})
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")

CUSTOMER_RE = re.compile(r"^cus_[A-Za-z0-9]+$")
CUSTOMER_PATH_RE = re.compile(r"^/v1/customers/([^/]+)$")
OBJECT_PATH_RE = re.compile(r"^/v1/(charges|refunds|disputes)/([^/]+)$")
DISPUTE_CLOSE_RE = re.compile(r"^/_standin/disputes/([^/]+)/close$")
PAYMENT_METHOD_RE = re.compile(r"^pm_[A-Za-z0-9_]+$")  # test tokens such as pm_card_visa
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
INTENT_PATH_RE = re.compile(r"^/v1/payment_intents/([^/]+)$")
CONFIRM_PATH_RE = re.compile(r"^/v1/payment_intents/([^/]+)/confirm$")
API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")

ALPHANUM = string.ascii_letters + string.digits


def _fixtures_dir() -> Path:
    configured = os.environ.get("STRIPE_FIXTURES_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "tests/fixtures/stripe"


_FIXTURE_CACHE: dict = {}


def fixture(name: str) -> dict:
    """A fresh copy of Stripe's example object `name` (customer, charge, refund, dispute)."""
    if name not in _FIXTURE_CACHE:
        _FIXTURE_CACHE[name] = json.loads((_fixtures_dir() / f"{name}.json").read_text())
    return copy.deepcopy(_FIXTURE_CACHE[name])


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(ALPHANUM) for _ in range(length))


def log(message: str) -> None:
    print(f"stripe-standin: {message}", file=sys.stderr, flush=True)


class StripeError(Exception):
    """An error reply, serialised as Stripe's {"error": {...}}."""

    def __init__(self, status, message, *, type_="invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "code": code, "param": param, "message": message}}


def invalid(message, *, code=None, param=None, status=400):
    return StripeError(status, message, code=code, param=param)


# ---------------------------------------------------------------------------------------------
# Form decoding: metadata[user_id]=u1, payment_method_types[0]=card, expand[]=x
# ---------------------------------------------------------------------------------------------

BRACKET_RE = re.compile(r"\[([^\[\]]*)\]")


def _split_key(key: str) -> list[str]:
    """'a[b][0]' -> ['a', 'b', '0']; '[]' yields '' (append)."""
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    rest = key[len(head):]
    parts = BRACKET_RE.findall(rest)
    if not head or "".join(f"[{p}]" for p in parts) != rest:
        raise invalid(f"Invalid parameter name: {key}", param=key)
    return [head, *parts]


def parse_form(raw: str) -> dict:
    """Decodes a form body into nested dicts.

    Lists stay dicts keyed by index here, because only the parameter's schema tells whether
    `metadata[0]` is a list element or a key named "0". The validators convert them."""
    params: dict = {}
    for key, value in urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=False):
        parts = _split_key(key)
        node = params
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise invalid(f"Invalid hash: {'['.join(parts[: i + 1])}", param=parts[0])
            node = child
        last = parts[-1]
        if last == "":  # `x[]=v` appends
            last = str(len(node))
        if isinstance(node.get(last), dict):
            raise invalid(f"Invalid hash: {key}", param=parts[0])
        node[last] = value  # a repeated scalar key: the last value wins, as with Stripe
    return params


def as_list(value, param: str) -> list:
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        return [value[k] for k in sorted(value, key=int)]
    raise invalid(f"Invalid array: {param}", param=param)


def as_bool(value, param: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise invalid(f"Invalid boolean: {value}", param=param)


def as_string(value, param: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {param} must be a string, not a hash", param=param)
    return value


def reject_unknown(params: dict, allowed, prefix: str = "") -> None:
    for key in params:
        if key not in allowed:
            name = f"{prefix}[{key}]" if prefix else key
            raise invalid(f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


def _format_amount(amount: int, currency: str) -> str:
    decimals = 0 if currency in ZERO_DECIMAL else 2
    major = f"{amount / 10 ** decimals:,.{decimals}f}"
    return f"{CURRENCY_SYMBOL.get(currency, '')}{major} {currency}"


def parse_amount(params: dict) -> int:
    if "amount" not in params:
        raise invalid("Missing required param: amount.", code="parameter_missing", param="amount")
    raw = params["amount"]
    if raw == "":
        raise invalid(
            "You passed an empty string for 'amount'. We assume empty values are an attempt to "
            "unset a parameter; however 'amount' cannot be unset. You should remove 'amount' "
            "from your request or supply a non-empty value.",
            code="parameter_invalid_empty", param="amount",
        )
    if not isinstance(raw, str) or not re.fullmatch(r"-?\d+", raw):
        raise invalid(f"Invalid integer: {raw}", code="parameter_invalid_integer", param="amount")
    amount = int(raw)
    if amount < 1:
        raise invalid("This value must be greater than or equal to 1.",
                      code="parameter_invalid_integer", param="amount")
    return amount


def check_amount_limits(amount: int, currency: str) -> None:
    minimum = MIN_AMOUNT.get(currency, 1)
    if amount < minimum:
        raise invalid(f"Amount must be at least {_format_amount(minimum, currency)}",
                      code="amount_too_small", param="amount")
    if amount > MAX_AMOUNT:
        raise invalid(f"Amount must be no more than {_format_amount(MAX_AMOUNT, currency)}",
                      code="amount_too_large", param="amount")


def validate_currency(params: dict) -> str:
    if "currency" not in params:
        raise invalid("Missing required param: currency.", code="parameter_missing", param="currency")
    raw = params["currency"]
    if raw == "":
        raise invalid(
            "You passed an empty string for 'currency'. We assume empty values are an attempt to "
            "unset a parameter; however 'currency' cannot be unset. You should remove 'currency' "
            "from your request or supply a non-empty value.",
            code="parameter_invalid_empty", param="currency",
        )
    # Stripe's docs require lowercase codes, so "USD" is rejected here as well.
    if not isinstance(raw, str) or raw not in SUPPORTED_CURRENCIES:
        shown = raw if isinstance(raw, str) else "(a hash)"
        raise invalid(
            f"Invalid currency: {shown}. Stripe currently supports these currencies: "
            + ", ".join(sorted(SUPPORTED_CURRENCIES)),
            param="currency",
        )
    return raw


def validate_metadata(raw) -> dict:
    if raw == "":  # `metadata=` unsets every key
        return {}
    if not isinstance(raw, dict):
        raise invalid("Invalid hash", param="metadata")
    # An empty value unsets that key, so it is left out.
    metadata = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise invalid(f"Invalid value for metadata[{key}]: metadata values must be strings",
                          param=f"metadata[{key}]")
        if value != "":
            metadata[key] = value
    if len(metadata) > 50:
        raise invalid(f"Invalid metadata: metadata can have up to 50 keys, but you passed in "
                      f"{len(metadata)} keys.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 40:
            raise invalid(f"Metadata keys can have up to 40 characters, but you passed in a key "
                          f"that is {len(key)} characters long.", param="metadata")
        if len(value) > 500:
            raise invalid(f"Metadata values can have up to 500 characters, but you passed in a "
                          f"value that is {len(value)} characters long.", param=f"metadata[{key}]")
    return metadata


def validate_payment_method(raw) -> str | None:
    value = as_string(raw, "payment_method")
    if value == "":
        return None
    if not PAYMENT_METHOD_RE.match(value):
        raise invalid(f"No such PaymentMethod: '{value}'", code="resource_missing",
                      param="payment_method")
    return value


def validate_create(params: dict) -> dict:
    """Checks a create request the way Stripe does and returns the normalised fields."""
    reject_unknown(params, CREATE_PARAMS)
    amount = parse_amount(params)
    currency = validate_currency(params)
    check_amount_limits(amount, currency)  # the limits depend on the currency
    out = {"amount": amount, "currency": currency}

    customer = as_string(params.get("customer", ""), "customer")
    # The caller checks that the customer exists (State.customers), as Stripe does.
    if customer and not CUSTOMER_RE.match(customer):
        raise invalid(f"No such customer: '{customer}'", code="resource_missing", param="customer")
    out["customer"] = customer or None

    out["payment_method"] = validate_payment_method(params.get("payment_method", ""))

    description = as_string(params.get("description", ""), "description")
    if len(description) > 1000:
        raise invalid(f"Invalid string: {description[:20]}...; must be at most 1000 characters",
                      param="description")
    out["description"] = description or None

    email = as_string(params.get("receipt_email", ""), "receipt_email")
    if email and (len(email) > 800 or not EMAIL_RE.match(email)):
        raise invalid(f"Invalid email address: {email}", code="email_invalid", param="receipt_email")
    out["receipt_email"] = email or None

    out["metadata"] = validate_metadata(params.get("metadata", {}))
    out["confirm"] = as_bool(params["confirm"], "confirm") if "confirm" in params else False

    capture = as_string(params.get("capture_method", "automatic"), "capture_method")
    if capture not in CAPTURE_METHODS:
        raise invalid(f"Invalid capture_method: must be one of {', '.join(CAPTURE_METHODS)}",
                      param="capture_method")
    out["capture_method"] = capture

    if "payment_method_types" in params and "automatic_payment_methods" in params:
        raise invalid("You may only specify one of these parameters: automatic_payment_methods, "
                      "payment_method_types.", code="parameters_exclusive",
                      param="automatic_payment_methods")
    out["payment_method_types"] = None
    out["automatic_payment_methods"] = {"enabled": True}  # Stripe's default since 2023-08-16
    if "payment_method_types" in params:
        types = as_list(params["payment_method_types"], "payment_method_types")
        if not types or not all(isinstance(t, str) and re.fullmatch(r"[a-z_]+", t) for t in types):
            raise invalid("Invalid payment_method_types: must be a non-empty list of payment "
                          "method types", param="payment_method_types")
        out["payment_method_types"] = types
        out["automatic_payment_methods"] = None
    elif "automatic_payment_methods" in params:
        apm = params["automatic_payment_methods"]
        if not isinstance(apm, dict):
            raise invalid("Invalid hash", param="automatic_payment_methods")
        reject_unknown(apm, {"enabled", "allow_redirects"}, "automatic_payment_methods")
        if "enabled" not in apm:
            raise invalid("Missing required param: automatic_payment_methods[enabled].",
                          code="parameter_missing", param="automatic_payment_methods[enabled]")
        apm_out = {"enabled": as_bool(apm["enabled"], "automatic_payment_methods[enabled]")}
        if "allow_redirects" in apm:
            if apm["allow_redirects"] not in ("always", "never"):
                raise invalid("Invalid automatic_payment_methods[allow_redirects]: must be one "
                              "of always or never",
                              param="automatic_payment_methods[allow_redirects]")
            apm_out["allow_redirects"] = apm["allow_redirects"]
        out["automatic_payment_methods"] = apm_out
        if not apm_out["enabled"]:
            out["payment_method_types"] = ["card"]

    if out["confirm"] and out["payment_method"] is None:
        raise missing_payment_method_error(out["customer"])
    return out


def validate_email(raw, param: str) -> str | None:
    email = as_string(raw, param)
    if email and (len(email) > 800 or not EMAIL_RE.match(email)):
        raise invalid(f"Invalid email address: {email}", code="email_invalid", param=param)
    return email or None


def new_customer(params: dict, now: int) -> dict:
    """A Customer from Stripe's fixture, fresh: no address, discount or shipping yet."""
    reject_unknown(params, CUSTOMER_PARAMS)
    customer = fixture("customer")
    description = as_string(params.get("description", ""), "description")
    name = as_string(params.get("name", ""), "name")
    customer.update({
        "address": None,
        "created": now,
        "description": description or None,
        "discount": None,
        "email": validate_email(params.get("email", ""), "email"),
        "id": random_id("cus_", 14),
        "invoice_prefix": "".join(secrets.choice(string.ascii_uppercase + string.digits)
                                  for _ in range(8)),
        "metadata": validate_metadata(params.get("metadata", {})),
        "name": name or None,
        "shipping": None,
    })
    return customer


def deleted_customer(customer_id: str) -> dict:
    return {"deleted": True, "id": customer_id, "object": "customer"}


def new_charge(intent: dict, now: int) -> dict:
    """The Charge of a succeeded intent, from Stripe's fixture."""
    charge = fixture("charge")
    charge.update({
        "amount": intent["amount"],
        "amount_captured": intent["amount"],
        "amount_refunded": 0,
        "balance_transaction": random_id("txn_"),
        "captured": True,
        "created": now,
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "disputed": False,
        "id": intent["latest_charge"],
        "livemode": False,
        # Stripe copies the intent's metadata onto its charges.
        "metadata": copy.deepcopy(intent["metadata"]),
        "paid": True,
        "payment_intent": intent["id"],
        "payment_method": intent["payment_method"],
        "receipt_email": intent["receipt_email"],
        "refunded": False,
        "status": "succeeded",
    })
    charge["refunds"] = {"data": [], "has_more": False, "object": "list",
                         "url": f"/v1/charges/{charge['id']}/refunds"}
    return charge


def new_refund(charge: dict, amount: int, reason: str | None, metadata: dict, now: int) -> dict:
    refund = fixture("refund")
    refund.update({
        "amount": amount,
        "balance_transaction": random_id("txn_"),
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "customer": charge["customer"],
        "id": random_id("re_"),
        "metadata": metadata,
        "payment_intent": charge["payment_intent"],
        "payment_method": charge["payment_method"],
        "reason": reason,
        "status": "succeeded",
    })
    return refund


def new_dispute(charge: dict, now: int) -> dict:
    dispute = fixture("dispute")
    dispute.update({
        "amount": charge["amount"] - charge["amount_refunded"],
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "id": random_id("dp_"),
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": "fraudulent",
        "status": "needs_response",
    })
    dispute["evidence_details"]["due_by"] = now + 7 * 24 * 3600
    return dispute


def missing_payment_method_error(customer: str | None) -> StripeError:
    whom = f" with {customer}" if customer else ""
    return invalid(
        f"You cannot confirm this PaymentIntent because it's missing a payment method. To "
        f"confirm the PaymentIntent{whom}, specify a payment method attached to this customer "
        f"along with the customer ID.",
        code="payment_intent_unexpected_state",
    )


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------


def new_payment_intent(fields: dict, now: int) -> dict:
    """A PaymentIntent with the key set of Stripe's fixture (keys in the fixture's order)."""
    intent_id = random_id("pi_")
    automatic = fields["automatic_payment_methods"]
    return {
        "amount": fields["amount"],
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": automatic,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": fields["capture_method"],
        "client_secret": f"{intent_id}_secret_{random_id('', 25)}",
        "confirmation_method": "automatic",
        "created": now,
        "currency": fields["currency"],
        "customer": fields["customer"],
        "customer_account": None,
        "description": fields["description"],
        "excluded_payment_method_types": None,
        "id": intent_id,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        # Whether the payment runs through Stripe Managed Payments. It does not here.
        "managed_payments": {"enabled": False},
        "metadata": fields["metadata"],
        "next_action": None,
        "object": "payment_intent",
        "on_behalf_of": None,
        "payment_method": fields["payment_method"],
        # Stripe names the dashboard configuration that automatic payment methods came from.
        "payment_method_configuration_details": (
            {"id": random_id("pmc_"), "parent": None}
            if automatic and automatic["enabled"] else None
        ),
        "payment_method_options": {},
        "payment_method_types": fields["payment_method_types"] or ["card"],
        "processing": None,
        "receipt_email": fields["receipt_email"],
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_confirmation" if fields["payment_method"] else "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }


def confirm_intent(intent: dict, payment_method: str | None) -> str:
    """Confirms in place as a test card would succeed; returns the event type to send."""
    if intent["status"] not in CONFIRMABLE:
        raise invalid(
            f"You cannot confirm this PaymentIntent because it has a status of "
            f"{intent['status']}. Only a PaymentIntent with one of the following statuses may be "
            f"confirmed: {', '.join(CONFIRMABLE)}.",
            code="payment_intent_unexpected_state",
        )
    if payment_method:
        intent["payment_method"] = payment_method
    if not intent["payment_method"]:
        raise missing_payment_method_error(intent["customer"])
    intent["latest_charge"] = random_id("ch_")
    if intent["capture_method"] == "manual":
        intent["status"] = "requires_capture"
        intent["amount_capturable"] = intent["amount"]
        return "payment_intent.amount_capturable_updated"
    intent["status"] = "succeeded"
    intent["amount_received"] = intent["amount"]
    return "payment_intent.succeeded"


def new_event(event_type: str, obj: dict, *, request_id: str, idempotency_key: str | None,
              api_version: str | None, pending_webhooks: int) -> dict:
    """An Event with the key set of Stripe's fixture (event.json)."""
    return {
        "api_version": api_version,
        "created": int(time.time()),
        "data": {"object": copy.deepcopy(obj)},
        "id": random_id("evt_"),
        "livemode": False,
        "object": "event",
        "pending_webhooks": pending_webhooks,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": event_type,
    }


# ---------------------------------------------------------------------------------------------
# Webhook delivery
# ---------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    """Stripe's scheme: HMAC-SHA256 keyed with the whole secret (whsec_ included) over
    "{t}.{payload}", sent as `t=...,v1=<hex>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Stripe counts a 3xx as a failed delivery and does not follow it.
    def redirect_request(self, *args, **kwargs):
        return None


# No proxy from the environment: the webhook is local, and an http_proxy setting would reroute it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


@dataclass
class WebhookSender:
    url: str | None
    secret: str | None
    retries: int = 3
    backoff: float = 0.5
    timeout: float = 10.0
    deliveries: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send_later(self, event: dict) -> None:
        if not self.url:
            log(f"no webhook URL configured; event {event['id']} ({event['type']}) not sent")
            return
        threading.Thread(target=self._deliver, args=(event,), daemon=True,
                         name=f"webhook-{event['id']}").start()

    def _deliver(self, event: dict) -> None:
        # Stripe sends the event as pretty-printed JSON.
        payload = json.dumps(event, indent=2).encode()
        for attempt in range(1, self.retries + 2):
            # Each attempt is signed again with the current time, as Stripe does on retries, so
            # a late retry still passes the receiver's timestamp tolerance.
            request = urllib.request.Request(self.url, data=payload, method="POST", headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Accept": "*/*; q=0.5, application/xml",
                "Cache-Control": "no-cache",
                "Stripe-Signature": sign(self.secret, int(time.time()), payload),
            })
            status, error = None, None
            try:
                with _OPENER.open(request, timeout=self.timeout) as response:
                    status = response.status
                    response.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
                exc.close()
            except (OSError, ValueError) as exc:  # refused, timed out, bad URL
                error = f"{type(exc).__name__}: {exc}"
            ok = status is not None and 200 <= status < 300
            with self.lock:
                self.deliveries.append({
                    "event_id": event["id"],
                    "event_type": event["type"],
                    "attempt": attempt,
                    "status_code": status,
                    "error": error,
                    "delivered": ok,
                    "at": time.time(),
                })
            log(f"webhook {event['id']} {event['type']} attempt {attempt}: "
                f"{status if status is not None else error}")
            if ok or attempt > self.retries:
                return
            time.sleep(self.backoff * 2 ** (attempt - 1))

    def snapshot(self) -> list:
        with self.lock:
            return list(self.deliveries)


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


@dataclass
class StoredResponse:
    method: str
    path: str
    params: dict
    status: int
    body: bytes
    request_id: str
    at: float


class State:
    """In-memory Stripe: intents and idempotent results. One lock serialises every write, so
    two requests with the same idempotency key cannot both run."""

    def __init__(self, webhooks: WebhookSender):
        self.lock = threading.Lock()
        self.intents: dict[str, dict] = {}
        self.customers: dict[str, dict] = {}  # a deleted customer maps to None
        self.charges: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.disputes: dict[str, dict] = {}
        self.outages: set[str] = set()
        self.holds: dict[str, float] = {}  # metadata user_id -> seconds
        self.held: dict[str, int] = {}  # metadata user_id -> creations waiting now
        self.customers_of: dict[str, list[str]] = {}  # metadata user_id -> customer ids
        self.idempotent: dict[tuple[str, str], StoredResponse] = {}
        self.webhooks = webhooks


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State  # set on the subclass made by make_server

    # -- plumbing ---------------------------------------------------------------------------

    def version_string(self):
        return "stripe-standin"

    def log_request(self, code="-", size="-"):
        # http.server's line includes the query string, which can carry a client_secret.
        # _send logs each request instead.
        pass

    def log_error(self, format, *args):  # noqa: A002 - the base class's signature
        # Requests that http.server rejects itself (a malformed request line, an unknown verb).
        # Only the first argument is logged (usually the status code): the message can repeat
        # the raw request line.
        log(f"{self.client_address[0]} rejected by http.server: {args[0] if args else format}")

    def _begin(self):
        self._started = time.monotonic()
        self._request_id = random_id("req_", 14)
        self._replayed = False
        url = urllib.parse.urlsplit(self.path)
        self._route, self._query = url.path, url.query

    def _send(self, status: int, obj=None, *, raw: bytes | None = None, headers=()):
        body = raw if raw is not None else json.dumps(obj, indent=2).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, no-store")
        self.send_header("Request-Id", self._request_id)
        version = self.headers.get("Stripe-Version")
        if version and API_VERSION_RE.match(version):
            self.send_header("Stripe-Version", version)
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        # Logs the path without its query string. Neither the Authorization header nor the
        # webhook secret is logged.
        elapsed = (time.monotonic() - self._started) * 1000
        note = " idempotent-replay" if self._replayed else ""
        log(f'{self.client_address[0]} "{self.command} {self._route}" {status} '
            f"{elapsed:.1f}ms {self._request_id}{note}")

    def _error(self, err: StripeError, headers=()):
        self._send(err.status, err.body, headers=headers)

    def _read_body(self) -> str:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise invalid("Chunked request bodies are not supported by the stand-in; send "
                          "Content-Length.")
        try:
            length = int(length or 0)
        except ValueError:
            self.close_connection = True
            raise invalid("Invalid Content-Length") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise invalid("Request body too large.", status=413)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("Invalid request: the body is not valid UTF-8.") from None

    def _api_key(self) -> str:
        auth = self.headers.get("Authorization", "")
        scheme, _, credential = auth.partition(" ")
        key = None
        if scheme.lower() == "bearer":
            key = credential.strip()
        elif scheme.lower() == "basic":  # `curl -u sk_test_...:` as Stripe allows
            try:
                key = base64.b64decode(credential.strip(), validate=True).decode().partition(":")[0]
            except ValueError:
                key = None
        if not key:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
            )
        if not key.startswith("sk_test_") or len(key) <= len("sk_test_"):
            # Like Stripe, the reply shows no more than the key's last four characters.
            shown = f"{key[:8]}****{key[-4:]}" if len(key) > 16 else "****"
            raise StripeError(401, f"Invalid API Key provided: {shown}")
        return key

    # -- verbs --------------------------------------------------------------------------------

    def do_GET(self):
        self._begin()
        try:
            if self._route == "/_standin/health":
                return self._send(200, {"status": "ok"})
            if self._route == "/_standin/deliveries":
                return self._send(200, {"deliveries": self.state.webhooks.snapshot()})
            if self._route == "/_standin/customers":
                user_id = as_string(parse_form(self._query).get("user_id", ""), "user_id")
                with self.state.lock:
                    found = [{"id": c, "deleted": self.state.customers.get(c) is None}
                             for c in self.state.customers_of.get(user_id, [])]
                    held = self.state.held.get(user_id, 0)
                return self._send(200, {"customers": found, "held": held})
            if self._unreachable():
                return None
            self._api_key()
            customer = CUSTOMER_PATH_RE.match(self._route)
            other = OBJECT_PATH_RE.match(self._route)
            if customer or other:
                if self._query:
                    reject_unknown(parse_form(self._query), set())
                with self.state.lock:
                    return self._send(200, self._retrieve(customer, other))
            match = INTENT_PATH_RE.match(self._route)
            if not match:
                raise self._unrecognized()
            if self._query:
                # Stripe needs client_secret only with a publishable key; with a secret key
                # it is accepted and not checked.
                reject_unknown(parse_form(self._query), {"client_secret"})
            with self.state.lock:
                intent = self.state.intents.get(match.group(1))
                if intent is None:
                    raise no_such_intent(match.group(1))
                return self._send(200, intent)
        except StripeError as err:
            self._error(err)

    def do_POST(self):
        self._begin()
        try:
            # The body is read before anything can fail, so a keep-alive connection never
            # holds an unread request body.
            body = self._read_body()
            if self._route.startswith("/_standin/"):
                return self._test_hook(parse_form(body))
            if self._unreachable():
                return None
            api_key = self._api_key()
            if self._route == "/v1/payment_intents":
                action = self._create
            elif CONFIRM_PATH_RE.match(self._route):
                action = self._confirm
            elif self._route == "/v1/customers":
                action = self._create_customer
            elif self._route == "/v1/refunds":
                action = self._refund
            else:
                raise self._unrecognized()
            params = parse_form(body)
            if self._query:
                params.update(parse_form(self._query))
            key = self.headers.get("Idempotency-Key")
            if self._route == "/v1/customers":
                self._hold(params)
            with self.state.lock:
                if key is not None:
                    stored = self._lookup_idempotent(api_key, key, params)
                    if stored is not None:
                        self._replayed = True
                        return self._send(stored.status, raw=stored.body, headers=[
                            ("Idempotent-Replayed", "true"),
                            ("Original-Request", stored.request_id),
                        ])
                status, obj, event = action(params, key)
                body_bytes = json.dumps(obj, indent=2).encode()
                if key is not None:
                    # Only results of requests that ran are kept. A request that failed
                    # validation can be retried with the same key, as with Stripe.
                    self.state.idempotent[(api_key, key)] = StoredResponse(
                        "POST", self._route, params, status, body_bytes, self._request_id,
                        time.time())
            self._send(status, raw=body_bytes)
            if event is not None:  # after the reply, as Stripe does
                self.state.webhooks.send_later(event)
        except StripeError as err:
            self._error(err)

    def _other(self):
        self._begin()
        try:
            self._read_body()
            self._api_key()
            raise self._unrecognized()
        except StripeError as err:
            self._error(err)

    def do_DELETE(self):
        self._begin()
        try:
            self._read_body()
            if self._unreachable():
                return None
            self._api_key()
            match = CUSTOMER_PATH_RE.match(self._route)
            if not match:
                raise self._unrecognized()
            with self.state.lock:
                customer_id = match.group(1)
                if self.state.customers.get(customer_id) is None:
                    raise no_such_customer(customer_id, status=404, param="id")
                # Deleting a customer detaches its payment methods; the stub is what Stripe sends.
                self.state.customers[customer_id] = None
            self._send(200, deleted_customer(customer_id))
        except StripeError as err:
            self._error(err)

    do_PUT = do_PATCH = do_OPTIONS = _other

    # -- endpoints ----------------------------------------------------------------------------

    def _create(self, params: dict, idempotency_key: str | None):
        fields = validate_create(params)
        if fields["customer"] and self.state.customers.get(fields["customer"]) is None:
            raise no_such_customer(fields["customer"])
        intent = new_payment_intent(fields, int(time.time()))
        event = None
        if fields["confirm"]:
            event = self._event(confirm_intent(intent, None), intent, idempotency_key)
            self._charge(intent)
        self.state.intents[intent["id"]] = intent
        return 200, intent, event

    def _charge(self, intent: dict) -> None:
        if intent["status"] == "succeeded" and intent["latest_charge"]:
            self.state.charges[intent["latest_charge"]] = new_charge(intent, int(time.time()))

    def _hold(self, params: dict) -> None:
        """Waits as a hold on the creation's metadata user_id says, outside the lock."""
        metadata = params.get("metadata")
        user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
        with self.state.lock:
            seconds = self.state.holds.pop(user_id, 0) if isinstance(user_id, str) else 0
        if seconds:
            with self.state.lock:
                self.state.held[user_id] = self.state.held.get(user_id, 0) + 1
            time.sleep(seconds)
            with self.state.lock:
                self.state.held[user_id] -= 1

    def _create_customer(self, params: dict, idempotency_key: str | None):
        customer = new_customer(params, int(time.time()))
        self.state.customers[customer["id"]] = customer
        user_id = customer["metadata"].get("user_id")
        if user_id:
            self.state.customers_of.setdefault(user_id, []).append(customer["id"])
        return 200, customer, None

    def _retrieve(self, customer_match, other_match) -> dict:
        if customer_match:
            customer_id = customer_match.group(1)
            if customer_id not in self.state.customers:
                raise no_such_customer(customer_id, status=404, param="id")
            return self.state.customers[customer_id] or deleted_customer(customer_id)
        kind, object_id = other_match.groups()
        found = getattr(self.state, kind).get(object_id)
        if found is None:
            raise invalid(f"No such {kind[:-1]}: '{object_id}'", code="resource_missing",
                          param="id", status=404)
        return found

    def _refund(self, params: dict, idempotency_key: str | None):
        reject_unknown(params, REFUND_PARAMS)
        if "payment_intent" in params:
            intent_id = as_string(params["payment_intent"], "payment_intent")
            intent = self.state.intents.get(intent_id)
            if intent is None:
                raise invalid(f"No such payment_intent: '{intent_id}'", code="resource_missing",
                              param="payment_intent")
            charge = self.state.charges.get(intent["latest_charge"] or "")
            if charge is None:
                raise invalid(f"This PaymentIntent ({intent_id}) does not have a successful "
                              f"charge to refund.", code="charge_not_refundable",
                              param="payment_intent")
        elif "charge" in params:
            charge_id = as_string(params["charge"], "charge")
            charge = self.state.charges.get(charge_id)
            if charge is None:
                raise invalid(f"No such charge: '{charge_id}'", code="resource_missing",
                              param="charge")
        else:
            raise invalid("One of the following params should be provided for this request: "
                          "payment_intent or charge.", code="parameter_missing")
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise invalid(f"Charge {charge['id']} has already been refunded.",
                          code="charge_already_refunded")
        amount = remaining
        if "amount" in params:
            amount = parse_amount(params)
            if amount > remaining:
                raise invalid(f"Refund amount ({_format_amount(amount, charge['currency'])}) is "
                              f"greater than unrefunded amount on charge "
                              f"({_format_amount(remaining, charge['currency'])})",
                              code="amount_too_large", param="amount")
        reason = as_string(params.get("reason", ""), "reason") or None
        if reason is not None and reason not in REFUND_REASONS:
            raise invalid(f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}",
                          param="reason")
        now = int(time.time())
        refund = new_refund(charge, amount, reason, validate_metadata(params.get("metadata", {})),
                            now)
        self.state.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        return 200, refund, self._event("charge.refunded", charge, idempotency_key)

    def _test_hook(self, params: dict):
        """The stand-in's own controls (no API key): disputes, which only a cardholder's bank
        opens at Stripe, and outages."""
        event = None
        with self.state.lock:
            if self._route == "/_standin/outage":
                target = as_string(params.get("target", ""), "target")
                if not target:
                    raise invalid("Missing required param: target.", param="target")
                if as_bool(params.get("down", "true"), "down"):
                    self.state.outages.add(target)
                else:
                    self.state.outages.discard(target)
                reply = {"outages": sorted(self.state.outages)}
            elif self._route == "/_standin/hold":
                user_id = as_string(params.get("user_id", ""), "user_id")
                try:
                    seconds = float(as_string(params.get("seconds", ""), "seconds"))
                except ValueError:
                    seconds = -1
                if not user_id or not 0 < seconds <= 30:
                    raise invalid("Needs user_id and seconds from 0 to 30.", param="seconds")
                self.state.holds[user_id] = seconds
                reply = {"holds": sorted(self.state.holds)}
            elif self._route == "/_standin/disputes":
                intent_id = as_string(params.get("payment_intent", ""), "payment_intent")
                intent = self.state.intents.get(intent_id)
                charge = intent and self.state.charges.get(intent["latest_charge"] or "")
                if charge is None:
                    raise invalid(f"No successful charge for payment_intent '{intent_id}'",
                                  code="resource_missing", param="payment_intent")
                reply = new_dispute(charge, int(time.time()))
                charge["disputed"] = True
                self.state.disputes[reply["id"]] = reply
                event = self._event("charge.dispute.created", reply, None)
            elif match := DISPUTE_CLOSE_RE.match(self._route):
                reply = self.state.disputes.get(match.group(1))
                if reply is None:
                    raise invalid(f"No such dispute: '{match.group(1)}'", code="resource_missing",
                                  param="id", status=404)
                status = as_string(params.get("status", ""), "status")
                if status not in ("won", "lost"):
                    raise invalid("Invalid status: must be one of won, lost", param="status")
                if reply["status"] in ("won", "lost"):
                    raise invalid(f"The dispute {reply['id']} is already closed.")
                reply["status"] = status
                reply["evidence_details"]["has_evidence"] = status == "won"
                event = self._event("charge.dispute.closed", reply, None)
            else:
                raise self._unrecognized()
        self._send(200, reply)
        if event is not None:
            self.state.webhooks.send_later(event)

    def _unreachable(self) -> bool:
        """While an outage names an id in the path, the request is dropped unanswered."""
        with self.state.lock:
            down = any(target in self._route for target in self.state.outages)
        if down:
            self.close_connection = True
            log(f'{self.client_address[0]} "{self.command} {self._route}" dropped (outage)')
        return down

    def _confirm(self, params: dict, idempotency_key: str | None):
        intent_id = CONFIRM_PATH_RE.match(self._route).group(1)
        intent = self.state.intents.get(intent_id)
        if intent is None:
            raise no_such_intent(intent_id)
        reject_unknown(params, CONFIRM_PARAMS)
        payment_method = validate_payment_method(params.get("payment_method", ""))
        updated = copy.deepcopy(intent)  # a refused confirm leaves the stored intent alone
        event_type = confirm_intent(updated, payment_method)
        self._charge(updated)
        self.state.intents[intent_id] = updated
        return 200, updated, self._event(event_type, updated, idempotency_key)

    def _event(self, event_type: str, obj: dict, idempotency_key: str | None) -> dict:
        version = self.headers.get("Stripe-Version")
        return new_event(
            event_type, obj, request_id=self._request_id, idempotency_key=idempotency_key,
            # Stripe renders an event in the endpoint's API version. The stand-in uses the
            # version the client pinned, so async-stripe sees no version mismatch.
            api_version=version if version and API_VERSION_RE.match(version) else None,
            pending_webhooks=1 if self.state.webhooks.url else 0,
        )

    # -- helpers ------------------------------------------------------------------------------

    def _lookup_idempotent(self, api_key: str, key: str, params: dict) -> StoredResponse | None:
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LEN:
            raise invalid(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters.",
                          param="Idempotency-Key")
        stored = self.state.idempotent.get((api_key, key))
        if stored is None:
            return None
        if time.time() - stored.at > IDEMPOTENCY_TTL_SECONDS:
            del self.state.idempotent[(api_key, key)]
            return None
        if stored.path != self._route:
            raise StripeError(
                400,
                f"Keys for idempotent requests can only be used for the same endpoint they were "
                f"first used for ('{self._route}' vs '{stored.path}'). Try using a key other than "
                f"'{key}' if you meant to execute a different request.",
                type_="idempotency_error",
            )
        if stored.params != params:
            raise StripeError(
                400,
                f"Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                f"execute a different request.",
                type_="idempotency_error",
            )
        return stored

    def _unrecognized(self) -> StripeError:
        return StripeError(
            404,
            f"Unrecognized request URL ({self.command}: {self._route}). Please see "
            f"https://stripe.com/docs or we can help at https://support.stripe.com/.",
        )


def no_such_customer(customer_id: str, *, status: int = 400, param: str = "customer") -> StripeError:
    return invalid(f"No such customer: '{customer_id}'", code="resource_missing", param=param,
                   status=status)


def no_such_intent(intent_id: str) -> StripeError:
    return invalid(f"No such payment_intent: '{intent_id}'", code="resource_missing",
                   param="intent", status=404)


def make_server(host: str, port: int, webhooks: WebhookSender) -> ThreadingHTTPServer:
    """Builds (and binds) a server; the caller runs serve_forever(). Port 0 picks a free port."""
    handler = type("StandinHandler", (Handler,), {"state": State(webhooks)})
    return ThreadingHTTPServer((host, port), handler)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Local Stripe stand-in for FlowBotz tests (never used in production).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=12111, help="port (12111; 0 picks a free one)")
    parser.add_argument("--webhook-url", default=os.environ.get("STRIPE_WEBHOOK_URL"),
                        help="where events are POSTed (default: $STRIPE_WEBHOOK_URL)")
    parser.add_argument("--webhook-secret", default=os.environ.get("STRIPE_WEBHOOK_SECRET"),
                        help="signing secret whsec_... (default: $STRIPE_WEBHOOK_SECRET; prefer "
                             "the variable, since arguments are visible to other local users)")
    parser.add_argument("--webhook-retries", type=int, default=3,
                        help="retries after a failed delivery (3)")
    parser.add_argument("--webhook-backoff", type=float, default=0.5,
                        help="seconds before the first retry, doubling after each (0.5)")
    args = parser.parse_args(argv)

    if args.webhook_url and not args.webhook_secret:
        parser.error("--webhook-url needs --webhook-secret or STRIPE_WEBHOOK_SECRET")
    if args.webhook_retries < 0 or args.webhook_backoff < 0:
        parser.error("--webhook-retries and --webhook-backoff must not be negative")
    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            log(f"warning: listening on {args.host}, which is not a loopback address")
    except ValueError:
        pass  # a host name; bound as given

    webhooks = WebhookSender(args.webhook_url, args.webhook_secret,
                             retries=args.webhook_retries, backoff=args.webhook_backoff)
    server = make_server(args.host, args.port, webhooks)
    host, port = server.server_address[:2]
    log(f"listening on http://{host}:{port} (webhooks: {args.webhook_url or 'off'})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

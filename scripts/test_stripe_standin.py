"""Tests for scripts/stripe_standin.py, run over real HTTP on 127.0.0.1.

    python3 -m unittest scripts/test_stripe_standin.py      (or: python3 scripts/test_stripe_standin.py)

The replies are checked against Stripe's fixture objects (payment_intent.json, event.json). The
fixtures are looked up in $STRIPE_FIXTURES_DIR, then tests/fixtures/stripe/.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stripe_standin  # noqa: E402

HOST = "127.0.0.1"
API_KEY = "sk_test_standin_tests_0001"
WEBHOOK_SECRET = "whsec_test_" + "ab" * 16
# No proxies from the environment: every request in these tests stays on 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# The fixture holds stripe-mock's example values for these nullable fields (a cancellation time,
# a last_payment_error, a next_action...). Stripe sends null for them on a new intent, and so
# does the stand-in. async-stripe types each of them as Option<...>.
NULLABLE_INTENT_FIELDS = frozenset({
    "automatic_payment_methods", "canceled_at", "last_payment_error", "next_action",
    "payment_method_configuration_details", "processing", "shipping", "transfer_data",
})


def fixtures_dir() -> Path:
    candidates = [os.environ.get("STRIPE_FIXTURES_DIR"), HERE.parent / "tests/fixtures/stripe"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "payment_intent.json").is_file():
            return Path(candidate)
    raise RuntimeError("Stripe fixtures not found; set STRIPE_FIXTURES_DIR")


FIXTURES = fixtures_dir()
INTENT_FIXTURE = json.loads((FIXTURES / "payment_intent.json").read_text())
CUSTOMER_FIXTURE = json.loads((FIXTURES / "customer.json").read_text())
CHARGE_FIXTURE = json.loads((FIXTURES / "charge.json").read_text())
REFUND_FIXTURE = json.loads((FIXTURES / "refund.json").read_text())
DISPUTE_FIXTURE = json.loads((FIXTURES / "dispute.json").read_text())
# A fresh customer has none of these; the fixture shows example values.
NULLABLE_CUSTOMER_FIELDS = frozenset({"address", "discount", "shipping"})
# Null when the intent has none.
NULLABLE_CHARGE_FIELDS = frozenset({"description", "receipt_email"})
EVENT_FIXTURE = json.loads((FIXTURES / "event.json").read_text())


def assert_shape(tc: unittest.TestCase, expected, actual, path: str = "", nullable=frozenset()):
    """Checks that `actual` has the fixture's keys, nesting and JSON types, recursively.

    A null in the fixture marks a nullable field and does not show its type, so any value
    matches it. An empty object in the fixture is a map (metadata) or an object whose keys are
    all optional, so it matches any object. Paths in `nullable` may be null in `actual`."""
    where = path or "(root)"
    if expected is None:
        return
    if actual is None:
        tc.assertIn(path, nullable, f"{where} is null, but the fixture has {expected!r}")
        return
    if isinstance(expected, dict):
        tc.assertIsInstance(actual, dict, where)
        if expected:
            tc.assertEqual(sorted(actual), sorted(expected), f"keys of {where}")
            for key in expected:
                child = f"{path}.{key}" if path else key
                assert_shape(tc, expected[key], actual[key], child, nullable)
    elif isinstance(expected, list):
        tc.assertIsInstance(actual, list, where)
        if expected:
            for i, item in enumerate(actual):
                assert_shape(tc, expected[0], item, f"{path}[{i}]", nullable)
    elif isinstance(expected, bool):
        tc.assertIsInstance(actual, bool, where)
    elif isinstance(expected, int):
        tc.assertIs(type(actual), int, where)
    else:
        tc.assertIsInstance(actual, type(expected), where)


class Response:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.raw = status, headers, body
        self.json = json.loads(body) if body else None


def http(method: str, url: str, form=None, headers=None) -> Response:
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with OPENER.open(request, timeout=10) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, exc.headers, exc.read())


def verify_signature(header: str, payload: bytes, secret: str, tolerance: int = 300) -> int:
    """Checks a Stripe-Signature header the way Stripe's libraries do; returns its timestamp."""
    parts = [item.split("=", 1) for item in header.split(",")]
    timestamp = int(next(v for k, v in parts if k == "t"))
    candidates = [v for k, v in parts if k == "v1"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload,
                        hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise AssertionError("no v1 signature matches")
    if abs(time.time() - timestamp) > tolerance:
        raise AssertionError("signature timestamp outside the tolerance")
    return timestamp


class WebhookReceiver:
    """A tiny local endpoint that records each POST. Its answers can be scripted per payment
    intent (for example 500, then 200)."""

    def __init__(self):
        self.received: list[dict] = []
        self.scripted: dict[str, list[int]] = {}
        self.cond = threading.Condition()
        receiver = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    intent_id = json.loads(body)["data"]["object"]["id"]
                except (ValueError, KeyError, TypeError):
                    intent_id = None
                with receiver.cond:
                    queue = receiver.scripted.get(intent_id) or []
                    status = queue.pop(0) if queue else 200
                    receiver.received.append({"headers": dict(self.headers), "body": body,
                                              "intent_id": intent_id, "answered": status})
                    receiver.cond.notify_all()
                reply = b'{"received": true}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), H)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/api/payments/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, intent_id: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [r for r in self.received if r["intent_id"] == intent_id]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} deliveries for {intent_id}, got {len(got)}")
                self.cond.wait(left)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class StandinTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The in-process server logs into a list, not the test output. CommandLineTest checks
        # the real stderr log.
        cls.log_lines = []
        cls._real_log = stripe_standin.log
        stripe_standin.log = cls.log_lines.append
        cls.receiver = WebhookReceiver()
        webhooks = stripe_standin.WebhookSender(cls.receiver.url, WEBHOOK_SECRET,
                                                retries=3, backoff=0.05)
        cls.server = stripe_standin.make_server(HOST, 0, webhooks)
        cls.base = f"http://{HOST}:{cls.server.server_address[1]}"
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.receiver.close()
        stripe_standin.log = cls._real_log

    # -- helpers ------------------------------------------------------------------------------

    def post(self, path, form=None, key=API_KEY, headers=None):
        h = {"Authorization": f"Bearer {key}"} if key else {}
        h.update(headers or {})
        return http("POST", self.base + path, form if form is not None else {}, h)

    def get(self, path, key=API_KEY):
        return http("GET", self.base + path, None,
                    {"Authorization": f"Bearer {key}"} if key else {})

    def create(self, **overrides):
        form = {"amount": "2000", "currency": "usd"}
        form.update(overrides)
        return self.post("/v1/payment_intents", form)

    def assert_error(self, response, status, type_="invalid_request_error", code=None, param=None):
        self.assertEqual(response.status, status, response.raw)
        self.assertEqual(set(response.json), {"error"})
        error = response.json["error"]
        self.assertEqual(set(error), {"type", "code", "param", "message"})
        self.assertEqual(error["type"], type_)
        self.assertIsInstance(error["message"], str)
        if code is not None:
            self.assertEqual(error["code"], code)
        if param is not None:
            self.assertEqual(error["param"], param)
        return error

    # -- create -------------------------------------------------------------------------------

    def test_create_has_the_fixture_shape_and_the_request_values(self):
        before = int(time.time())
        customer = self.post("/v1/customers", {"metadata[user_id]": "u1"}).json["id"]
        r = self.create(**{
            "amount": "1099", "currency": "eur", "description": "FlowBotz Pro",
            "receipt_email": "a@example.com", "customer": customer,
            "metadata[user_id]": "u1", "metadata[plan]": "pro",
            "payment_method_types[0]": "card",
        })
        self.assertEqual(r.status, 200, r.raw)
        self.assertTrue(r.headers["Content-Type"].startswith("application/json"))
        self.assertRegex(r.headers["Request-Id"], r"^req_")
        pi = r.json
        assert_shape(self, INTENT_FIXTURE, pi, nullable=NULLABLE_INTENT_FIELDS)
        self.assertRegex(pi["id"], r"^pi_[A-Za-z0-9]{24}$")
        self.assertRegex(pi["client_secret"], rf"^{pi['id']}_secret_[A-Za-z0-9]+$")
        self.assertEqual(pi["object"], "payment_intent")
        self.assertEqual((pi["amount"], pi["currency"]), (1099, "eur"))
        self.assertEqual(pi["metadata"], {"user_id": "u1", "plan": "pro"})
        self.assertEqual(pi["description"], "FlowBotz Pro")
        self.assertEqual(pi["receipt_email"], "a@example.com")
        self.assertEqual(pi["customer"], customer)
        self.assertIsNone(pi["payment_method"])
        self.assertEqual(pi["status"], "requires_payment_method")
        self.assertEqual((pi["amount_capturable"], pi["amount_received"]), (0, 0))
        self.assertEqual(pi["confirmation_method"], "automatic")
        self.assertEqual(pi["capture_method"], "automatic")
        self.assertEqual(pi["payment_method_types"], ["card"])
        self.assertIsNone(pi["automatic_payment_methods"])
        self.assertIs(pi["livemode"], False)
        self.assertLessEqual(before, pi["created"])
        self.assertLessEqual(pi["created"], int(time.time()))
        for name in NULLABLE_INTENT_FIELDS - {"automatic_payment_methods",
                                              "payment_method_configuration_details"}:
            self.assertIsNone(pi[name], name)

        # The stored intent is what GET returns.
        got = self.get(f"/v1/payment_intents/{pi['id']}")
        self.assertEqual(got.status, 200)
        self.assertEqual(got.json, pi)

    def test_create_with_payment_method_and_automatic_payment_methods(self):
        r = self.create(**{"payment_method": "pm_card_visa",
                           "automatic_payment_methods[enabled]": "true"})
        self.assertEqual(r.status, 200, r.raw)
        assert_shape(self, INTENT_FIXTURE, r.json, nullable=NULLABLE_INTENT_FIELDS)
        self.assertEqual(r.json["status"], "requires_confirmation")
        self.assertEqual(r.json["payment_method"], "pm_card_visa")
        self.assertEqual(r.json["automatic_payment_methods"], {"enabled": True})
        self.assertRegex(r.json["payment_method_configuration_details"]["id"], r"^pmc_")
        self.assertEqual(r.json["metadata"], {})

    def test_intents_get_distinct_ids_and_secrets(self):
        a, b = self.create().json, self.create().json
        self.assertNotEqual(a["id"], b["id"])
        self.assertNotEqual(a["client_secret"], b["client_secret"])

    # -- auth ---------------------------------------------------------------------------------

    def test_401_without_a_key(self):
        self.assert_error(self.post("/v1/payment_intents", {"amount": "2000", "currency": "usd"},
                                    key=None), 401)
        self.assert_error(self.get("/v1/payment_intents/pi_x", key=None), 401)

    def test_401_with_a_key_that_is_not_a_test_secret_key(self):
        for key in ("sk_live_0123456789abcdef", "pk_test_0123456789abcdef", "sk_test_", "nope"):
            with self.subTest(key=key):
                error = self.assert_error(self.post("/v1/payment_intents", {}, key=key), 401)
                # The reply never repeats a whole key.
                self.assertNotIn(key, error["message"])

    def test_basic_auth_is_accepted_like_stripe(self):
        import base64
        token = base64.b64encode(f"{API_KEY}:".encode()).decode()
        r = http("POST", self.base + "/v1/payment_intents", {"amount": "2000", "currency": "usd"},
                 {"Authorization": f"Basic {token}"})
        self.assertEqual(r.status, 200, r.raw)

    # -- validation ---------------------------------------------------------------------------

    def test_invalid_amount_is_400_with_param_amount(self):
        cases = [
            ({"amount": "abc"}, "parameter_invalid_integer"),
            ({"amount": "12.5"}, "parameter_invalid_integer"),
            ({"amount": "0"}, "parameter_invalid_integer"),
            ({"amount": "-100"}, "parameter_invalid_integer"),
            ({"amount": ""}, "parameter_invalid_empty"),
            ({"amount": "49"}, "amount_too_small"),
            ({"amount": "49", "currency": "eur"}, "amount_too_small"),
            ({"amount": "29", "currency": "gbp"}, "amount_too_small"),
            ({"amount": "100000000"}, "amount_too_large"),
        ]
        for overrides, code in cases:
            with self.subTest(overrides=overrides):
                self.assert_error(self.create(**overrides), 400, code=code, param="amount")
        missing = self.post("/v1/payment_intents", {"currency": "usd"})
        self.assert_error(missing, 400, code="parameter_missing", param="amount")
        # The smallest amounts Stripe accepts.
        for currency, amount in (("usd", "50"), ("eur", "50"), ("gbp", "30")):
            with self.subTest(currency=currency):
                self.assertEqual(self.create(amount=amount, currency=currency).status, 200)

    def test_invalid_currency_is_400_with_param_currency(self):
        for currency in ("USD", "xyz", "us", "usdd"):
            with self.subTest(currency=currency):
                self.assert_error(self.create(currency=currency), 400, param="currency")
        self.assert_error(self.create(currency=""), 400, code="parameter_invalid_empty",
                          param="currency")
        self.assert_error(self.post("/v1/payment_intents", {"amount": "2000"}), 400,
                          code="parameter_missing", param="currency")

    def test_unknown_parameter_is_400_parameter_unknown(self):
        self.assert_error(self.create(foo="bar"), 400, code="parameter_unknown", param="foo")
        self.assert_error(self.create(**{"automatic_payment_methods[enabled]": "true",
                                         "automatic_payment_methods[foo]": "1"}),
                          400, code="parameter_unknown", param="automatic_payment_methods[foo]")

    def test_other_parameters_are_checked(self):
        cases = [
            ({"customer": "abc"}, "customer"),
            ({"payment_method": "card_123"}, "payment_method"),
            ({"receipt_email": "not-an-email"}, "receipt_email"),
            ({"description": "x" * 1001}, "description"),
            ({"confirm": "yes"}, "confirm"),
            ({"capture_method": "later"}, "capture_method"),
            ({"payment_method_types": "card"}, "payment_method_types"),
            ({"payment_method_types[0]": "card", "automatic_payment_methods[enabled]": "true"},
             "automatic_payment_methods"),
            ({"metadata": "x"}, "metadata"),
        ]
        for overrides, param in cases:
            with self.subTest(overrides=overrides):
                self.assert_error(self.create(**overrides), 400, param=param)
        self.assertEqual(self.create(description="x" * 1000).status, 200)

    def test_metadata_limits(self):
        ok = {f"metadata[k{i}]": "v" for i in range(50)}
        self.assertEqual(self.create(**ok).status, 200)
        too_many = {f"metadata[k{i}]": "v" for i in range(51)}
        self.assert_error(self.create(**too_many), 400, param="metadata")
        self.assert_error(self.create(**{"metadata[" + "k" * 41 + "]": "v"}), 400,
                          param="metadata")
        error = self.assert_error(self.create(**{"metadata[note]": "v" * 501}), 400)
        self.assertTrue(error["param"].startswith("metadata"))
        self.assertEqual(self.create(**{"metadata[" + "k" * 40 + "]": "v" * 500}).status, 200)

    def test_bracket_conflicts_are_400(self):
        r = self.post("/v1/payment_intents",
                      [("amount", "2000"), ("currency", "usd"), ("metadata", "x"),
                       ("metadata[a]", "b")])
        self.assert_error(r, 400, param="metadata")

    # -- idempotency --------------------------------------------------------------------------

    def test_idempotent_replay_returns_the_same_intent(self):
        form = {"amount": "2000", "currency": "usd", "metadata[user_id]": "u1"}
        headers = {"Idempotency-Key": "replay-1"}
        first = self.post("/v1/payment_intents", form, headers=headers)
        second = self.post("/v1/payment_intents", form, headers=headers)
        self.assertEqual((first.status, second.status), (200, 200))
        self.assertIsNone(first.headers.get("Idempotent-Replayed"))
        self.assertEqual(second.headers.get("Idempotent-Replayed"), "true")
        self.assertEqual(second.headers.get("Original-Request"), first.headers["Request-Id"])
        self.assertEqual(second.json["id"], first.json["id"])
        self.assertEqual(second.json, first.json)

    def test_idempotency_keys_are_scoped_per_api_key(self):
        form = {"amount": "2000", "currency": "usd"}
        headers = {"Idempotency-Key": "shared-key"}
        a = self.post("/v1/payment_intents", form, headers=headers)
        b = self.post("/v1/payment_intents", form, key="sk_test_other_account", headers=headers)
        self.assertEqual((a.status, b.status), (200, 200))
        self.assertNotEqual(a.json["id"], b.json["id"])
        self.assertIsNone(b.headers.get("Idempotent-Replayed"))

    def test_reusing_a_key_with_other_parameters_is_an_idempotency_error(self):
        headers = {"Idempotency-Key": "reuse-1"}
        first = self.post("/v1/payment_intents", {"amount": "2000", "currency": "usd"},
                          headers=headers)
        self.assertEqual(first.status, 200)
        r = self.post("/v1/payment_intents", {"amount": "3000", "currency": "usd"},
                      headers=headers)
        error = self.assert_error(r, 400, type_="idempotency_error")
        self.assertTrue(error["message"].startswith(
            "Keys for idempotent requests can only be used with the same parameters they were "
            "first used with."), error["message"])

    def test_a_request_that_failed_validation_does_not_use_up_its_key(self):
        headers = {"Idempotency-Key": "retry-after-400"}
        bad = self.post("/v1/payment_intents", {"amount": "1", "currency": "usd"}, headers=headers)
        self.assertEqual(bad.status, 400)
        good = self.post("/v1/payment_intents", {"amount": "2000", "currency": "usd"},
                         headers=headers)
        self.assertEqual(good.status, 200, good.raw)

    # -- retrieve -----------------------------------------------------------------------------

    def test_retrieving_an_unknown_intent_is_404_resource_missing(self):
        error = self.assert_error(self.get("/v1/payment_intents/pi_doesnotexist"), 404,
                                  code="resource_missing", param="intent")
        self.assertEqual(error["message"], "No such payment_intent: 'pi_doesnotexist'")
        self.assert_error(self.post("/v1/payment_intents/pi_doesnotexist/confirm"), 404,
                          code="resource_missing", param="intent")

    # -- confirm and webhooks -----------------------------------------------------------------

    def test_confirm_succeeds_and_delivers_a_signed_event(self):
        pi = self.create(amount="4200", **{"metadata[user_id]": "u42"}).json
        r = self.post(f"/v1/payment_intents/{pi['id']}/confirm",
                      {"payment_method": "pm_card_visa"},
                      headers={"Stripe-Version": "2025-08-27.basil"})
        self.assertEqual(r.status, 200, r.raw)
        confirmed = r.json
        assert_shape(self, INTENT_FIXTURE, confirmed, nullable=NULLABLE_INTENT_FIELDS)
        self.assertEqual(confirmed["status"], "succeeded")
        self.assertEqual(confirmed["amount_received"], 4200)
        self.assertEqual(confirmed["payment_method"], "pm_card_visa")
        self.assertRegex(confirmed["latest_charge"], r"^ch_")
        self.assertEqual(self.get(f"/v1/payment_intents/{pi['id']}").json, confirmed)

        delivery = self.receiver.wait_for(pi["id"])[0]
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
        self.assertRegex(headers["stripe-signature"], r"^t=\d+,v1=[0-9a-f]{64}$")
        verify_signature(headers["stripe-signature"], delivery["body"], WEBHOOK_SECRET)
        with self.assertRaises(AssertionError):
            verify_signature(headers["stripe-signature"], delivery["body"], "whsec_wrong")

        event = json.loads(delivery["body"])
        expected = copy.deepcopy(EVENT_FIXTURE)
        expected["data"]["object"] = INTENT_FIXTURE  # event.json's object is a plan
        assert_shape(self, expected, event,
                     nullable={f"data.object.{n}" for n in NULLABLE_INTENT_FIELDS})
        self.assertRegex(event["id"], r"^evt_[A-Za-z0-9]{24}$")
        self.assertEqual(event["object"], "event")
        self.assertEqual(event["type"], "payment_intent.succeeded")
        self.assertIs(event["livemode"], False)
        self.assertEqual(event["api_version"], "2025-08-27.basil")
        self.assertEqual(event["request"]["id"], r.headers["Request-Id"])
        self.assertEqual(event["data"]["object"], confirmed)

        deliveries = self.wait_for_deliveries(event["id"], 1)
        self.assertEqual(deliveries[0]["status_code"], 200)
        self.assertTrue(deliveries[0]["delivered"])

    def test_failed_deliveries_are_retried_and_recorded(self):
        pi = self.create(payment_method="pm_card_visa").json
        self.receiver.scripted[pi["id"]] = [500, 503]
        r = self.post(f"/v1/payment_intents/{pi['id']}/confirm",
                      headers={"Idempotency-Key": "confirm-retry"})
        self.assertEqual(r.status, 200, r.raw)
        attempts = self.receiver.wait_for(pi["id"], 3)
        self.assertEqual([a["answered"] for a in attempts], [500, 503, 200])
        for attempt in attempts:  # each attempt is signed on its own
            verify_signature(attempt["headers"]["Stripe-Signature"], attempt["body"],
                             WEBHOOK_SECRET)
        event = json.loads(attempts[0]["body"])
        self.assertEqual(event["request"]["idempotency_key"], "confirm-retry")
        recorded = self.wait_for_deliveries(event["id"], 3)
        self.assertEqual([d["status_code"] for d in recorded], [500, 503, 200])
        self.assertEqual([d["attempt"] for d in recorded], [1, 2, 3])

        # Replaying the confirm returns the stored reply and sends nothing new.
        again = self.post(f"/v1/payment_intents/{pi['id']}/confirm",
                          headers={"Idempotency-Key": "confirm-retry"})
        self.assertEqual(again.headers.get("Idempotent-Replayed"), "true")
        self.assertEqual(again.json, r.json)
        time.sleep(0.3)
        self.assertEqual(len(self.receiver.wait_for(pi["id"], 3)), 3)

    def test_an_unreachable_webhook_is_tried_four_times(self):
        webhooks = stripe_standin.WebhookSender(f"http://{HOST}:9/unreachable", WEBHOOK_SECRET,
                                                retries=3, backoff=0.01, timeout=2)
        event = stripe_standin.new_event("payment_intent.succeeded", {"id": "pi_x"},
                                         request_id="req_x", idempotency_key=None,
                                         api_version=None, pending_webhooks=1)
        webhooks._deliver(event)
        recorded = webhooks.snapshot()
        self.assertEqual([d["attempt"] for d in recorded], [1, 2, 3, 4])
        self.assertTrue(all(d["status_code"] is None and d["error"] for d in recorded))

    def test_confirm_refuses_what_stripe_refuses(self):
        pi = self.create().json
        self.assert_error(self.post(f"/v1/payment_intents/{pi['id']}/confirm"), 400,
                          code="payment_intent_unexpected_state")
        self.assertEqual(self.get(f"/v1/payment_intents/{pi['id']}").json["status"],
                         "requires_payment_method")
        ok = self.post(f"/v1/payment_intents/{pi['id']}/confirm", {"payment_method": "pm_x1"})
        self.assertEqual(ok.status, 200)
        self.assert_error(self.post(f"/v1/payment_intents/{pi['id']}/confirm"), 400,
                          code="payment_intent_unexpected_state")
        self.assert_error(self.post(f"/v1/payment_intents/{pi['id']}/confirm", {"amount": "1"}),
                          400, code="parameter_unknown", param="amount")

    def test_manual_capture_confirms_to_requires_capture(self):
        pi = self.create(payment_method="pm_card_visa", capture_method="manual").json
        r = self.post(f"/v1/payment_intents/{pi['id']}/confirm")
        self.assertEqual(r.json["status"], "requires_capture")
        self.assertEqual((r.json["amount_capturable"], r.json["amount_received"]), (2000, 0))
        event = json.loads(self.receiver.wait_for(pi["id"])[0]["body"])
        self.assertEqual(event["type"], "payment_intent.amount_capturable_updated")

    def test_create_with_confirm_true_succeeds_at_once(self):
        pi = self.create(payment_method="pm_card_visa", confirm="true").json
        self.assertEqual(pi["status"], "succeeded")
        event = json.loads(self.receiver.wait_for(pi["id"])[0]["body"])
        self.assertEqual(event["data"]["object"]["id"], pi["id"])
        self.assert_error(self.create(confirm="true"), 400, code="payment_intent_unexpected_state")

    # -- everything else ----------------------------------------------------------------------

    # -- customers, refunds, disputes, outages -----------------------------------------------

    def test_customers_are_created_idempotently_retrieved_and_deleted(self):
        key = {"Idempotency-Key": f"fbz-customer-{time.time_ns()}"}
        form = {"metadata[user_id]": "u-7"}
        first = self.post("/v1/customers", form, headers=key)
        self.assertEqual(first.status, 200, first.raw)
        customer = first.json
        assert_shape(self, CUSTOMER_FIXTURE, customer, nullable=NULLABLE_CUSTOMER_FIELDS)
        self.assertRegex(customer["id"], r"^cus_[A-Za-z0-9]+$")
        self.assertEqual((customer["object"], customer["metadata"]), ("customer", {"user_id": "u-7"}))
        self.assertIsNone(customer["email"])
        again = self.post("/v1/customers", form, headers=key)
        self.assertEqual(again.json["id"], customer["id"], "one key, one customer")
        self.assertEqual(again.headers["Idempotent-Replayed"], "true")
        self.assertNotEqual(self.post("/v1/customers", form).json["id"], customer["id"])
        self.assertEqual(self.get(f"/v1/customers/{customer['id']}").json, customer)
        deleted = http("DELETE", f"{self.base}/v1/customers/{customer['id']}", None,
                       {"Authorization": f"Bearer {API_KEY}"})
        self.assertEqual(deleted.status, 200, deleted.raw)
        self.assertEqual(deleted.json, {"deleted": True, "id": customer["id"], "object": "customer"})
        self.assertEqual(self.get(f"/v1/customers/{customer['id']}").json, deleted.json)
        again = http("DELETE", f"{self.base}/v1/customers/{customer['id']}", None,
                     {"Authorization": f"Bearer {API_KEY}"})
        self.assert_error(again, 404, code="resource_missing")
        self.assert_error(self.get("/v1/customers/cus_Nope"), 404, code="resource_missing")
        self.assert_error(self.create(customer=customer["id"]), 400, code="resource_missing",
                          param="customer")
        self.assert_error(self.post("/v1/customers", {"source": "tok_visa"}), 400,
                          code="parameter_unknown")

    def _paid_intent(self, amount="3000"):
        pi = self.create(amount=amount, **{"metadata[user_id]": "u-9"}).json
        r = self.post(f"/v1/payment_intents/{pi['id']}/confirm", {"payment_method": "pm_card_visa"})
        self.assertEqual(r.status, 200, r.raw)
        return r.json

    def _event_of(self, object_id, event_type, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.receiver.cond:
                got = [r for r in self.receiver.received if r["intent_id"] == object_id]
            for delivery in got:
                event = json.loads(delivery["body"])
                if event["type"] == event_type:
                    headers = {k.lower(): v for k, v in delivery["headers"].items()}
                    verify_signature(headers["stripe-signature"], delivery["body"], WEBHOOK_SECRET)
                    return event
            time.sleep(0.05)
        self.fail(f"no {event_type} for {object_id}")

    def test_refunds_update_the_charge_and_send_charge_refunded(self):
        pi = self._paid_intent()
        charge = self.get(f"/v1/charges/{pi['latest_charge']}").json
        assert_shape(self, CHARGE_FIXTURE, charge, nullable=NULLABLE_CHARGE_FIELDS)
        self.assertEqual((charge["payment_intent"], charge["amount"]), (pi["id"], 3000))
        self.assertEqual(charge["metadata"], {"user_id": "u-9"})
        r = self.post("/v1/refunds", {"payment_intent": pi["id"], "amount": "1000"})
        self.assertEqual(r.status, 200, r.raw)
        assert_shape(self, REFUND_FIXTURE, r.json)
        self.assertEqual((r.json["amount"], r.json["payment_intent"]), (1000, pi["id"]))
        event = self._event_of(pi["latest_charge"], "charge.refunded")
        expected = copy.deepcopy(EVENT_FIXTURE)
        expected["data"]["object"] = CHARGE_FIXTURE
        assert_shape(self, expected, event,
                     nullable={"api_version"} | {f"data.object.{n}" for n in NULLABLE_CHARGE_FIELDS})
        obj = event["data"]["object"]
        self.assertEqual((obj["amount_refunded"], obj["refunded"]), (1000, False))
        self.assert_error(self.post("/v1/refunds", {"payment_intent": pi["id"], "amount": "2001"}),
                          400, code="amount_too_large")
        rest = self.post("/v1/refunds", {"payment_intent": pi["id"]})
        self.assertEqual(rest.json["amount"], 2000)
        charge = self.get(f"/v1/charges/{pi['latest_charge']}").json
        self.assertEqual((charge["amount_refunded"], charge["refunded"]), (3000, True))
        self.assertEqual(self.get(f"/v1/refunds/{rest.json['id']}").json, rest.json)
        self.assert_error(self.post("/v1/refunds", {"payment_intent": pi["id"]}), 400,
                          code="charge_already_refunded")
        unpaid = self.create().json
        self.assert_error(self.post("/v1/refunds", {"payment_intent": unpaid["id"]}), 400,
                          code="charge_not_refundable")

    def test_disputes_open_and_close_with_signed_events(self):
        pi = self._paid_intent()
        r = http("POST", f"{self.base}/_standin/disputes",
                 {"payment_intent": pi["id"]}, {})
        self.assertEqual(r.status, 200, r.raw)
        dispute = r.json
        assert_shape(self, DISPUTE_FIXTURE, dispute)
        self.assertEqual((dispute["payment_intent"], dispute["status"]), (pi["id"], "needs_response"))
        created = self._event_of(dispute["id"], "charge.dispute.created")
        self.assertEqual(created["data"]["object"]["id"], dispute["id"])
        closed = http("POST", f"{self.base}/_standin/disputes/{dispute['id']}/close",
                      {"status": "lost"}, {})
        self.assertEqual(closed.json["status"], "lost")
        event = self._event_of(dispute["id"], "charge.dispute.closed")
        expected = copy.deepcopy(EVENT_FIXTURE)
        expected["data"]["object"] = DISPUTE_FIXTURE
        assert_shape(self, expected, event, nullable={"api_version"})
        self.assertEqual(event["data"]["object"]["status"], "lost")
        self.assertEqual(self.get(f"/v1/disputes/{dispute['id']}").json["status"], "lost")
        again = http("POST", f"{self.base}/_standin/disputes/{dispute['id']}/close",
                     {"status": "won"}, {})
        self.assertEqual(again.status, 400)

    def test_an_outage_drops_requests_naming_the_target_until_it_ends(self):
        customer = self.post("/v1/customers", {}).json["id"]
        http("POST", f"{self.base}/_standin/outage", {"target": customer, "down": "true"}, {})
        with self.assertRaises((urllib.error.URLError, ConnectionError, OSError)):
            http("DELETE", f"{self.base}/v1/customers/{customer}", None,
                 {"Authorization": f"Bearer {API_KEY}"})
        self.assertEqual(self.create().status, 200, "other requests are served")
        http("POST", f"{self.base}/_standin/outage", {"target": customer, "down": "false"}, {})
        r = http("DELETE", f"{self.base}/v1/customers/{customer}", None,
                 {"Authorization": f"Bearer {API_KEY}"})
        self.assertEqual(r.json["deleted"], True)

    def test_unknown_routes_are_404_in_stripe_error_shape(self):
        self.assert_error(self.get("/v1/customers"), 404)
        self.assert_error(self.post("/v1/test_helpers/anything"), 404)
        self.assert_error(http("DELETE", self.base + "/v1/payment_intents", None,
                               {"Authorization": f"Bearer {API_KEY}"}), 404)

    def test_health(self):
        r = self.get("/_standin/health", key=None)
        self.assertEqual((r.status, r.json), (200, {"status": "ok"}))

    def wait_for_deliveries(self, event_id: str, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            records = [d for d in self.get("/_standin/deliveries", key=None).json["deliveries"]
                       if d["event_id"] == event_id]
            if len(records) >= count or time.monotonic() > deadline:
                self.assertEqual(len(records), count, records)
                return records
            time.sleep(0.05)


class CommandLineTest(unittest.TestCase):
    """Runs the script as a process, as the local stack does."""

    def test_cli_reads_the_environment_and_keeps_secrets_out_of_the_log(self):
        receiver = WebhookReceiver()
        self.addCleanup(receiver.close)
        env = dict(os.environ, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                   STRIPE_WEBHOOK_URL=receiver.url)
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "stripe_standin.py"), "--host", HOST, "--port", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        first = proc.stderr.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", first)
        self.assertIsNotNone(match, first)
        base = f"http://{HOST}:{match.group(1)}"
        auth = {"Authorization": f"Bearer {API_KEY}"}

        pi = http("POST", base + "/v1/payment_intents",
                  {"amount": "2000", "currency": "usd", "payment_method": "pm_card_visa"}, auth).json
        query = "?client_secret=" + urllib.parse.quote(pi["client_secret"])
        http("GET", base + f"/v1/payment_intents/{pi['id']}{query}", None, auth)
        http("POST", base + f"/v1/payment_intents/{pi['id']}/confirm", {}, auth)
        delivery = receiver.wait_for(pi["id"])[0]
        verify_signature(delivery["headers"]["Stripe-Signature"], delivery["body"],
                         WEBHOOK_SECRET)
        deadline = time.monotonic() + 5
        while not http("GET", base + "/_standin/deliveries").json["deliveries"]:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)

        proc.terminate()
        _, rest = proc.communicate(timeout=10)
        log = first + rest
        self.assertIn('"POST /v1/payment_intents" 200', log)
        self.assertIn(f'"POST /v1/payment_intents/{pi["id"]}/confirm" 200', log)
        for secret in (WEBHOOK_SECRET, API_KEY, pi["client_secret"], "Authorization"):
            self.assertNotIn(secret, log)

    def test_cli_refuses_a_webhook_url_without_a_secret(self):
        env = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
        proc = subprocess.run(
            [sys.executable, str(HERE / "stripe_standin.py"), "--port", "0",
             "--webhook-url", "http://127.0.0.1:9/x"],
            env=env, capture_output=True, text=True, timeout=10)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--webhook-secret", proc.stderr)


if __name__ == "__main__":
    unittest.main()

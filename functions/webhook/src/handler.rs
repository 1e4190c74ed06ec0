use flowbotz_security::Event as SecurityEvent;
use std::collections::HashMap;
use std::sync::Arc;

use flowbotz_security::clock::Clock;
use flowbotz_security::config::{ConfigError, Need};
use flowbotz_security::payments::signature::{self, DEFAULT_TOLERANCE_SECS};
use flowbotz_security::payments::{
    Claim, EventLedger, PaymentFacts, PaymentStatus, PaymentUpdate, Transition,
};
use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::secrets::Secrets;
use flowbotz_security::validate::integer;
use flowbotz_security::{ApiError, Ctx, Endpoint, EndpointId, Handler, HandlerResult, Secret};
use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;

pub(crate) const ENDPOINT: Endpoint = EndpointId::Webhook.endpoint();

/// How long one delivery may hold an event before a retry may take it over.
const LEASE_SECS: u64 = 60;
/// How long processed event ids are remembered (Stripe retries for up to three days).
const KEEP_SECS: u64 = 30 * 24 * 3600;

/// The webhook's settings.
pub(crate) struct Settings {
    /// The signing secret(s) (`STRIPE_WEBHOOK_SECRET_ID`): one or more comma-separated
    /// `whsec_` values (several while a secret is being rolled), read at each delivery so a
    /// rotated value is used once fetched.
    pub(crate) secrets: Secrets,
    /// `STRIPE_WEBHOOK_TOLERANCE_SECONDS`: accepted distance of the signature's timestamp from
    /// now, either way (default 300).
    pub(crate) tolerance_secs: u64,
}

/// The signing secrets in use now.
fn signing_secrets(secrets: &Secrets) -> Vec<Secret> {
    secrets
        .snapshot()
        .get(Need::StripeWebhookSecret)
        .map(|v| {
            v.current
                .expose()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Secret::new)
                .collect()
        })
        .unwrap_or_default()
}

impl Settings {
    pub(crate) fn from_env(secrets: Secrets) -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok(), secrets)
    }

    pub(crate) fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        secrets: Secrets,
    ) -> Result<Self, ConfigError> {
        let tolerance_secs = match get("STRIPE_WEBHOOK_TOLERANCE_SECONDS") {
            Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
                var: "STRIPE_WEBHOOK_TOLERANCE_SECONDS".into(),
                reason: "not a number of seconds".into(),
            })?,
            None => DEFAULT_TOLERANCE_SECS,
        };
        Ok(Self {
            secrets,
            tolerance_secs,
        })
    }
}

/// The fields of an event the function uses; everything else is ignored, so events of any API
/// version parse.
#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(deserialize_with = "integer::required")]
    created: u64,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct IntentObject {
    id: String,
    #[serde(deserialize_with = "integer::required")]
    amount: i64,
    currency: String,
    status: String,
    #[serde(default)]
    metadata: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct ChargeObject {
    payment_intent: Option<String>,
    #[serde(deserialize_with = "integer::required")]
    amount: i64,
    #[serde(deserialize_with = "integer::required")]
    amount_refunded: i64,
    currency: String,
    refunded: bool,
    #[serde(default)]
    metadata: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct DisputeObject {
    payment_intent: Option<String>,
    status: String,
}

fn user_of(metadata: &HashMap<String, serde_json::Value>) -> Option<String> {
    metadata
        .get("user_id")
        .and_then(|v| v.as_str())
        .filter(|u| !u.is_empty() && u.len() <= 255)
        .map(str::to_string)
}

fn object<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, ApiError> {
    serde_json::from_value(event.data.object.clone())
        .map_err(|_| ApiError::BadRequest("The event's object is incomplete.".into()))
}

/// A ledger failure: 503, so Stripe retries the delivery; the cause goes to the log only.
fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::ServiceUnavailable {
        reason: format!("{what}: {e}"),
        retry_after: 1,
    }
}

pub(crate) struct Webhook {
    ledger: Arc<dyn EventLedger>,
    clock: Arc<dyn Clock>,
    settings: Settings,
}

impl Webhook {
    pub(crate) fn new(
        ledger: Arc<dyn EventLedger>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self {
            ledger,
            clock,
            settings,
        }
    }

    /// The payment update an event carries, if its type is one the ledger records. Checked
    /// before the event is claimed, so a malformed event is refused even when its id was
    /// already processed.
    fn update(event: &Event) -> Result<Option<PaymentUpdate>, ApiError> {
        let transition = |status, refunded_amount| Transition {
            status,
            event_created: event.created,
            refunded_amount,
        };
        let (intent_id, user_id, facts, transition) = match event.kind.as_str() {
            "payment_intent.succeeded"
            | "payment_intent.payment_failed"
            | "payment_intent.canceled"
            | "payment_intent.processing"
            | "payment_intent.requires_action"
            | "payment_intent.amount_capturable_updated"
            | "payment_intent.created" => {
                let intent: IntentObject = object(event)?;
                let status = if event.kind == "payment_intent.payment_failed" {
                    PaymentStatus::Failed
                } else {
                    match PaymentStatus::from_intent_status(&intent.status) {
                        Some(s) => s,
                        None => return Ok(None),
                    }
                };
                let user = user_of(&intent.metadata);
                let facts = PaymentFacts {
                    amount: intent.amount,
                    currency: intent.currency,
                };
                (Some(intent.id), user, Some(facts), transition(status, 0))
            }
            "charge.refunded" => {
                let charge: ChargeObject = object(event)?;
                let status = if charge.refunded {
                    PaymentStatus::Refunded
                } else {
                    PaymentStatus::PartiallyRefunded
                };
                let user = user_of(&charge.metadata);
                let facts = PaymentFacts {
                    amount: charge.amount,
                    currency: charge.currency,
                };
                // Never more refunded than paid, whatever a malformed or hostile event says.
                let refunded = charge.amount_refunded.clamp(0, charge.amount.max(0));
                let t = transition(status, refunded);
                (charge.payment_intent, user, Some(facts), t)
            }
            "charge.dispute.created" | "charge.dispute.closed" => {
                let dispute: DisputeObject = object(event)?;
                let status = match (event.kind.as_str(), dispute.status.as_str()) {
                    ("charge.dispute.created", _) => PaymentStatus::Disputed,
                    (_, "won") => PaymentStatus::DisputeWon,
                    (_, "lost") => PaymentStatus::DisputeLost,
                    _ => return Ok(None),
                };
                (dispute.payment_intent, None, None, transition(status, 0))
            }
            _ => return Ok(None),
        };
        let Some(intent_id) = intent_id else {
            return Ok(None);
        };
        if intent_id.is_empty() || intent_id.len() > 255 {
            return Err(ApiError::BadRequest(
                "The event's payment intent id is invalid.".into(),
            ));
        }
        Ok(Some(PaymentUpdate {
            intent_id,
            user_id,
            facts,
            transition,
            event_id: event.id.clone(),
        }))
    }
}

impl Handler for Webhook {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
        let payload = body_bytes(&req);
        let header = req
            .headers()
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok());
        let now = self.clock.now_s();
        if let Err(reason) = signature::verify(
            payload,
            header,
            &signing_secrets(&self.settings.secrets),
            now,
            self.settings.tolerance_secs,
        ) {
            ctx.event = Some(SecurityEvent::WebhookSignatureInvalid);
            tracing::warn!(request_id = %ctx.request_id, client_ip = %ctx.client_ip, event = SecurityEvent::WebhookSignatureInvalid.as_str(), %reason, "webhook signature refused");
            return Err(ApiError::BadRequest(
                "The Stripe-Signature header is missing or does not match the payload.".into(),
            ));
        }
        let event: Event = serde_json::from_slice(payload)
            .map_err(|_| ApiError::BadRequest("The payload is not a Stripe event.".into()))?;
        if event.id.is_empty() || event.id.len() > 255 {
            return Err(ApiError::BadRequest("The event id is invalid.".into()));
        }
        if event.kind.is_empty() || event.kind.len() > 255 {
            return Err(ApiError::BadRequest("The event type is invalid.".into()));
        }
        let update = Self::update(&event)?;
        let store_error = |e| unavailable("event ledger", e);
        match self
            .ledger
            .claim(&event.id, now, LEASE_SECS, KEEP_SECS)
            .await
            .map_err(store_error)?
        {
            Claim::Completed => {
                return Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({"received": true, "duplicate": true}),
                ));
            }
            Claim::InProgress { retry_after } => {
                return Err(ApiError::ServiceUnavailable {
                    reason: "event being processed".into(),
                    retry_after,
                });
            }
            Claim::Acquired => {}
        }
        if let Some(update) = &update {
            self.ledger
                .apply_payment(update)
                .await
                .map_err(|e| unavailable("payment update", e))?;
        }
        self.ledger
            .complete(&event.id, self.clock.now_s())
            .await
            .map_err(store_error)?;
        tracing::info!(request_id = %ctx.request_id, stripe_event = %event.id, kind = %event.kind, "webhook processed");
        Ok(json(StatusCode::OK, &serde_json::json!({"received": true})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use flowbotz_security::clock::ManualClock;
    use flowbotz_security::payments::memory::MemoryLedger;
    use flowbotz_security::payments::{EventLedger, PaymentRecord};
    use flowbotz_security::ratelimit::StoreError;
    use flowbotz_security::secrets::Versions;
    use flowbotz_security::{Config, Environment, Pipeline};
    use flowbotz_tests::events::{Event as Fixture, SHAPES};
    use lambda_http::{Body, Response};
    use std::sync::atomic::{AtomicBool, Ordering};

    const T0: u64 = 1_800_000_000;
    const SECRET: &str = "whsec_test_current";
    const OLD: &str = "whsec_test_previous";

    fn event_json(id: &str, kind: &str) -> String {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/stripe/event.json"))
                .expect("fixture");
        let mut intent: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/stripe/payment_intent.json"
        ))
        .expect("fixture");
        intent["id"] = "pi_123".into();
        intent["amount"] = 2000.into();
        intent["currency"] = "usd".into();
        intent["status"] = "succeeded".into();
        intent["metadata"] = serde_json::json!({"user_id": "u-1"});
        let mut e = fixture;
        e["id"] = id.into();
        e["type"] = kind.into();
        e["created"] = T0.into();
        e["data"]["object"] = intent;
        e.to_string()
    }

    fn setup(ledger: Arc<dyn EventLedger>) -> (Pipeline, Webhook, ManualClock) {
        let config = Arc::new(
            Config::from_lookup(|k| (k == "ENVIRONMENT").then(|| "development".into()))
                .expect("config"),
        );
        let clock = ManualClock::at_ms(T0 * 1000);
        let secrets = Secrets::fixed(
            Environment::Development,
            [(
                Need::StripeWebhookSecret,
                Versions::single(format!("{OLD}, {SECRET}")),
            )]
            .into(),
        );
        let settings = Settings::from_lookup(|_| None, secrets).expect("settings");
        (
            Pipeline::new(ENDPOINT, config),
            Webhook::new(ledger, Arc::new(clock.clone()), settings),
            clock,
        )
    }

    fn delivery(body: &str, header: &str, shape: usize) -> lambda_http::Request {
        Fixture::new(SHAPES[shape % 2], "POST", "/api/payments/webhook")
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Stripe-Signature", header)
            .body(body)
            .request()
    }

    fn json_of(resp: &Response<Body>) -> serde_json::Value {
        match resp.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }

    #[tokio::test]
    async fn given_a_signed_event_when_delivered_twice_then_processed_once() {
        let ledger = Arc::new(MemoryLedger::new());
        let (p, h, _) = setup(ledger.clone());
        let body = event_json("evt_1", "payment_intent.succeeded");
        let first = p
            .serve(
                delivery(&body, &signature::sign(body.as_bytes(), SECRET, T0), 0),
                &h,
            )
            .await;
        assert_eq!(first.status(), 200);
        assert_eq!(json_of(&first), serde_json::json!({"received": true}));
        let again = p
            .serve(
                delivery(&body, &signature::sign(body.as_bytes(), SECRET, T0 + 5), 1),
                &h,
            )
            .await;
        assert_eq!(
            json_of(&again),
            serde_json::json!({"received": true, "duplicate": true})
        );
        let record = ledger
            .payment("pi_123")
            .await
            .expect("read")
            .expect("record");
        assert_eq!(record.updates, 1);
        assert_eq!(record.status, "succeeded");
        assert_eq!(record.user_id.as_deref(), Some("u-1"));
    }

    #[tokio::test]
    async fn given_bad_signatures_when_delivered_then_400_and_nothing_is_recorded() {
        let ledger = Arc::new(MemoryLedger::new());
        let (p, h, _) = setup(ledger.clone());
        let body = event_json("evt_2", "payment_intent.succeeded");
        let good = signature::sign(body.as_bytes(), SECRET, T0);
        let tampered = body.replace("2000", "1");
        let cases = [
            (
                body.clone(),
                signature::sign(body.as_bytes(), "whsec_attacker", T0),
            ),
            (tampered, good.clone()),
            (
                body.clone(),
                signature::sign(body.as_bytes(), SECRET, T0 - 301),
            ),
            (
                body.clone(),
                signature::sign(body.as_bytes(), SECRET, T0 + 301),
            ),
            (body.clone(), "t=1,v1=zz".to_string()),
        ];
        for (i, (b, header)) in cases.iter().enumerate() {
            let resp = p.serve(delivery(b, header, i), &h).await;
            assert_eq!(resp.status(), 400, "case {i}");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
        }
        let missing = Fixture::new(SHAPES[0], "POST", "/api/payments/webhook")
            .header("Content-Type", "application/json")
            .body(&body)
            .request();
        assert_eq!(p.serve(missing, &h).await.status(), 400);
        assert!(ledger.payment("pi_123").await.expect("read").is_none());
    }

    #[tokio::test]
    async fn given_rotation_when_delivered_then_first_v1_or_old_secret_is_accepted() {
        let (p, h, _) = setup(Arc::new(MemoryLedger::new()));
        let body = event_json("evt_3", "payment_intent.succeeded");
        let good = signature::sign(body.as_bytes(), SECRET, T0);
        let sig = good.split("v1=").nth(1).unwrap_or_default();
        let two = format!("t={T0},v1={sig},v1={}", "ab".repeat(32));
        assert_eq!(p.serve(delivery(&body, &two, 0), &h).await.status(), 200);
        let body = event_json("evt_4", "payment_intent.succeeded");
        assert_eq!(
            p.serve(
                delivery(&body, &signature::sign(body.as_bytes(), OLD, T0), 1),
                &h
            )
            .await
            .status(),
            200
        );
    }

    #[tokio::test]
    async fn given_a_valid_signature_over_non_json_or_unknown_types_when_delivered_then_400_or_ignored()
     {
        let ledger = Arc::new(MemoryLedger::new());
        let (p, h, _) = setup(ledger.clone());
        let body = "this is not json";
        assert_eq!(
            p.serve(
                delivery(body, &signature::sign(body.as_bytes(), SECRET, T0), 0),
                &h
            )
            .await
            .status(),
            400
        );
        let body = event_json("evt_5", "customer.created");
        let resp = p
            .serve(
                delivery(&body, &signature::sign(body.as_bytes(), SECRET, T0), 1),
                &h,
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert!(ledger.payment("pi_123").await.expect("read").is_none());
    }

    #[tokio::test]
    async fn given_integral_floats_or_a_bad_intent_id_when_delivered_then_read_exactly_or_refused()
    {
        let ledger = Arc::new(MemoryLedger::new());
        let (p, h, _) = setup(ledger.clone());
        let deliver = |body: String, shape: usize| {
            let header = signature::sign(body.as_bytes(), SECRET, T0);
            delivery(&body, &header, shape)
        };
        let mut event: serde_json::Value =
            serde_json::from_str(&event_json("evt_7", "payment_intent.succeeded")).expect("json");
        event["created"] = serde_json::json!(1_800_000_000.0);
        event["data"]["object"]["amount"] = serde_json::json!(2000.0);
        let resp = p.serve(deliver(event.to_string(), 0), &h).await;
        assert_eq!(resp.status(), 200);
        let record = ledger
            .payment("pi_123")
            .await
            .expect("read")
            .expect("record");
        assert_eq!(record.amount, Some(2000));
        assert_eq!(record.last_event_created, 1_800_000_000);

        for (id, object) in [
            ("evt_8", serde_json::json!({"amount": 20.5})),
            ("evt_9", serde_json::json!({"id": ""})),
            ("evt_10", serde_json::json!({"id": "pi_".repeat(100)})),
        ] {
            let mut e = event.clone();
            e["id"] = id.into();
            for (k, v) in object.as_object().expect("object") {
                e["data"]["object"][k] = v.clone();
            }
            let resp = p.serve(deliver(e.to_string(), 1), &h).await;
            assert_eq!(resp.status(), 400, "{id}");
        }
        // A malformed event is refused even when its id was already processed.
        let mut repeat = event.clone();
        repeat["data"]["object"]["currency"] = serde_json::json!(7);
        let resp = p.serve(deliver(repeat.to_string(), 1), &h).await;
        assert_eq!(resp.status(), 400, "a malformed repeat of evt_7");
        let mut untyped = event.clone();
        untyped["id"] = "evt_11".into();
        untyped["type"] = "".into();
        let resp = p.serve(deliver(untyped.to_string(), 0), &h).await;
        assert_eq!(resp.status(), 400, "an empty event type");
    }

    /// A signed event of `kind` about pi_123 created at `at`, with `object` fields over the
    /// fixture of its object type.
    fn sequence_event(id: &str, kind: &str, at: u64, object: serde_json::Value) -> String {
        let mut e: serde_json::Value = serde_json::from_str(&event_json(id, kind)).expect("json");
        e["created"] = at.into();
        if kind.starts_with("charge.") {
            e["data"]["object"] = serde_json::json!({
                "id": "ch_1", "object": if kind == "charge.refunded" { "charge" } else { "dispute" },
                "payment_intent": "pi_123", "amount": 2000, "amount_refunded": 0,
                "currency": "usd", "refunded": false, "status": "needs_response",
                "metadata": {"user_id": "u-1"},
            });
        }
        for (k, v) in object.as_object().expect("object") {
            e["data"]["object"][k] = v.clone();
        }
        e.to_string()
    }

    fn permutations(items: &[String]) -> Vec<Vec<String>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first.clone());
                out.push(p);
            }
        }
        out
    }

    async fn final_record(sequence: &[String]) -> PaymentRecord {
        let ledger = Arc::new(MemoryLedger::new());
        let (p, h, _) = setup(ledger.clone());
        for (i, body) in sequence.iter().enumerate() {
            let resp = p
                .serve(
                    delivery(body, &signature::sign(body.as_bytes(), SECRET, T0), i),
                    &h,
                )
                .await;
            assert_eq!(resp.status(), 200, "{}", json_of(&resp));
        }
        let mut record = ledger
            .payment("pi_123")
            .await
            .expect("read")
            .expect("record");
        record.updates = 0;
        record
    }

    #[tokio::test]
    async fn given_every_delivery_order_of_a_payment_when_applied_then_one_final_record() {
        // A failed attempt and the retry's success in the same second, a partial refund, a
        // dispute; every order, each with a repeated delivery.
        let events = vec![
            sequence_event(
                "evt_fail",
                "payment_intent.payment_failed",
                T0,
                serde_json::json!({"status": "requires_payment_method"}),
            ),
            sequence_event(
                "evt_ok",
                "payment_intent.succeeded",
                T0,
                serde_json::json!({}),
            ),
            sequence_event(
                "evt_refund",
                "charge.refunded",
                T0 + 10,
                serde_json::json!({"amount_refunded": 500}),
            ),
            sequence_event(
                "evt_dispute",
                "charge.dispute.created",
                T0 + 20,
                serde_json::json!({"status": "needs_response"}),
            ),
        ];
        let expected = PaymentRecord {
            intent_id: "pi_123".into(),
            user_id: Some("u-1".into()),
            amount: Some(2000),
            currency: Some("usd".into()),
            status: "disputed".into(),
            rank: Transition {
                status: PaymentStatus::Disputed,
                event_created: T0 + 20,
                refunded_amount: 0,
            }
            .rank(),
            refunded_amount: 500,
            last_event_id: "evt_dispute".into(),
            last_event_created: T0 + 20,
            erased_at: None,
            updates: 0,
        };
        let orders = permutations(&events);
        assert_eq!(orders.len(), 24);
        for (n, mut order) in orders.into_iter().enumerate() {
            order.push(order[n % 4].clone());
            assert_eq!(final_record(&order).await, expected, "order {n}");
        }
    }

    #[tokio::test]
    async fn given_success_then_a_same_second_failure_when_delivered_then_still_succeeded() {
        let ok = sequence_event(
            "evt_a",
            "payment_intent.succeeded",
            T0,
            serde_json::json!({}),
        );
        let failed = sequence_event(
            "evt_b",
            "payment_intent.payment_failed",
            T0,
            serde_json::json!({"status": "requires_payment_method"}),
        );
        let record = final_record(&[ok, failed]).await;
        assert_eq!(record.status, "succeeded");
    }

    #[tokio::test]
    async fn given_a_partial_refund_above_the_amount_when_delivered_then_capped_at_the_amount() {
        let over = sequence_event(
            "evt_over",
            "charge.refunded",
            T0 + 1,
            serde_json::json!({"amount_refunded": 5000}),
        );
        let record = final_record(&[over]).await;
        assert_eq!(
            (
                record.status.as_str(),
                record.refunded_amount,
                record.amount
            ),
            ("partially_refunded", 2000, Some(2000))
        );
    }

    #[tokio::test]
    async fn given_refunds_and_a_closed_dispute_when_delivered_in_any_order_then_recorded() {
        let full = sequence_event(
            "evt_r2",
            "charge.refunded",
            T0 + 5,
            serde_json::json!({"amount_refunded": 2000, "refunded": true}),
        );
        let partial = sequence_event(
            "evt_r1",
            "charge.refunded",
            T0 + 1,
            serde_json::json!({"amount_refunded": 700}),
        );
        let record = final_record(&[full.clone(), partial.clone()]).await;
        assert_eq!(
            (record.status.as_str(), record.refunded_amount),
            ("refunded", 2000)
        );
        let record = final_record(&[partial]).await;
        assert_eq!(
            (record.status.as_str(), record.refunded_amount),
            ("partially_refunded", 700)
        );
        let won = sequence_event(
            "evt_w",
            "charge.dispute.closed",
            T0 + 9,
            serde_json::json!({"status": "won"}),
        );
        let opened = sequence_event(
            "evt_o",
            "charge.dispute.created",
            T0 + 2,
            serde_json::json!({"status": "needs_response"}),
        );
        let record = final_record(&[won, opened]).await;
        assert_eq!(record.status, "dispute_won");
        assert_eq!(
            record.amount, None,
            "a dispute alone does not set the amount"
        );
        let lost = sequence_event(
            "evt_l",
            "charge.dispute.closed",
            T0 + 9,
            serde_json::json!({"status": "lost"}),
        );
        assert_eq!(final_record(&[lost]).await.status, "dispute_lost");
    }

    #[tokio::test]
    async fn given_an_ip_blocked_elsewhere_or_rate_limited_here_when_stripe_delivers_then_never_blocked()
     {
        use flowbotz_security::config::{BlockPolicy, RateLimit};
        use flowbotz_security::ratelimit::memory::MemoryStore;
        use flowbotz_security::ratelimit::{RateLimiter, Subject};
        let config = Arc::new(
            Config::from_lookup(|k| (k == "ENVIRONMENT").then(|| "development".into()))
                .expect("config"),
        );
        let clock = ManualClock::at_ms(T0 * 1000);
        let limiter = Arc::new(RateLimiter::new(
            Arc::new(MemoryStore::new()),
            Arc::new(clock.clone()),
            BlockPolicy {
                violations: 10,
                window: std::time::Duration::from_secs(600),
                duration: std::time::Duration::from_secs(900),
            },
            ["webhook", "login"],
            std::time::Duration::from_secs(1),
        ));
        let ip = "198.51.100.7";
        let one = RateLimit {
            per_minute: 1,
            burst: None,
        };
        for _ in 0..12 {
            if limiter
                .check("login", Subject::Ip(ip), one)
                .await
                .expect("check")
                .verdict
                == flowbotz_security::ratelimit::Verdict::Limited
            {
                limiter.record_violation(ip).await.expect("violation");
            }
        }
        assert!(limiter.known_block(ip).is_some(), "blocked on login");
        let secrets = Secrets::fixed(
            Environment::Development,
            [(Need::StripeWebhookSecret, Versions::single(SECRET))].into(),
        );
        let settings = Settings::from_lookup(|_| None, secrets).expect("settings");
        let p = Pipeline::new(ENDPOINT, config.clone()).with_limiter(limiter.clone());
        let h = Webhook::new(
            Arc::new(MemoryLedger::new()),
            Arc::new(clock.clone()),
            settings,
        );
        let deliver = |i: usize| {
            let body = event_json(&format!("evt_rl_{i}"), "payment_intent.succeeded");
            Fixture::new(SHAPES[i % 2], "POST", "/api/payments/webhook")
                .source_ip(ip)
                .header("Content-Type", "application/json")
                .header(
                    "Stripe-Signature",
                    &signature::sign(body.as_bytes(), SECRET, T0),
                )
                .body(&body)
                .request()
        };
        assert_eq!(
            p.serve(deliver(0), &h).await.status(),
            200,
            "a block elsewhere does not apply"
        );
        // Past 300 a minute the webhook answers 429, but its refusals never block the IP.
        let limit = config.endpoint("webhook").rate.per_minute as usize;
        let mut limited = 0;
        for i in 1..limit + 15 {
            if p.serve(deliver(i), &h).await.status() == 429 {
                limited += 1;
            }
        }
        assert!(limited >= 14, "still rate limited per IP ({limited})");
        clock.advance_ms(61_000);
        assert_eq!(
            p.serve(deliver(9_999), &h).await.status(),
            200,
            "not blocked after the minute"
        );
        let other = "198.51.100.8";
        for i in 0..limit + 15 {
            let req = {
                let body = event_json(&format!("evt_o_{i}"), "payment_intent.succeeded");
                Fixture::new(SHAPES[0], "POST", "/api/payments/webhook")
                    .source_ip(other)
                    .header("Content-Type", "application/json")
                    .header(
                        "Stripe-Signature",
                        &signature::sign(body.as_bytes(), SECRET, T0 + 61),
                    )
                    .body(&body)
                    .request()
            };
            p.serve(req, &h).await;
        }
        assert!(
            limiter.known_block(other).is_none(),
            "webhook violations never block"
        );
    }

    /// A ledger whose first `complete` fails, as if the function crashed after the update;
    /// it records each claim's lease and keep.
    struct CrashOnce {
        inner: MemoryLedger,
        crashed: AtomicBool,
        claims: std::sync::Mutex<Vec<(u64, u64)>>,
    }

    #[async_trait]
    impl EventLedger for CrashOnce {
        async fn claim(
            &self,
            id: &str,
            now: u64,
            lease: u64,
            keep: u64,
        ) -> Result<Claim, StoreError> {
            self.claims.lock().expect("lock").push((lease, keep));
            self.inner.claim(id, now, lease, keep).await
        }
        async fn apply_payment(&self, u: &PaymentUpdate) -> Result<bool, StoreError> {
            self.inner.apply_payment(u).await
        }
        async fn record_owner(&self, intent: &str, user: &str) -> Result<(), StoreError> {
            self.inner.record_owner(intent, user).await
        }
        async fn complete(&self, id: &str, now: u64) -> Result<(), StoreError> {
            if !self.crashed.swap(true, Ordering::SeqCst) {
                return Err(StoreError::Unavailable("crash".into()));
            }
            self.inner.complete(id, now).await
        }
        async fn payment(&self, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
            self.inner.payment(id).await
        }
        async fn pseudonymise_user(&self, user: &str, now: u64) -> Result<u64, StoreError> {
            self.inner.pseudonymise_user(user, now).await
        }
        async fn add_pending_deletion(&self, c: &str, now: u64) -> Result<(), StoreError> {
            self.inner.add_pending_deletion(c, now).await
        }
        async fn pending_deletions(&self, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.pending_deletions(limit).await
        }
        async fn remove_pending_deletion(&self, c: &str) -> Result<(), StoreError> {
            self.inner.remove_pending_deletion(c).await
        }
    }

    #[tokio::test]
    async fn given_a_crash_before_completion_when_stripe_retries_then_it_succeeds_without_a_second_update()
     {
        let ledger = Arc::new(CrashOnce {
            inner: MemoryLedger::new(),
            crashed: AtomicBool::new(false),
            claims: Default::default(),
        });
        let (p, h, clock) = setup(ledger.clone());
        let body = event_json("evt_6", "payment_intent.succeeded");
        let first = p
            .serve(
                delivery(&body, &signature::sign(body.as_bytes(), SECRET, T0), 0),
                &h,
            )
            .await;
        assert_eq!(first.status(), 503, "Stripe retries a 5xx");
        assert_eq!(first.headers()["retry-after"], "1");
        assert!(
            !format!("{:?}", first.body()).contains("crash"),
            "no internals"
        );
        // Stripe retries later, after the crashed delivery's lease ran out.
        clock.advance_ms((LEASE_SECS + 1) * 1000);
        let now = T0 + LEASE_SECS + 1;
        let retry = p
            .serve(
                delivery(&body, &signature::sign(body.as_bytes(), SECRET, now), 1),
                &h,
            )
            .await;
        assert_eq!(retry.status(), 200);
        assert_eq!(json_of(&retry), serde_json::json!({"received": true}));
        let record = ledger
            .payment("pi_123")
            .await
            .expect("read")
            .expect("record");
        assert_eq!(
            record.updates, 1,
            "the retry did not apply the update again"
        );
        // Each delivery holds the event for a minute, and its id is remembered for 30 days
        // (the ledger's TTL; Stripe retries for up to three days).
        assert_eq!(
            *ledger.claims.lock().expect("lock"),
            [(60, 30 * 24 * 3600); 2]
        );
    }
}

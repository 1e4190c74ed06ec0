use std::collections::HashMap;
use std::sync::Arc;

use flowbotz_security::clock::Clock;
use flowbotz_security::config::{ConfigError, Need};
use flowbotz_security::guard::BodyKind;
use flowbotz_security::payments::signature::{self, DEFAULT_TOLERANCE_SECS};
use flowbotz_security::payments::{Claim, EventLedger, PaymentUpdate};
use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::secrets::Secrets;
use flowbotz_security::validate::integer;
use flowbotz_security::{ApiError, Ctx, Endpoint, Handler, HandlerResult, Secret, StoreFailure};
use http::{Method, StatusCode};
use lambda_http::Request;
use serde::Deserialize;

pub(crate) const ENDPOINT: Endpoint = Endpoint {
    name: "webhook",
    route: "/api/payments/webhook",
    methods: &[Method::POST],
    body: BodyKind::Json,
    auth: false,
    csrf: false,
    per_user_limit: false,
    store_failure: StoreFailure::Closed,
    security_sensitive: true,
};

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
        if !matches!(
            event.kind.as_str(),
            "payment_intent.succeeded"
                | "payment_intent.payment_failed"
                | "payment_intent.canceled"
        ) {
            return Ok(None);
        }
        let intent: IntentObject =
            serde_json::from_value(event.data.object.clone()).map_err(|_| {
                ApiError::BadRequest("The event's payment intent is incomplete.".into())
            })?;
        if intent.id.is_empty() || intent.id.len() > 255 {
            return Err(ApiError::BadRequest(
                "The event's payment intent id is invalid.".into(),
            ));
        }
        let update = PaymentUpdate {
            intent_id: intent.id,
            user_id: intent
                .metadata
                .get("user_id")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            amount: intent.amount,
            currency: intent.currency,
            status: intent.status,
            event_id: event.id.clone(),
            event_created: event.created,
        };
        Ok(Some(update))
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
            ctx.event = Some("webhook.signature_invalid");
            tracing::warn!(request_id = %ctx.request_id, client_ip = %ctx.client_ip, event = "webhook.signature_invalid", %reason, "webhook signature refused");
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
        assert_eq!(record.update.status, "succeeded");
        assert_eq!(record.update.user_id.as_deref(), Some("u-1"));
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
        assert_eq!(record.update.amount, 2000);
        assert_eq!(record.update.event_created, 1_800_000_000);

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

    /// A ledger whose first `complete` fails, as if the function crashed after the update.
    struct CrashOnce {
        inner: MemoryLedger,
        crashed: AtomicBool,
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
            self.inner.claim(id, now, lease, keep).await
        }
        async fn apply_payment(&self, u: &PaymentUpdate) -> Result<bool, StoreError> {
            self.inner.apply_payment(u).await
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
    }

    #[tokio::test]
    async fn given_a_crash_before_completion_when_stripe_retries_then_it_succeeds_without_a_second_update()
     {
        let ledger = Arc::new(CrashOnce {
            inner: MemoryLedger::new(),
            crashed: AtomicBool::new(false),
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
    }
}

use flowbotz_security::Event;
use std::collections::HashMap;
use std::sync::Arc;

use flowbotz_security::clock::Clock;
use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::{
    ApiError, Ctx, Endpoint, EndpointId, FieldError, Handler, HandlerResult, validate,
};
use http::{HeaderMap, StatusCode};
use lambda_http::Request;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use validator::{Validate, ValidationError};

use crate::customer::Customers;
use crate::provider::{IntentRequest, Intents, ProviderError, Settings};
use flowbotz_security::payments::EventLedger;
use flowbotz_security::payments::customers::{
    CustomerStore, SetCustomer, customer_idempotency_key,
};
use flowbotz_security::ratelimit::StoreError;

pub(crate) const ENDPOINT: Endpoint = EndpointId::PaymentIntent.endpoint();

/// Without an `Idempotency-Key`, identical requests of one user within this many seconds are
/// one intent, so a retried request cannot create a second one.
const DERIVED_KEY_WINDOW_SECS: u64 = 600;

fn metadata_rules(m: &HashMap<String, String>) -> Result<(), ValidationError> {
    let fail = |msg: &'static str| Err(ValidationError::new("metadata").with_message(msg.into()));
    if m.len() > 20 {
        return fail("must have at most 20 keys");
    }
    for (k, v) in m {
        if k.is_empty()
            || k.len() > 40
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return fail("keys must be 1 to 40 characters of letters, digits, _ and -");
        }
        if k == "user_id" {
            return fail("the key user_id is reserved");
        }
        if v.chars().count() > 500 {
            return fail("values must be at most 500 characters");
        }
    }
    Ok(())
}

#[derive(Deserialize, Validate, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct IntentBody {
    #[serde(default, deserialize_with = "validate::integer::optional")]
    amount: Option<i64>,
    currency: Option<String>,
    #[validate(length(max = 1000, message = "must be at most 1000 characters"))]
    description: Option<String>,
    /// `true`: Stripe mails a receipt to the account's own address (never one from the
    /// request).
    receipt: Option<bool>,
    #[validate(custom(function = "metadata_rules"))]
    metadata: Option<HashMap<String, String>>,
}

/// Stripe's PaymentIntents and Customers APIs (one client in production).
pub(crate) struct Stripe {
    pub(crate) intents: Arc<dyn Intents>,
    pub(crate) customers: Arc<dyn Customers>,
}

pub(crate) struct PaymentIntent {
    stripe: Option<Stripe>,
    owners: Arc<dyn CustomerStore>,
    payments: Arc<dyn EventLedger>,
    clock: Arc<dyn Clock>,
    settings: Settings,
}

impl PaymentIntent {
    pub(crate) fn new(
        stripe: Option<Stripe>,
        owners: Arc<dyn CustomerStore>,
        payments: Arc<dyn EventLedger>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self {
            stripe,
            owners,
            payments,
            clock,
            settings,
        }
    }

    /// The caller's email and Stripe customer, creating the customer on first need. Racing
    /// instances send the same idempotency key (one customer at Stripe) and the conditional
    /// write keeps the first id stored.
    async fn owner(&self, stripe: &Stripe, user: &str) -> Result<(String, String), ApiError> {
        let store_error = |e: StoreError| ApiError::ServiceUnavailable {
            reason: format!("user store: {e}"),
            retry_after: 1,
        };
        let gone = || ApiError::Unauthorized("account no longer exists");
        let owner = self
            .owners
            .owner(user)
            .await
            .map_err(store_error)?
            .ok_or_else(gone)?;
        if let Some(customer) = owner.customer_id {
            return Ok((owner.email, customer));
        }
        let created = stripe
            .customers
            .create_customer(user, &customer_idempotency_key(user))
            .await
            .map_err(provider_error)?;
        match self
            .owners
            .set_customer(user, &created)
            .await
            .map_err(store_error)?
        {
            SetCustomer::Stored => Ok((owner.email, created)),
            SetCustomer::Existing(customer) => {
                if customer != created {
                    self.discard_customer(stripe, &created).await;
                }
                Ok((owner.email, customer))
            }
            SetCustomer::NoAccount => {
                // The account was erased (or its erasure began) after it was read: the erasure
                // did not see this customer, so it is deleted here, and no intent is created.
                self.discard_customer(stripe, &created).await;
                Err(gone())
            }
        }
    }

    /// Deletes at Stripe a customer this instance created but could not store on the account.
    /// The deletion is recorded as pending first, as erasure records its own, so that if Stripe
    /// cannot be reached (or this instance stops) the account function's sweep deletes it later.
    async fn discard_customer(&self, stripe: &Stripe, customer: &str) {
        let recorded = self
            .payments
            .add_pending_deletion(customer, self.clock.now_s())
            .await;
        if let Err(cause) = &recorded {
            tracing::error!(event = Event::ErasureStripePendingNotRecorded.as_str(), %cause, "pending deletion not recorded");
        }
        match stripe.customers.delete_customer(customer).await {
            Ok(()) => {
                tracing::info!(
                    event = Event::ErasureStripeCustomerDeleted.as_str(),
                    "unstored stripe customer deleted"
                );
                if recorded.is_ok()
                    && let Err(cause) = self.payments.remove_pending_deletion(customer).await
                {
                    // Deleting again later is harmless: Stripe's 404 counts as deleted.
                    tracing::error!(event = Event::ErasurePendingCleanupFailed.as_str(), %cause, "pending deletion not removed");
                }
            }
            Err(cause) => {
                tracing::warn!(
                    event = Event::ErasureStripePending.as_str(),
                    ?cause,
                    "unstored stripe customer deletion pending"
                );
            }
        }
    }

    fn check(&self, body: &IntentBody) -> Result<(), ApiError> {
        let mut errors = match body.validate() {
            Ok(()) => Vec::new(),
            Err(e) => validate::field_errors(&e),
        };
        match body.amount {
            None => errors.push(FieldError::new("amount", "is required")),
            Some(a) if a < 50 || a > self.settings.max_amount => errors.push(FieldError::new(
                "amount",
                format!(
                    "must be an integer from 50 to {} (minor units)",
                    self.settings.max_amount
                ),
            )),
            Some(_) => {}
        }
        match &body.currency {
            None => errors.push(FieldError::new("currency", "is required")),
            Some(c) if !self.settings.currencies.contains(c) => errors.push(FieldError::new(
                "currency",
                format!("must be one of {}", self.settings.currencies.join(", ")),
            )),
            Some(_) => {}
        }
        if errors.is_empty() {
            Ok(())
        } else {
            errors.sort_by(|a, b| a.field.cmp(&b.field));
            Err(ApiError::Validation(errors))
        }
    }

    /// The key sent to Stripe: the client's (scoped to the user, so two users' keys never
    /// collide) or one derived from the user, the request and a ten-minute window.
    fn idempotency_key(
        &self,
        headers: &HeaderMap,
        user: &str,
        body: &[u8],
    ) -> Result<String, ApiError> {
        let scoped = |parts: &[&[u8]]| {
            let mut h = Sha256::new();
            for p in parts {
                h.update((p.len() as u64).to_be_bytes());
                h.update(p);
            }
            hex::encode(h.finalize())
        };
        match headers.get("idempotency-key") {
            Some(v) => {
                let key = v.as_bytes();
                if key.is_empty()
                    || key.len() > 255
                    || !key.iter().all(|b| (0x21..=0x7e).contains(b))
                {
                    return Err(ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters.".into(),
                    ));
                }
                Ok(format!("fbz-k-{}", scoped(&[user.as_bytes(), key])))
            }
            None => {
                let window = (self.clock.now_s() / DERIVED_KEY_WINDOW_SECS).to_string();
                Ok(format!(
                    "fbz-d-{}",
                    scoped(&[user.as_bytes(), body, window.as_bytes()])
                ))
            }
        }
    }
}

fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Invalid { param, code } => {
            let field = match param.as_deref() {
                Some(p @ ("amount" | "currency" | "description")) => p,
                // The server sets these; Stripe refusing them is not the client's error.
                Some(p @ ("customer" | "receipt_email")) => {
                    return ApiError::BadGateway(format!("stripe refused the server's {p}"));
                }
                Some(p) if p.starts_with("metadata") => "metadata",
                _ => "body",
            };
            let message = match code.as_deref() {
                Some("amount_too_small") => "is below the minimum the payment provider accepts",
                Some("amount_too_large") => "is above the maximum the payment provider accepts",
                _ => "was refused by the payment provider",
            };
            ApiError::Validation(vec![FieldError::new(field, message)])
        }
        ProviderError::IdempotencyConflict => ApiError::Validation(vec![FieldError::new(
            "Idempotency-Key",
            "was already used with different parameters",
        )]),
        ProviderError::RateLimited => ApiError::ServiceUnavailable {
            reason: "stripe rate limited".into(),
            retry_after: 2,
        },
        ProviderError::Timeout => ApiError::GatewayTimeout("stripe".into()),
        ProviderError::Unavailable(reason) => ApiError::BadGateway(reason),
    }
}

impl Handler for PaymentIntent {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
        let user = ctx
            .user_id
            .clone()
            .ok_or(ApiError::Unauthorized("no user"))?;
        let raw = body_bytes(&req);
        let body: IntentBody = validate::parse(raw)?;
        self.check(&body)?;
        let key = self.idempotency_key(req.headers(), &user, raw)?;
        let Some(stripe) = &self.stripe else {
            return Err(ApiError::ServiceUnavailable {
                reason: "STRIPE_SECRET_KEY not configured".into(),
                retry_after: 60,
            });
        };
        let (email, customer) = self.owner(stripe, &user).await?;
        let mut metadata = body.metadata.unwrap_or_default();
        metadata.insert("user_id".into(), user.clone());
        let request = IntentRequest {
            amount: body.amount.unwrap_or_default(),
            currency: body.currency.unwrap_or_default(),
            description: body.description,
            receipt_email: body.receipt.unwrap_or(false).then_some(email),
            customer,
            metadata,
        };
        let started = std::time::Instant::now();
        let result = stripe.intents.create(&request, &key).await;
        tracing::info!(request_id = %ctx.request_id, user_id = %user, upstream = "stripe", ok = result.is_ok(), latency_ms = started.elapsed().as_millis() as u64, "stripe create payment intent");
        let intent = result.map_err(provider_error)?;
        // The record exists, with its owner, before the client can confirm the intent: an
        // erasure from now on finds it, and no later event can link the user again. A failure
        // is 503; the client's retry with the same Idempotency-Key gets the same intent and
        // records it again.
        self.payments
            .record_owner(&intent.id, &user)
            .await
            .map_err(|e| ApiError::ServiceUnavailable {
                reason: format!("payments store: {e}"),
                retry_after: 1,
            })?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "id": intent.id,
                "client_secret": intent.client_secret,
                "amount": intent.amount,
                "currency": intent.currency,
                "status": intent.status,
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::CreatedIntent;
    use async_trait::async_trait;
    use flowbotz_security::clock::ManualClock;
    use flowbotz_security::payments::customers::MemoryCustomers;
    use flowbotz_security::session::Sessions;
    use flowbotz_security::{Config, Environment, Pipeline};
    use flowbotz_tests::events::{Event, SHAPES};
    use lambda_http::Body;
    use serde_json::{Value, json};
    use std::sync::Mutex;

    /// An erasure that runs while Stripe creates the customer: after the owner was read and
    /// before the customer is stored. `true`: it also deleted the user item (it completed).
    type Interleaved = (Arc<MemoryCustomers>, bool);

    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<(IntentRequest, String)>>,
        customers: Mutex<Vec<(String, String)>>,
        deleted: Mutex<Vec<String>>,
        erase_during_create: Mutex<Option<Interleaved>>,
        delete_fails: bool,
        fail: Option<ProviderError>,
    }

    impl Fake {
        /// Customers created and not deleted, as Stripe would list them.
        fn live_customers(&self) -> Vec<String> {
            let deleted = self.deleted.lock().expect("lock").clone();
            self.customers
                .lock()
                .expect("lock")
                .iter()
                .map(|(_, key)| format!("cus_{}", &key[key.len() - 12..]))
                .filter(|c| !deleted.contains(c))
                .collect()
        }
    }

    #[async_trait]
    impl Customers for Fake {
        async fn create_customer(&self, user: &str, key: &str) -> Result<String, ProviderError> {
            self.customers
                .lock()
                .expect("lock")
                .push((user.to_string(), key.to_string()));
            let erasure = self.erase_during_create.lock().expect("lock").take();
            if let Some((owners, completed)) = erasure {
                assert_eq!(owners.mark_erasing(user).await.expect("mark"), None);
                if completed {
                    owners.remove(user);
                }
            }
            // Stripe's idempotency: one key, one customer.
            Ok(format!("cus_{}", &key[key.len() - 12..]))
        }

        async fn delete_customer(&self, customer_id: &str) -> Result<(), ProviderError> {
            if self.delete_fails {
                return Err(ProviderError::Timeout);
            }
            self.deleted
                .lock()
                .expect("lock")
                .push(customer_id.to_string());
            Ok(())
        }
    }

    #[async_trait]
    impl Intents for Fake {
        async fn create(
            &self,
            req: &IntentRequest,
            key: &str,
        ) -> Result<CreatedIntent, ProviderError> {
            self.calls
                .lock()
                .expect("lock")
                .push((req.clone(), key.to_string()));
            if let Some(e) = &self.fail {
                return Err(e.clone());
            }
            Ok(CreatedIntent {
                id: "pi_fake".into(),
                client_secret: "pi_fake_secret_x".into(),
                amount: req.amount,
                currency: req.currency.clone(),
                status: "requires_payment_method".into(),
            })
        }
    }

    struct Setup {
        pipeline: Pipeline,
        handler: PaymentIntent,
        fake: Arc<Fake>,
        owners: Arc<MemoryCustomers>,
        payments: Arc<flowbotz_security::payments::memory::MemoryLedger>,
        bearer: String,
        csrf: String,
    }

    fn setup(fail: Option<ProviderError>) -> Setup {
        let owners = Arc::new(MemoryCustomers::new());
        owners.insert("u-1", "owner@example.com");
        setup_with(fail, owners)
    }

    fn setup_with(fail: Option<ProviderError>, owners: Arc<MemoryCustomers>) -> Setup {
        setup_full(
            Fake {
                fail,
                ..Default::default()
            },
            owners,
        )
    }

    fn setup_full(fake: Fake, owners: Arc<MemoryCustomers>) -> Setup {
        let config = Arc::new(
            Config::from_lookup(|k| match k {
                "ENVIRONMENT" => Some("development".into()),
                "JWT_SECRET_KEY" | "CSRF_SECRET_KEY" => {
                    Some("test-key-0123456789abcdef0123456789".into())
                }
                _ => None,
            })
            .expect("config"),
        );
        let clock = Arc::new(ManualClock::at_ms(1_800_000_000_000));
        let sessions = Sessions::new(&config, clock.clone()).expect("sessions");
        let (bearer, session) = sessions.issue_session("u-1", 0).expect("token");
        let bearer = bearer.token;
        let csrf = sessions.issue_csrf(&session).token;
        let fake = Arc::new(fake);
        let settings = Settings::from_lookup(Environment::Development, |_| None).expect("settings");
        let stripe = Stripe {
            intents: fake.clone(),
            customers: fake.clone(),
        };
        let payments = Arc::new(flowbotz_security::payments::memory::MemoryLedger::new());
        let handler = PaymentIntent::new(
            Some(stripe),
            owners.clone(),
            payments.clone(),
            clock,
            settings,
        );
        Setup {
            pipeline: Pipeline::new(ENDPOINT, config).with_sessions(sessions),
            handler,
            fake,
            owners,
            payments,
            bearer,
            csrf,
        }
    }

    async fn call(s: &Setup, body: &Value, extra: &[(&str, &str)], shape: usize) -> (u16, Value) {
        let mut e = Event::new(
            SHAPES[shape % 2],
            "POST",
            "/api/payments/create-payment-intent",
        )
        .header("Authorization", &format!("Bearer {}", s.bearer))
        .header("X-CSRF-Token", &s.csrf)
        .json_body(body);
        for (k, v) in extra {
            e = e.header(k, v);
        }
        let resp = s.pipeline.serve(e.request(), &s.handler).await;
        let v = match resp.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap_or_default(),
            _ => Value::Null,
        };
        (resp.status().as_u16(), v)
    }

    #[tokio::test]
    async fn given_a_valid_request_when_creating_then_200_and_user_in_metadata() {
        let s = setup(None);
        let (status, v) = call(
            &s,
            &json!({"amount": 2000, "currency": "usd", "metadata": {"order": "o-1"}}),
            &[],
            0,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["id"], "pi_fake");
        assert_eq!(v["client_secret"], "pi_fake_secret_x");
        {
            let calls = s.fake.calls.lock().expect("lock");
            assert_eq!(
                calls[0].0.metadata.get("user_id").map(String::as_str),
                Some("u-1")
            );
            assert_eq!(
                calls[0].0.metadata.get("order").map(String::as_str),
                Some("o-1")
            );
        }
        let record = s
            .payments
            .payment("pi_fake")
            .await
            .expect("read")
            .expect("the record exists before any event");
        assert_eq!(record.user_id.as_deref(), Some("u-1"));
    }

    #[tokio::test]
    async fn given_an_intent_whose_account_was_erased_before_its_first_event_when_events_arrive_then_the_user_is_never_linked_again()
     {
        let s = setup(None);
        let (status, v) = call(&s, &json!({"amount": 2000, "currency": "usd"}), &[], 1).await;
        assert_eq!(status, 200, "{v}");
        s.payments
            .pseudonymise_user("u-1", 1_800_000_100)
            .await
            .expect("erase");
        s.payments
            .record_owner("pi_fake", "u-1")
            .await
            .expect("a retried create");
        let record = s
            .payments
            .payment("pi_fake")
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(record.user_id, None, "erased stays erased");
        assert!(record.erased_at.is_some());
    }

    #[tokio::test]
    async fn given_invalid_fields_when_creating_then_422_per_field_and_stripe_is_not_called() {
        let s = setup(None);
        for (body, field) in [
            (json!({"amount": -100}), "amount"),
            (json!({"amount": -100, "currency": "usd"}), "amount"),
            (json!({"amount": 49, "currency": "usd"}), "amount"),
            (json!({"amount": 1_000_001, "currency": "usd"}), "amount"),
            (json!({"amount": "100", "currency": "usd"}), "amount"),
            (json!({"amount": 100.5, "currency": "usd"}), "amount"),
            (json!({"amount": 100, "currency": "jpy"}), "currency"),
            (json!({"amount": 100, "currency": "USD"}), "currency"),
            (
                json!({"amount": 100, "currency": "usd", "metadata": {"user_id": "someone-else"}}),
                "metadata",
            ),
            (
                json!({"amount": 100, "currency": "usd", "metadata": {"bad key!": "x"}}),
                "metadata",
            ),
            (
                json!({"amount": 100, "currency": "usd", "description": "x".repeat(1001)}),
                "description",
            ),
        ] {
            let (status, v) = call(&s, &body, &[], 0).await;
            assert_eq!(status, 422, "{body}: {v}");
            assert!(
                v["errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["field"] == field)),
                "{body}: {v}"
            );
        }
        let many: serde_json::Map<String, Value> =
            (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
        let (status, _) = call(
            &s,
            &json!({"amount": 100, "currency": "usd", "metadata": many}),
            &[],
            1,
        )
        .await;
        assert_eq!(status, 422);
        for extra in [
            json!({"admin": true}),
            json!({"customer": "cus_victim"}),
            json!({"payment_method": "pm_victim"}),
            json!({"receipt_email": "anyone@example.org"}),
            json!({"receipt": "yes"}),
        ] {
            let mut body = json!({"amount": 100, "currency": "usd"});
            for (k, v) in extra.as_object().expect("object") {
                body[k] = v.clone();
            }
            let (status, v) = call(&s, &body, &[], 1).await;
            assert!(status == 400 || status == 422, "{body}: {status} {v}");
        }
        assert!(s.fake.calls.lock().expect("lock").is_empty());
        assert!(s.fake.customers.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn given_a_user_when_paying_twice_then_one_server_customer_and_receipts_to_the_owner_only()
     {
        let s = setup(None);
        let body = json!({"amount": 2000, "currency": "usd"});
        let (status, v) = call(&s, &body, &[], 0).await;
        assert_eq!(status, 200, "{v}");
        let (status, _) = call(
            &s,
            &json!({"amount": 2100, "currency": "usd", "receipt": true}),
            &[],
            1,
        )
        .await;
        assert_eq!(status, 200);
        let created = s.fake.customers.lock().expect("lock").clone();
        assert_eq!(created.len(), 1, "the customer is created once");
        assert_eq!(created[0].1, customer_idempotency_key("u-1"));
        let stored = s.owners.owner("u-1").await.expect("read").expect("owner");
        let customer = stored.customer_id.expect("stored");
        let calls = s.fake.calls.lock().expect("lock");
        assert!(calls.iter().all(|c| c.0.customer == customer));
        assert_eq!(calls[0].0.receipt_email, None);
        assert_eq!(
            calls[1].0.receipt_email.as_deref(),
            Some("owner@example.com")
        );
    }

    #[tokio::test]
    async fn given_two_instances_racing_on_the_first_payment_then_one_customer_is_used() {
        let owners = Arc::new(MemoryCustomers::new());
        owners.insert("u-1", "owner@example.com");
        let a = setup_with(None, owners.clone());
        let b = setup_with(None, owners.clone());
        let body = json!({"amount": 2000, "currency": "usd"});
        let ((sa, _), (sb, _)) = tokio::join!(call(&a, &body, &[], 0), call(&b, &body, &[], 1));
        assert_eq!((sa, sb), (200, 200));
        let ka = a.fake.customers.lock().expect("lock").clone();
        let kb = b.fake.customers.lock().expect("lock").clone();
        for (k, _) in ka.iter().chain(kb.iter()).map(|c| (&c.1, ())) {
            assert_eq!(k, &customer_idempotency_key("u-1"));
        }
        let ca = a.fake.calls.lock().expect("lock")[0].0.customer.clone();
        let cb = b.fake.calls.lock().expect("lock")[0].0.customer.clone();
        assert_eq!(ca, cb);
        // A customer already stored by another instance wins over a newly created one.
        let late = Arc::new(MemoryCustomers::new());
        late.insert("u-1", "owner@example.com");
        late.set_customer("u-1", "cus_winner").await.expect("set");
        let c = setup_with(None, late);
        let (status, _) = call(&c, &body, &[], 0).await;
        assert_eq!(status, 200);
        assert!(c.fake.customers.lock().expect("lock").is_empty());
        assert_eq!(
            c.fake.calls.lock().expect("lock")[0].0.customer,
            "cus_winner"
        );
    }

    #[tokio::test]
    async fn given_an_erased_account_when_paying_then_401_and_stripe_is_not_called() {
        let s = setup_with(None, Arc::new(MemoryCustomers::new()));
        let (status, _) = call(&s, &json!({"amount": 2000, "currency": "usd"}), &[], 0).await;
        assert_eq!(status, 401);
        assert!(s.fake.customers.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn given_an_erasure_between_reading_the_owner_and_storing_the_customer_when_paying_then_the_new_customer_is_deleted_and_no_intent_created()
     {
        for completed in [false, true] {
            let owners = Arc::new(MemoryCustomers::new());
            owners.insert("u-1", "owner@example.com");
            let s = setup_with(None, owners.clone());
            *s.fake.erase_during_create.lock().expect("lock") = Some((owners, completed));
            let (status, v) = call(&s, &json!({"amount": 2000, "currency": "usd"}), &[], 0).await;
            assert_eq!(status, 401, "completed={completed}: {v}");
            assert_eq!(s.fake.customers.lock().expect("lock").len(), 1);
            assert!(
                s.fake.live_customers().is_empty(),
                "completed={completed}: no customer outlives the erasure"
            );
            assert!(s.fake.calls.lock().expect("lock").is_empty(), "no intent");
            assert!(
                s.payments
                    .pending_deletions(10)
                    .await
                    .expect("read")
                    .is_empty(),
                "nothing left pending once Stripe confirmed"
            );
        }
    }

    #[tokio::test]
    async fn given_an_erasure_racing_the_first_payment_and_stripe_failing_the_deletion_then_the_customer_is_left_pending_for_the_sweep()
     {
        let owners = Arc::new(MemoryCustomers::new());
        owners.insert("u-1", "owner@example.com");
        let s = setup_full(
            Fake {
                delete_fails: true,
                ..Default::default()
            },
            owners.clone(),
        );
        *s.fake.erase_during_create.lock().expect("lock") = Some((owners, true));
        let (status, _) = call(&s, &json!({"amount": 2000, "currency": "usd"}), &[], 1).await;
        assert_eq!(status, 401);
        let live = s.fake.live_customers();
        assert_eq!(live.len(), 1);
        assert_eq!(
            s.payments.pending_deletions(10).await.expect("read"),
            live,
            "the account function's sweep deletes it"
        );
        assert!(s.fake.calls.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn given_idempotency_keys_when_creating_then_scoped_per_user_and_derived_when_absent() {
        let s = setup(None);
        let body = json!({"amount": 2000, "currency": "eur"});
        call(&s, &body, &[("Idempotency-Key", "order-42")], 0).await;
        call(&s, &body, &[("Idempotency-Key", "order-42")], 1).await;
        call(&s, &body, &[], 0).await;
        call(&s, &body, &[], 1).await;
        let (status, _) = call(&s, &body, &[("Idempotency-Key", &"x".repeat(256))], 0).await;
        assert_eq!(status, 400);
        let calls = s.fake.calls.lock().expect("lock");
        assert_eq!(
            calls[0].1, calls[1].1,
            "the same client key is the same Stripe key"
        );
        assert_ne!(calls[0].1, "order-42", "client keys are scoped to the user");
        assert_eq!(
            calls[2].1, calls[3].1,
            "a retried request without a key reuses the derived key"
        );
        assert_ne!(calls[0].1, calls[2].1);
        assert!(calls.iter().all(|c| c.1.len() <= 255));
    }

    #[tokio::test]
    async fn given_stripe_failures_when_creating_then_mapped_without_internals() {
        for (err, status) in [
            (
                ProviderError::Invalid {
                    param: Some("amount".into()),
                    code: Some("amount_too_small".into()),
                },
                422,
            ),
            (ProviderError::IdempotencyConflict, 422),
            (
                // The server names the customer: Stripe refusing it is not the client's error,
                // and no answer tells which customer ids exist.
                ProviderError::Invalid {
                    param: Some("customer".into()),
                    code: Some("resource_missing".into()),
                },
                502,
            ),
            (ProviderError::RateLimited, 503),
            (ProviderError::Timeout, 504),
            (
                ProviderError::Unavailable(
                    "stripe answered 401 (invalid_request_error) sk_test_leak".into(),
                ),
                502,
            ),
        ] {
            let s = setup(Some(err));
            let (got, v) = call(&s, &json!({"amount": 2000, "currency": "usd"}), &[], 0).await;
            assert_eq!(got, status, "{v}");
            assert!(!v.to_string().contains("sk_test"), "{v}");
        }
    }

    #[tokio::test]
    async fn given_no_tokens_when_creating_then_401_and_403() {
        let s = setup(None);
        let e = Event::new(SHAPES[0], "POST", "/api/payments/create-payment-intent")
            .json_body(&json!({"amount": -100}));
        assert_eq!(
            s.pipeline.serve(e.request(), &s.handler).await.status(),
            401
        );
        let e = Event::new(SHAPES[1], "POST", "/api/payments/create-payment-intent")
            .header("Authorization", &format!("Bearer {}", s.bearer))
            .json_body(&json!({"amount": -100}));
        assert_eq!(
            s.pipeline.serve(e.request(), &s.handler).await.status(),
            403
        );
    }
}

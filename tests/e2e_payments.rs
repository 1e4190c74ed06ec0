//! Payments end to end: payment intents through async-stripe against the local Stripe
//! stand-in, and its signed webhooks reaching the webhook function through the router.

use std::time::Duration;

use flowbotz_security::payments::EventLedger;
use flowbotz_security::payments::dynamodb::DynamoLedger;
use flowbotz_security::payments::signature;
use flowbotz_security::store::dynamodb::client;
use flowbotz_tests::events::{Event, Shape};
use flowbotz_tests::stack::{Session, assert_problem, invoke, local_secret, new_session};
use serde_json::{Value, json};

const ROUTE: &str = "/api/payments/create-payment-intent";

fn create(s: &Session, body: &Value) -> Event {
    Event::new(Shape::HttpV2, "POST", ROUTE)
        .header("Authorization", &format!("Bearer {}", s.access_token))
        .header("X-CSRF-Token", &s.csrf_token)
        .json_body(body)
}

fn stripe_url() -> String {
    std::env::var("FLOWBOTZ_STRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:12111".into())
}

fn webhook_secret() -> String {
    local_secret("STRIPE_WEBHOOK_SECRET")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn ledger() -> DynamoLedger {
    let table = std::env::var("PAYMENTS_TABLE").unwrap_or_else(|_| "flowbotz-payments".into());
    DynamoLedger::new(client(Duration::from_secs(3)).await, table)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::test]
async fn given_a_negative_amount_when_creating_then_422_on_amount_and_401_without_tokens() {
    let s = new_session().await;
    let a = invoke("payment-intent", &create(&s, &json!({"amount": -100}))).await;
    assert_problem(&a, 422);
    assert!(
        a.json()["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["field"] == "amount")),
        "{}",
        a.body
    );
    let anonymous = Event::new(Shape::RestV1, "POST", ROUTE).json_body(&json!({"amount": -100}));
    assert_problem(&invoke("payment-intent", &anonymous).await, 401);
}

#[tokio::test]
async fn given_a_valid_request_when_confirmed_at_stripe_then_the_signed_webhook_records_success() {
    let s = new_session().await;
    let body = json!({"amount": 2500, "currency": "usd", "description": "Pro plan", "metadata": {"plan": "pro"}});
    let first = invoke(
        "payment-intent",
        &create(&s, &body).header("Idempotency-Key", "order-1"),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let intent = first.json();
    let id = intent["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("pi_"));
    assert!(
        intent["client_secret"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{id}_secret_")))
    );
    assert_eq!(intent["amount"], 2500);
    assert_eq!(intent["currency"], "usd");
    // The same Idempotency-Key is the same intent.
    let again = invoke(
        "payment-intent",
        &create(&s, &body).header("Idempotency-Key", "order-1"),
    )
    .await;
    assert_eq!(again.json()["id"], intent["id"]);
    // The same key with other parameters is refused, like Stripe does.
    let other = json!({"amount": 9900, "currency": "usd"});
    let conflict = invoke(
        "payment-intent",
        &create(&s, &other).header("Idempotency-Key", "order-1"),
    )
    .await;
    assert_problem(&conflict, 422);

    // Confirm at the stand-in; it signs and sends payment_intent.succeeded to the router.
    let resp = flowbotz_tests::stack::http_client()
        .post(format!("{}/v1/payment_intents/{id}/confirm", stripe_url()))
        .bearer_auth("sk_test_local_standin")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("payment_method=pm_card_visa")
        .send()
        .await
        .expect("stand-in answers");
    assert_eq!(resp.status(), 200);
    let ledger = ledger().await;
    let mut record = None;
    for _ in 0..100 {
        record = ledger.payment(&id).await.expect("read");
        // payment-intent wrote the record with its owner; wait for the webhook's status.
        if record.as_ref().is_some_and(|r| !r.status.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = record.expect("the webhook recorded the payment");
    assert_eq!(record.status, "succeeded");
    assert_eq!(record.amount, Some(2500));
    assert_eq!(record.updates, 1);
    assert!(record.user_id.is_some());
}

fn webhook(body: &str, header: &str) -> Event {
    Event::new(Shape::RestV1, "POST", "/api/payments/webhook")
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Stripe-Signature", header)
        .body(body)
}

fn event_body(id: &str) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": "payment_intent.payment_failed",
        "created": now(),
        "data": {"object": {"id": format!("pi_{id}"), "object": "payment_intent", "amount": 700, "currency": "eur",
                             "status": "requires_payment_method", "metadata": {}}}
    })
    .to_string()
}

#[tokio::test]
async fn given_a_header_from_stripes_node_library_when_delivered_then_accepted_and_replays_are_duplicates()
 {
    let id = format!("evt_node_{}", now());
    let body = event_body(&id);
    let out = std::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/stripe_test_header.cjs"
        ))
        .env("STRIPE_PAYLOAD", &body)
        .env("STRIPE_WEBHOOK_SECRET", webhook_secret())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = String::from_utf8(out.stdout).expect("utf8");
    let a = invoke("webhook", &webhook(&body, &header)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json(), json!({"received": true}));
    let replay = invoke("webhook", &webhook(&body, &header)).await;
    assert_eq!(replay.json(), json!({"received": true, "duplicate": true}));
}

#[tokio::test]
async fn given_forged_stale_or_unsigned_deliveries_when_posted_then_400_and_logged() {
    let id = format!("evt_forged_{}", now());
    let body = event_body(&id);
    let secret = webhook_secret();
    for header in [
        signature::sign(body.as_bytes(), "whsec_attacker", now()),
        // Clear of the 300 s tolerance whenever the function reads its clock; the exact
        // 301 s edges are unit tests with a fixed clock.
        signature::sign(body.as_bytes(), &secret, now() - 310),
        signature::sign(body.as_bytes(), &secret, now() + 310),
        "garbage".to_string(),
    ] {
        assert_problem(&invoke("webhook", &webhook(&body, &header)).await, 400);
    }
    let tampered = body.replace("700", "1");
    let header = signature::sign(body.as_bytes(), &secret, now());
    assert_problem(&invoke("webhook", &webhook(&tampered, &header)).await, 400);
    // The base64 body API Gateway sends for binary media is verified after decoding.
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
    let e = Event::new(Shape::HttpV2, "POST", "/api/payments/webhook")
        .header("Content-Type", "application/json")
        .header("Stripe-Signature", &header)
        .body_base64(&encoded);
    assert_eq!(invoke("webhook", &e).await.status, 200);
    assert!(
        ledger()
            .await
            .payment(&format!("pi_{id}"))
            .await
            .expect("read")
            .is_some()
    );
}

//! Payment attacks of issue 14, end to end against the local stack and the Stripe stand-in:
//! paying with another customer's saved card, receipts to a stranger, a webhook moved
//! backwards, erasure that stops short of payments, and a webhook IP-blocked.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use flowbotz_security::payments::dynamodb::DynamoLedger;
use flowbotz_security::payments::{EventLedger, PaymentRecord, signature};
use flowbotz_security::store::dynamodb::client;
use flowbotz_tests::events::{Event, Shape, unique_ip};
use flowbotz_tests::stack::{Session, assert_problem, invoke, local_secret, new_session};
use serde_json::{Value, json};

const ROUTE: &str = "/api/payments/create-payment-intent";
const STRIPE_KEY: &str = "sk_test_local_standin";

fn stripe_url() -> String {
    std::env::var("FLOWBOTZ_STRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:12111".into())
}

fn pay(s: &Session, body: &Value) -> Event {
    Event::new(Shape::HttpV2, "POST", ROUTE)
        .header("Authorization", &format!("Bearer {}", s.access_token))
        .header("X-CSRF-Token", &s.csrf_token)
        .json_body(body)
}

async fn ledger() -> DynamoLedger {
    let table = std::env::var("PAYMENTS_TABLE").unwrap_or_else(|_| "flowbotz-payments".into());
    DynamoLedger::new(client(Duration::from_secs(3)).await, table)
}

/// Stripe's own record of an object, through the stand-in (`GET /v1/...`).
async fn at_stripe(path: &str) -> (u16, Value) {
    let resp = flowbotz_tests::stack::http_client()
        .get(format!("{}/v1/{path}", stripe_url()))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .expect("stand-in answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A call of the stand-in's API or test hooks with a form body.
async fn stripe_post(path: &str, form: &str) -> Value {
    let resp = flowbotz_tests::stack::http_client()
        .post(format!("{}{path}", stripe_url()))
        .bearer_auth(STRIPE_KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .expect("stand-in answers");
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("json")
}

/// Creates an intent for `s` and returns Stripe's record of it.
async fn intent_of(s: &Session, body: &Value) -> Value {
    let a = invoke("payment-intent", &pay(s, body)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let id = a.json()["id"].as_str().expect("id").to_string();
    let (status, intent) = at_stripe(&format!("payment_intents/{id}")).await;
    assert_eq!(status, 200);
    intent
}

/// Waits until the payment record of `intent` satisfies `done`.
async fn record_until(intent: &str, done: impl Fn(&PaymentRecord) -> bool) -> PaymentRecord {
    let ledger = ledger().await;
    let mut last = None;
    for _ in 0..150 {
        last = ledger.payment(intent).await.expect("read");
        if last.as_ref().is_some_and(&done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last.expect("a payment record")
}

fn erase(s: &Session) -> Event {
    Event::new(Shape::RestV1, "DELETE", "/api/account")
        .header("Authorization", &format!("Bearer {}", s.access_token))
        .header("X-CSRF-Token", &s.csrf_token)
}

/// Failure 1: `customer` and `payment_method` from the body reached Stripe, so a user could
/// pay with a victim's saved card. Now neither is accepted and every intent names the caller's
/// own server-owned customer.
#[tokio::test]
async fn given_a_victims_customer_or_card_in_the_body_when_paying_then_refused_and_only_the_own_customer_is_used()
 {
    let attacker = new_session().await;
    // A customer with a saved card, as a victim's would be at Stripe.
    let planted = stripe_post("/v1/customers", "metadata[user_id]=victim").await["id"]
        .as_str()
        .expect("customer id")
        .to_string();
    for steer in [
        json!({"customer": planted}),
        json!({"payment_method": "pm_card_visa"}),
        json!({"customer": planted, "payment_method": "pm_card_visa"}),
    ] {
        let mut body = json!({"amount": 2000, "currency": "usd"});
        for (k, v) in steer.as_object().expect("object") {
            body[k] = v.clone();
        }
        let a = invoke("payment-intent", &pay(&attacker, &body)).await;
        assert_problem(&a, 400);
        assert!(!a.body.contains(&planted), "{}", a.body);
    }
    let victim = new_session().await;
    let victims = intent_of(&victim, &json!({"amount": 2000, "currency": "usd"})).await;
    let victim_customer = victims["customer"]
        .as_str()
        .expect("a server customer")
        .to_string();
    assert!(victim_customer.starts_with("cus_"));
    let own = intent_of(&attacker, &json!({"amount": 2000, "currency": "usd"})).await;
    let own_again = intent_of(&attacker, &json!({"amount": 2100, "currency": "usd"})).await;
    let attacker_customer = own["customer"].as_str().expect("a server customer");
    assert_ne!(attacker_customer, victim_customer);
    assert_eq!(
        own_again["customer"], own["customer"],
        "one customer per account"
    );
    assert_eq!(own["payment_method"], Value::Null);
    let (_, customer) = at_stripe(&format!("customers/{attacker_customer}")).await;
    assert_eq!(customer["object"], "customer");
    assert!(customer["metadata"]["user_id"].is_string());
}

/// Failure 2: `receipt_email` mailed FlowBotz receipts to any address. Now the request can
/// only ask for a receipt, which goes to the account's own address.
#[tokio::test]
async fn given_a_foreign_receipt_address_when_paying_then_refused_and_receipts_go_to_the_owner_only()
 {
    let s = new_session().await;
    let foreign =
        json!({"amount": 2000, "currency": "usd", "receipt_email": "inbox@stranger.example"});
    assert_problem(&invoke("payment-intent", &pay(&s, &foreign)).await, 400);
    let with = intent_of(
        &s,
        &json!({"amount": 2000, "currency": "usd", "receipt": true}),
    )
    .await;
    assert_eq!(with["receipt_email"], json!(s.email));
    let without = intent_of(&s, &json!({"amount": 2000, "currency": "usd"})).await;
    assert_eq!(without["receipt_email"], Value::Null);
    assert_problem(
        &invoke(
            "payment-intent",
            &pay(
                &s,
                &json!({"amount": 2000, "currency": "usd", "receipt": "inbox@stranger.example"}),
            ),
        )
        .await,
        422,
    );
}

fn signed_delivery(body: &str) -> Event {
    let secret = local_secret("STRIPE_WEBHOOK_SECRET")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Event::new(Shape::RestV1, "POST", "/api/payments/webhook")
        .header("Content-Type", "application/json; charset=utf-8")
        .header(
            "Stripe-Signature",
            &signature::sign(body.as_bytes(), &secret, now),
        )
        .body(body)
}

/// Failure 3: a same-second `payment_failed` delivered after `succeeded` turned a paid record
/// back, and refunds and disputes were ignored. Now the record only moves forward, and a
/// refund and a lost dispute at the stand-in reach it.
#[tokio::test]
async fn given_a_late_same_second_failure_a_refund_and_a_dispute_when_delivered_then_the_record_only_moves_forward()
 {
    let s = new_session().await;
    let intent = intent_of(&s, &json!({"amount": 3000, "currency": "eur"})).await;
    let id = intent["id"].as_str().expect("id").to_string();
    let confirmed = stripe_post(
        &format!("/v1/payment_intents/{id}/confirm"),
        "payment_method=pm_card_visa",
    )
    .await;
    let record = record_until(&id, |r| r.status == "succeeded").await;
    assert_eq!(record.status, "succeeded");
    // The same intent reported failed in the same second, delivered after the success.
    let mut failed = confirmed.clone();
    failed["status"] = "requires_payment_method".into();
    let event = json!({
        "id": format!("evt_late{}", unique_ip().replace([':', '.'], "")),
        "object": "event", "type": "payment_intent.payment_failed",
        "created": record.last_event_created, "livemode": false, "pending_webhooks": 1,
        "api_version": null, "request": {"id": null, "idempotency_key": null},
        "data": {"object": failed},
    });
    let a = invoke("webhook", &signed_delivery(&event.to_string())).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let record = ledger()
        .await
        .payment(&id)
        .await
        .expect("read")
        .expect("record");
    assert_eq!(record.status, "succeeded", "a paid record never goes back");

    stripe_post("/v1/refunds", &format!("payment_intent={id}&amount=1000")).await;
    let record = record_until(&id, |r| r.status == "partially_refunded").await;
    assert_eq!(
        (record.status.as_str(), record.refunded_amount),
        ("partially_refunded", 1000)
    );
    let dispute = stripe_post("/_standin/disputes", &format!("payment_intent={id}")).await;
    record_until(&id, |r| r.status == "disputed").await;
    let dispute_id = dispute["id"].as_str().expect("dispute id");
    stripe_post(
        &format!("/_standin/disputes/{dispute_id}/close"),
        "status=lost",
    )
    .await;
    let record = record_until(&id, |r| r.status == "dispute_lost").await;
    assert_eq!(
        (
            record.status.as_str(),
            record.refunded_amount,
            record.amount
        ),
        ("dispute_lost", 1000, Some(3000))
    );
}

/// Failure 4: erasure left `user_id` on payment records and the Stripe customer in place.
/// Now records are pseudonymised (amount, currency, status and dates kept) and the customer
/// deleted; with Stripe unreachable the erasure completes and the deletion is retried.
#[tokio::test]
async fn given_an_account_with_payments_when_erased_then_records_are_pseudonymised_and_the_customer_deleted_even_after_an_outage()
 {
    let s = new_session().await;
    let intent = intent_of(&s, &json!({"amount": 4100, "currency": "usd"})).await;
    let id = intent["id"].as_str().expect("id").to_string();
    let customer = intent["customer"].as_str().map(str::to_string);
    stripe_post(
        &format!("/v1/payment_intents/{id}/confirm"),
        "payment_method=pm_card_visa",
    )
    .await;
    let before = record_until(&id, |r| r.status == "succeeded").await;
    assert!(before.user_id.is_some());
    let a = invoke("account", &erase(&s)).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let after = ledger()
        .await
        .payment(&id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(after.user_id, None, "no user id after erasure");
    assert!(after.erased_at.is_some());
    assert_eq!(
        (
            after.amount,
            after.currency.as_deref(),
            after.status.as_str()
        ),
        (Some(4100), Some("usd"), "succeeded"),
        "bookkeeping facts kept"
    );
    let customer = customer.expect("the account's server customer");
    let (_, at_stripe_now) = at_stripe(&format!("customers/{customer}")).await;
    assert_eq!(at_stripe_now["deleted"], true, "{at_stripe_now}");

    // Stripe unreachable for this customer: the erasure still completes, and is retried.
    let s2 = new_session().await;
    let customer2 = intent_of(&s2, &json!({"amount": 900, "currency": "usd"})).await["customer"]
        .as_str()
        .expect("customer")
        .to_string();
    stripe_post("/_standin/outage", &format!("target={customer2}&down=true")).await;
    let a = invoke("account", &erase(&s2)).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let pending = ledger().await.pending_deletions(1000).await.expect("read");
    assert!(
        pending.contains(&customer2),
        "recorded for retry: {pending:?}"
    );
    stripe_post(
        "/_standin/outage",
        &format!("target={customer2}&down=false"),
    )
    .await;
    // Stripe is back: the next invocation of the account function retries it.
    let s3 = new_session().await;
    assert_eq!(invoke("account", &erase(&s3)).await.status, 204);
    let (_, gone) = at_stripe(&format!("customers/{customer2}")).await;
    assert_eq!(gone["deleted"], true, "{gone}");
    let pending = ledger().await.pending_deletions(1000).await.expect("read");
    assert!(!pending.contains(&customer2), "{pending:?}");
}

/// The user id of a session: its access token's `sub`.
fn user_id_of(s: &Session) -> String {
    let payload = s.access_token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(&B64.decode(payload).expect("b64")).expect("json");
    claims["sub"].as_str().expect("sub").to_string()
}

/// The customers the stand-in created for `user`, deleted or not, and how many of its
/// creations are being held now.
async fn standin_customers(user: &str) -> (Vec<(String, bool)>, u64) {
    let v: Value = reqwest::get(format!(
        "{}/_standin/customers?user_id={user}",
        stripe_url()
    ))
    .await
    .expect("stand-in answers")
    .json()
    .await
    .expect("json");
    let customers = v["customers"]
        .as_array()
        .expect("customers")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_string(),
                c["deleted"].as_bool().expect("deleted"),
            )
        })
        .collect();
    (customers, v["held"].as_u64().unwrap_or(0))
}

/// Failure 4's last gap: a first payment read the account (no customer yet), the erasure ran
/// (nothing to delete at Stripe), then the payment created the customer, which lived on at
/// Stripe with the user id. Now the erasure marks the account first, the payment cannot store
/// the customer and deletes it, and no intent is created.
#[tokio::test]
async fn given_an_erasure_while_the_first_payment_creates_the_customer_then_no_customer_survives() {
    let s = new_session().await;
    let user = user_id_of(&s);
    // The account function started, so that the erasure fits in the hold (below Stripe's
    // timeout of the payment's request).
    let warm = invoke(
        "account",
        &Event::new(Shape::RestV1, "DELETE", "/api/account"),
    )
    .await;
    assert_eq!(warm.status, 401);
    stripe_post("/_standin/hold", &format!("user_id={user}&seconds=4")).await;
    let request = pay(&s, &json!({"amount": 1500, "currency": "usd"}));
    let paying = invoke("payment-intent", &request);
    let erasing = async {
        // The erasure runs while Stripe holds the customer's creation.
        for _ in 0..600 {
            if standin_customers(&user).await.1 > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            standin_customers(&user).await.1,
            1,
            "the payment is creating the customer"
        );
        invoke("account", &erase(&s)).await
    };
    let (paid, erased) = tokio::join!(paying, erasing);
    assert_eq!(erased.status, 204, "{}", erased.body);
    assert_problem(&paid, 401);
    let (customers, _) = standin_customers(&user).await;
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert!(
        customers.iter().all(|(_, deleted)| *deleted),
        "no customer of the erased account is left at Stripe: {customers:?}"
    );
    let pending = ledger().await.pending_deletions(1000).await.expect("read");
    assert!(!pending.contains(&customers[0].0), "{pending:?}");
}

/// Failure 5: ten rate-limit violations from an address blocked every webhook delivery from
/// it for 15 minutes. Now the webhook is never IP-blocked.
#[tokio::test]
async fn given_an_ip_blocked_for_violations_when_stripe_delivers_from_it_then_the_webhook_still_answers()
 {
    let ip = unique_ip();
    let mut statuses = Vec::new();
    for _ in 0..14 {
        let probe = Event::new(Shape::HttpV2, "POST", "/api/auth/login")
            .source_ip(&ip)
            .json_body(&json!({}));
        statuses.push(invoke("login", &probe).await.status);
    }
    assert_eq!(
        statuses.last(),
        Some(&403),
        "the IP is blocked: {statuses:?}"
    );
    let body = json!({
        "id": format!("evt_blk{}", unique_ip().replace([':', '.'], "")),
        "object": "event", "type": "customer.created", "created": 1, "livemode": false,
        "data": {"object": {}},
    })
    .to_string();
    let a = invoke("webhook", &signed_delivery(&body).source_ip(&ip)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // An unsigned call from it is refused by its signature, not by a block.
    let forged = Event::new(Shape::RestV1, "POST", "/api/payments/webhook")
        .source_ip(&ip)
        .header("Content-Type", "application/json")
        .header("Stripe-Signature", "t=1,v1=00")
        .body(&body);
    assert_problem(&invoke("webhook", &forged).await, 400);
}

#[tokio::test]
async fn given_an_intent_confirmed_after_its_account_was_erased_when_its_events_arrive_then_the_user_is_never_linked_again()
 {
    let s = new_session().await;
    let intent = intent_of(&s, &json!({"amount": 1500, "currency": "usd"})).await;
    let id = intent["id"].as_str().expect("id").to_string();
    // No event has arrived yet: the record was written, with its owner, by payment-intent.
    let a = invoke("account", &erase(&s)).await;
    assert_eq!(a.status, 204, "{}", a.body);
    stripe_post(
        &format!("/v1/payment_intents/{id}/confirm"),
        "payment_method=pm_card_visa",
    )
    .await;
    let after = record_until(&id, |r| r.status == "succeeded").await;
    assert_eq!(
        after.user_id, None,
        "a late event cannot link the erased user"
    );
    assert!(after.erased_at.is_some());
}

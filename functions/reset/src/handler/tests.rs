use std::sync::Arc;

use flowbotz_security::accounts::memory::MemoryUserStore;
use flowbotz_security::accounts::tokens::memory::MemoryTokenStore;
use flowbotz_security::accounts::tokens::{Grant, PendingRegistration, TokenStore, issue};
use flowbotz_security::accounts::{UserStore, password};
use flowbotz_security::clock::{Clock, ManualClock};
use flowbotz_security::mail::memory::MemoryMailer;
use flowbotz_security::mail::{Links, NO_ACCOUNT_SUBJECT, RESET_SUBJECT};
use flowbotz_security::revocation::{SessionState, SessionStore};
use flowbotz_security::session::Sessions;
use flowbotz_security::{Config, EndpointId, Pipeline};
use flowbotz_tests::events::{Event, Shape};
use lambda_http::{Body, Response};
use serde_json::{Value, json};

use super::*;

const OLD: &str = "violet quasar mangrove tundra 71";
const NEW: &str = "amber quartz meadow harbour 17";

struct Setup {
    request: (Pipeline, RequestReset),
    confirm: (Pipeline, ConfirmReset),
    users: Arc<MemoryUserStore>,
    tokens: Arc<MemoryTokenStore>,
    mailer: Arc<MemoryMailer>,
    clock: ManualClock,
    sessions: Sessions,
}

fn config() -> Arc<Config> {
    Arc::new(
        Config::from_lookup(|k| match k {
            "ENVIRONMENT" => Some("development".into()),
            "JWT_SECRET_KEY" | "CSRF_SECRET_KEY" => Some("reset-test-key-0123456789abcdef".into()),
            _ => None,
        })
        .expect("config"),
    )
}

async fn setup() -> Setup {
    let config = config();
    let users = Arc::new(MemoryUserStore::new());
    let tokens = Arc::new(MemoryTokenStore::new());
    let mailer = Arc::new(MemoryMailer::new());
    let clock = ManualClock::at_ms(1_900_000_000_000);
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    users
        .create(&flowbotz_tests::accounts::verified_user(
            "u-ada",
            "ada@example.com",
            &password::hash(OLD).expect("hash"),
        ))
        .await
        .expect("create");
    Setup {
        request: (
            Pipeline::new(EndpointId::PasswordReset.endpoint(), config.clone()),
            RequestReset::new(
                users.clone(),
                tokens.clone(),
                mailer.clone(),
                Links::new("https://app.example"),
                c.clone(),
            ),
        ),
        confirm: (
            Pipeline::new(EndpointId::PasswordResetConfirm.endpoint(), config.clone()),
            ConfirmReset::new(users.clone(), tokens.clone(), c.clone(), config.password),
        ),
        sessions: Sessions::new(&config, c).expect("sessions"),
        users,
        tokens,
        mailer,
        clock,
    }
}

async fn ask(s: &Setup, email: &str) -> Response<Body> {
    let e = Event::new(Shape::RestV1, "POST", "/api/auth/password-reset")
        .json_body(&json!({ "email": email }));
    s.request.0.serve(e.request(), &s.request.1).await
}

async fn confirm(s: &Setup, token: &str, pw: &str) -> Response<Body> {
    let e = Event::new(Shape::RestV1, "POST", "/api/auth/password-reset/confirm")
        .json_body(&json!({ "token": token, "password": pw }));
    s.confirm.0.serve(e.request(), &s.confirm.1).await
}

fn body(resp: &Response<Body>) -> Value {
    match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("json"),
        _ => Value::Null,
    }
}

fn token_in(text: &str) -> String {
    let at = text.find("#reset=").expect("a reset link") + "#reset=".len();
    text[at..at + 43].to_string()
}

#[tokio::test]
async fn given_an_account_or_none_when_asking_for_a_reset_then_the_same_202_and_one_mail_each() {
    let s = setup().await;
    let known = ask(&s, "Ada@Example.com").await;
    let unknown = ask(&s, "nobody@example.com").await;
    assert_eq!(
        (known.status().as_u16(), unknown.status().as_u16()),
        (202, 202)
    );
    assert_eq!(body(&known), body(&unknown));
    let ada = s.mailer.sent_to("ada@example.com");
    let nobody = s.mailer.sent_to("nobody@example.com");
    assert_eq!((ada.len(), nobody.len()), (1, 1));
    assert_eq!(ada[0].subject, RESET_SUBJECT);
    assert_eq!(nobody[0].subject, NO_ACCOUNT_SUBJECT);
    assert!(!nobody[0].text.contains("#reset="));
}

#[tokio::test]
async fn given_three_mails_this_hour_when_asking_again_then_202_and_no_fourth_mail() {
    let s = setup().await;
    for _ in 0..5 {
        assert_eq!(ask(&s, "ada@example.com").await.status(), 202);
    }
    assert_eq!(s.mailer.sent_to("ada@example.com").len(), 3);
    s.clock.advance_ms(3_601_000);
    assert_eq!(ask(&s, "ada@example.com").await.status(), 202);
    assert_eq!(s.mailer.sent_to("ada@example.com").len(), 4);
}

async fn ask_from(s: &Setup, email: &str, ip: &str) -> Response<Body> {
    let e = Event::new(Shape::RestV1, "POST", "/api/auth/password-reset")
        .source_ip(ip)
        .json_body(&json!({ "email": email }));
    s.request.0.serve(e.request(), &s.request.1).await
}

#[tokio::test]
async fn given_a_stranger_spent_their_networks_mails_when_the_owner_asks_from_another_then_mailed_up_to_the_ceiling()
 {
    let s = setup().await;
    for _ in 0..3 {
        ask_from(&s, "ada@example.com", "203.0.113.7").await;
    }
    assert_eq!(
        ask_from(&s, "ada@example.com", "203.0.113.7")
            .await
            .status(),
        202
    );
    assert_eq!(s.mailer.sent_to("ada@example.com").len(), 3);
    // The owner's network has its own share.
    ask_from(&s, "ada@example.com", "198.51.100.20").await;
    assert_eq!(s.mailer.sent_to("ada@example.com").len(), 4);
    // Many networks together stop at the address's ceiling of ten.
    for i in 0..20 {
        ask_from(&s, "ada@example.com", &format!("192.0.2.{i}")).await;
    }
    assert_eq!(s.mailer.sent_to("ada@example.com").len(), 10);
}

#[tokio::test]
async fn given_an_undeliverable_address_when_asking_then_422_and_no_mail() {
    let s = setup().await;
    let resp = ask(&s, "a@localhost").await;
    assert_eq!(resp.status(), 422);
    assert!(s.mailer.sent().is_empty());
}

#[tokio::test]
async fn given_the_mail_service_down_when_asking_then_the_same_202() {
    let s = setup().await;
    s.mailer.fail(true);
    let resp = ask(&s, "ada@example.com").await;
    assert_eq!(resp.status(), 202);
    assert_eq!(body(&resp)["message"], ACCEPTED);
}

#[tokio::test]
async fn given_a_reset_link_when_confirming_then_the_password_changes_every_session_ends_and_the_link_is_spent()
 {
    let s = setup().await;
    let (_, before) = s.sessions.issue_session("u-ada", 0).expect("session");
    ask(&s, "ada@example.com").await;
    let token = token_in(&s.mailer.sent_to("ada@example.com")[0].text);

    assert_eq!(confirm(&s, &token, NEW).await.status(), 204);
    let (user, _) = s.users.lookup("ada@example.com").await.expect("lookup");
    let user = user.expect("account");
    assert!(password::verify(NEW, Some(&user.password_hash)));
    assert_eq!(
        s.users.check(&before).await.expect("check"),
        SessionState::Ended
    );
    let again = confirm(&s, &token, "yet another fine passphrase 99").await;
    assert_eq!(body(&again)["type"], "/problems/invalid-link");
}

#[tokio::test]
async fn given_a_weak_password_when_confirming_then_422_and_the_link_still_works() {
    let s = setup().await;
    ask(&s, "ada@example.com").await;
    let token = token_in(&s.mailer.sent_to("ada@example.com")[0].text);
    let weak = confirm(&s, &token, "password1234").await;
    assert_eq!(weak.status(), 422);
    assert_eq!(body(&weak)["errors"][0]["field"], "password");
    assert_eq!(confirm(&s, &token, NEW).await.status(), 204);
}

#[tokio::test]
async fn given_a_verification_token_or_an_expired_reset_token_when_confirming_then_invalid_link() {
    let s = setup().await;
    let verify = issue(
        s.tokens.as_ref(),
        &Grant::Verify(PendingRegistration {
            email: "ada@example.com".into(),
            name: None,
            password_hash: password::hash(NEW).expect("hash"),
        }),
        s.clock.now_s(),
    )
    .await
    .expect("issue");
    let wrong = confirm(&s, verify.expose(), NEW).await;
    assert_eq!(body(&wrong)["type"], "/problems/invalid-link");

    ask(&s, "ada@example.com").await;
    let token = token_in(&s.mailer.sent_to("ada@example.com")[0].text);
    s.clock.advance_ms(3_601_000);
    let expired = confirm(&s, &token, NEW).await;
    assert_eq!(body(&expired)["type"], "/problems/invalid-link");
    let _ = s.tokens.consume(&token, Purpose::Reset, 0).await;
}

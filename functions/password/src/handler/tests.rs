use std::sync::Arc;

use flowbotz_security::accounts::memory::MemoryUserStore;
use flowbotz_security::accounts::{UserStore, password};
use flowbotz_security::clock::{Clock, ManualClock};
use flowbotz_security::revocation::{SessionState, SessionStore};
use flowbotz_security::session::Sessions;
use flowbotz_security::{Config, Pipeline};
use flowbotz_tests::events::{Event, Shape};
use lambda_http::{Body, Response};
use serde_json::{Value, json};

use super::*;

const OLD: &str = "violet quasar mangrove tundra 71";
const NEW: &str = "amber quartz meadow harbour 17";

struct Setup {
    pipeline: Pipeline,
    handler: ChangePassword,
    users: Arc<MemoryUserStore>,
    sessions: Sessions,
}

async fn setup() -> Setup {
    let config = Arc::new(
        Config::from_lookup(|k| match k {
            "ENVIRONMENT" => Some("development".into()),
            "JWT_SECRET_KEY" | "CSRF_SECRET_KEY" => {
                Some("password-test-key-0123456789abcdef".into())
            }
            _ => None,
        })
        .expect("config"),
    );
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_ms(1_900_000_000_000));
    let users = Arc::new(MemoryUserStore::new());
    users
        .create(&flowbotz_tests::accounts::verified_user(
            "u-ada",
            "ada@example.com",
            &password::hash(OLD).expect("hash"),
        ))
        .await
        .expect("create");
    let sessions = Sessions::new(&config, clock.clone()).expect("sessions");
    Setup {
        pipeline: Pipeline::new(ENDPOINT, config.clone())
            .with_sessions(sessions.clone())
            .with_session_store(users.clone()),
        handler: ChangePassword::new(users.clone(), clock, config.login_throttle, config.password),
        users,
        sessions,
    }
}

async fn change(s: &Setup, token: &str, csrf: &str, body: Value) -> Response<Body> {
    let e = Event::new(Shape::RestV1, "POST", ENDPOINT.route)
        .header("authorization", &format!("Bearer {token}"))
        .header("x-csrf-token", csrf)
        .json_body(&body);
    s.pipeline.serve(e.request(), &s.handler).await
}

fn body(resp: &Response<Body>) -> Value {
    match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("json"),
        _ => Value::Null,
    }
}

#[tokio::test]
async fn given_the_current_password_when_changing_then_204_this_session_stays_and_every_other_ends()
{
    let s = setup().await;
    let (mine, my_claims) = s.sessions.issue_session("u-ada", 0).expect("session");
    let (_, other) = s.sessions.issue_session("u-ada", 0).expect("session");
    let csrf = s.sessions.issue_csrf(&my_claims).token;
    let resp = change(
        &s,
        &mine.token,
        &csrf,
        json!({"current_password": OLD, "new_password": NEW}),
    )
    .await;
    assert_eq!(resp.status(), 204, "{:?}", body(&resp));
    let (user, _) = s.users.lookup("ada@example.com").await.expect("lookup");
    assert!(password::verify(
        NEW,
        Some(&user.expect("account").password_hash)
    ));
    assert_eq!(
        s.users.check(&my_claims).await.expect("check"),
        SessionState::Active
    );
    assert_eq!(
        s.users.check(&other).await.expect("check"),
        SessionState::Ended
    );
}

#[tokio::test]
async fn given_wrong_current_passwords_when_changing_then_422_and_they_count_towards_the_throttle()
{
    let s = setup().await;
    let (mine, claims) = s.sessions.issue_session("u-ada", 0).expect("session");
    let csrf = s.sessions.issue_csrf(&claims).token;
    let wrong = json!({"current_password": "not the password at all", "new_password": NEW});
    for _ in 0..5 {
        let resp = change(&s, &mine.token, &csrf, wrong.clone()).await;
        assert_eq!(resp.status(), 422);
        assert_eq!(body(&resp)["errors"][0]["field"], "current_password");
    }
    let sixth = change(&s, &mine.token, &csrf, wrong).await;
    assert_eq!(sixth.status(), 429);
    assert_eq!(body(&sixth)["type"], "/problems/account-throttled");
    // The throttle is the login's: the account's logins are throttled too.
    let (_, failures) = s.users.lookup("ada@example.com").await.expect("lookup");
    assert_eq!(failures.count, 5);
}

#[tokio::test]
async fn given_a_weak_new_password_when_changing_then_422_on_new_password_and_nothing_changes() {
    let s = setup().await;
    let (mine, claims) = s.sessions.issue_session("u-ada", 0).expect("session");
    let csrf = s.sessions.issue_csrf(&claims).token;
    let resp = change(
        &s,
        &mine.token,
        &csrf,
        json!({"current_password": OLD, "new_password": "password1234"}),
    )
    .await;
    assert_eq!(resp.status(), 422);
    assert_eq!(body(&resp)["errors"][0]["field"], "new_password");
    let (user, _) = s.users.lookup("ada@example.com").await.expect("lookup");
    assert!(password::verify(
        OLD,
        Some(&user.expect("account").password_hash)
    ));
}

#[tokio::test]
async fn given_weak_new_passwords_with_the_right_current_one_when_changing_then_nothing_counts_as_a_failed_login()
 {
    let s = setup().await;
    let (mine, claims) = s.sessions.issue_session("u-ada", 0).expect("session");
    let csrf = s.sessions.issue_csrf(&claims).token;
    for _ in 0..6 {
        let resp = change(
            &s,
            &mine.token,
            &csrf,
            json!({"current_password": OLD, "new_password": "password1234"}),
        )
        .await;
        assert_eq!(resp.status(), 422);
    }
    let (_, failures) = s.users.lookup("ada@example.com").await.expect("lookup");
    assert_eq!(failures.count, 0, "the owner is not throttling themself");
}

#[tokio::test]
async fn given_no_csrf_token_when_changing_then_403() {
    let s = setup().await;
    let (mine, _) = s.sessions.issue_session("u-ada", 0).expect("session");
    let e = Event::new(Shape::RestV1, "POST", ENDPOINT.route)
        .header("authorization", &format!("Bearer {}", mine.token))
        .json_body(&json!({"current_password": OLD, "new_password": NEW}));
    assert_eq!(
        s.pipeline.serve(e.request(), &s.handler).await.status(),
        403
    );
}

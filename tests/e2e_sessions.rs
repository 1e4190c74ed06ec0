//! Sessions that end, end to end: erasure, logout, logout-all, a password change and a password
//! reset each end sessions, and an ended session's bearer and CSRF tokens get 401 on the very
//! next request of every authenticated function; what should survive (the changing session, the
//! user's other sessions after a logout) still works. The two-endpoint functions are reached
//! through real HTTP on both of their paths, and no mailed token or mail text reaches a log.

use std::time::Duration;

use flowbotz_security::mail::{EXISTING_SUBJECT, RESET_SUBJECT, VERIFY_SUBJECT};
use flowbotz_tests::events::{Event, Shape};
use flowbotz_tests::mailbox::{mailbox, wait_for_mail};
use flowbotz_tests::stack::{
    Answer, MAIL_WAIT, PASSWORD, Session, assert_problem, base_url, function_log, http_client,
    invoke, log_in, login_again, mailed_token, new_session, register, verify_email,
};
use serde_json::{Value, json};

/// A new password that meets the policy.
const NEW_PASSWORD: &str = "obsidian kestrel lagoon rampart 58";

/// `event` with `s`'s bearer token and CSRF token.
fn with_tokens(event: Event, s: &Session) -> Event {
    event
        .header("Authorization", &format!("Bearer {}", s.access_token))
        .header("X-CSRF-Token", &s.csrf_token)
}

fn chat_body() -> Value {
    json!({"messages": [{"role": "user", "content": "still signed in?"}]})
}

/// Asserts that `s` has ended: its tokens get 401 `/problems/unauthorized` from the CSRF token,
/// chat and payment-intent functions, each on its first request after the session ended.
async fn assert_ended(s: &Session, how: &str) {
    let cases = [
        (
            "csrf-token",
            with_tokens(Event::new(Shape::RestV1, "GET", "/api/auth/csrf-token"), s),
        ),
        (
            "chat",
            with_tokens(Event::new(Shape::HttpV2, "POST", "/api/ai/chat"), s)
                .json_body(&chat_body()),
        ),
        (
            "payment-intent",
            with_tokens(
                Event::new(Shape::RestV1, "POST", "/api/payments/create-payment-intent"),
                s,
            )
            .json_body(&json!({"amount": 2000, "currency": "usd"})),
        ),
    ];
    for (function, event) in cases {
        let a = invoke(function, &event).await;
        assert_eq!(a.status, 401, "{how}: {function} answered {}", a.body);
        assert_problem(&a, 401);
        assert_eq!(
            a.json()["type"],
            "/problems/unauthorized",
            "{how}: {function}"
        );
    }
}

/// Asserts that `s` still works: a CSRF token and a chat answer.
async fn assert_works(s: &Session, what: &str) {
    let a = invoke(
        "csrf-token",
        &with_tokens(Event::new(Shape::HttpV2, "GET", "/api/auth/csrf-token"), s),
    )
    .await;
    assert_eq!(a.status, 200, "{what}: csrf-token: {}", a.body);
    let a = invoke(
        "chat",
        &with_tokens(Event::new(Shape::RestV1, "POST", "/api/ai/chat"), s).json_body(&chat_body()),
    )
    .await;
    assert_eq!(a.status, 200, "{what}: chat: {}", a.body);
}

async fn logout(s: &Session, all: bool) -> Answer {
    let path = if all {
        "/api/auth/logout-all"
    } else {
        "/api/auth/logout"
    };
    invoke(
        "logout",
        &with_tokens(Event::new(Shape::HttpV2, "POST", path), s),
    )
    .await
}

async fn change_password(s: &Session, current: &str, new: &str) -> Answer {
    invoke(
        "password",
        &with_tokens(Event::new(Shape::RestV1, "POST", "/api/auth/password"), s)
            .json_body(&json!({"current_password": current, "new_password": new})),
    )
    .await
}

async fn request_reset(email: &str) -> Answer {
    invoke(
        "reset",
        &Event::new(Shape::HttpV2, "POST", "/api/auth/password-reset")
            .json_body(&json!({"email": email})),
    )
    .await
}

async fn confirm_reset(token: &str, password: &str) -> Answer {
    invoke(
        "reset",
        &Event::new(Shape::RestV1, "POST", "/api/auth/password-reset/confirm")
            .json_body(&json!({"token": token, "password": password})),
    )
    .await
}

/// Requests a reset of `email`'s password and returns the token of the mail it sent.
async fn reset_token(email: &str) -> String {
    let before = mailbox(email).await.len();
    let a = request_reset(email).await;
    assert_eq!(a.status, 202, "password-reset: {}", a.body);
    let mails = wait_for_mail(email, before + 1, MAIL_WAIT).await;
    assert_eq!(mails[before].subject, RESET_SUBJECT);
    mails[before].link_token("reset").expect("a reset link")
}

async fn login_status(email: &str, password: &str) -> u16 {
    invoke(
        "login",
        &Event::new(Shape::HttpV2, "POST", "/api/auth/login")
            .json_body(&json!({"email": email, "password": password})),
    )
    .await
    .status
}

#[tokio::test]
async fn given_an_erased_account_when_its_session_is_used_next_then_401_on_every_function() {
    let s = new_session().await;
    let a = invoke(
        "account",
        &with_tokens(Event::new(Shape::HttpV2, "DELETE", "/api/account"), &s),
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_ended(&s, "erasure").await;
}

#[tokio::test]
async fn given_a_logout_when_its_session_is_used_next_then_401_and_the_users_other_session_still_works()
 {
    let s = new_session().await;
    let other = login_again(&s).await;
    let a = logout(&s, false).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert!(a.body.is_empty(), "{}", a.body);
    assert_ended(&s, "logout").await;
    assert_works(&other, "the other session after a logout").await;
    // A later login starts a session that works.
    assert_works(&log_in(&s.email, &s.password).await, "a new login").await;
}

#[tokio::test]
async fn given_a_logout_all_when_any_session_of_the_user_is_used_next_then_401() {
    let s = new_session().await;
    let other = login_again(&s).await;
    let a = logout(&s, true).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_ended(&s, "logout-all (the calling session)").await;
    assert_ended(&other, "logout-all (another session)").await;
    assert_works(&log_in(&s.email, &s.password).await, "a new login").await;
}

#[tokio::test]
async fn given_a_password_change_when_the_other_session_is_used_next_then_401_and_the_changing_session_still_works()
 {
    let s = new_session().await;
    let other = login_again(&s).await;
    // A wrong current password changes nothing and names the field.
    let a = change_password(&s, "not the current passphrase 7", NEW_PASSWORD).await;
    assert_problem(&a, 422);
    assert_eq!(
        a.json()["errors"][0]["field"],
        "current_password",
        "{}",
        a.body
    );
    assert_works(&other, "the other session after a refused change").await;

    let a = change_password(&s, &s.password, NEW_PASSWORD).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_ended(&other, "password change (another session)").await;
    assert_works(&s, "the changing session").await;
    assert_eq!(login_status(&s.email, &s.password).await, 401);
    assert_eq!(login_status(&s.email, NEW_PASSWORD).await, 200);
}

#[tokio::test]
async fn given_a_password_change_with_wrong_current_passwords_when_logging_in_then_they_counted_as_failed_logins()
 {
    let s = new_session().await;
    for _ in 0..5 {
        let a = change_password(&s, "not the current passphrase 7", NEW_PASSWORD).await;
        assert_problem(&a, 422);
    }
    let a = invoke(
        "login",
        &Event::new(Shape::RestV1, "POST", "/api/auth/login")
            .json_body(&json!({"email": s.email, "password": s.password})),
    )
    .await;
    assert_problem(&a, 429);
    assert_eq!(a.json()["type"], "/problems/account-throttled");
}

#[tokio::test]
async fn given_a_password_reset_when_a_session_from_before_is_used_next_then_401() {
    let s = new_session().await;
    let other = login_again(&s).await;
    let token = reset_token(&s.email).await;
    let a = confirm_reset(&token, NEW_PASSWORD).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_ended(&s, "password reset").await;
    assert_ended(&other, "password reset (a second session)").await;
    assert_works(
        &log_in(&s.email, NEW_PASSWORD).await,
        "a login after the reset",
    )
    .await;
}

// ------------------------------------------------------------------------------------------
// Real HTTP: both paths of the two-endpoint functions are routed
// ------------------------------------------------------------------------------------------

async fn http(
    method: reqwest::Method,
    path: &str,
    s: Option<&Session>,
    body: Option<Value>,
) -> Answer {
    let mut req = http_client().request(method, format!("{}{path}", base_url()));
    if let Some(s) = s {
        req = req
            .header("Authorization", format!("Bearer {}", s.access_token))
            .header("X-CSRF-Token", &s.csrf_token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    Answer::from_http(req.send().await.expect("the stack answers")).await
}

async fn http_csrf_status(s: &Session) -> u16 {
    http(reqwest::Method::GET, "/api/auth/csrf-token", Some(s), None)
        .await
        .status
}

#[tokio::test]
async fn given_real_http_when_calling_both_paths_of_logout_and_of_reset_then_each_path_does_its_own_job()
 {
    use reqwest::Method;
    let s = new_session().await;
    let second = login_again(&s).await;
    let third = login_again(&s).await;

    // /api/auth/logout ends only the calling session.
    let a = http(Method::POST, "/api/auth/logout", Some(&s), None).await;
    assert_eq!(a.status, 204, "logout: {}", a.body);
    assert_eq!(http_csrf_status(&s).await, 401);
    assert_eq!(http_csrf_status(&second).await, 200);
    assert_eq!(http_csrf_status(&third).await, 200);

    // /api/auth/logout-all ends every session of the user.
    let a = http(Method::POST, "/api/auth/logout-all", Some(&second), None).await;
    assert_eq!(a.status, 204, "logout-all: {}", a.body);
    assert_eq!(http_csrf_status(&second).await, 401);
    assert_eq!(http_csrf_status(&third).await, 401);

    // /api/auth/password-reset mails a link; /api/auth/password-reset/confirm uses it.
    let before = mailbox(&s.email).await.len();
    let a = http(
        Method::POST,
        "/api/auth/password-reset",
        None,
        Some(json!({"email": s.email})),
    )
    .await;
    assert_eq!(a.status, 202, "password-reset: {}", a.body);
    assert!(a.json()["message"].is_string(), "{}", a.body);
    let token = mailed_token(&s.email, before + 1, "reset").await;
    let a = http(
        Method::POST,
        "/api/auth/password-reset/confirm",
        None,
        Some(json!({"token": token, "password": NEW_PASSWORD})),
    )
    .await;
    assert_eq!(a.status, 204, "password-reset/confirm: {}", a.body);
    assert_eq!(login_status(&s.email, NEW_PASSWORD).await, 200);
    assert_eq!(login_status(&s.email, PASSWORD).await, 401);
}

// ------------------------------------------------------------------------------------------
// Mail never reaches a log
// ------------------------------------------------------------------------------------------

/// Sentences of the mails' bodies, none of which may appear in a function's log.
const MAIL_TEXT: [&str; 5] = [
    "Someone, hopefully you",
    "open this link within",
    "No new account was created",
    "Setting a new password signs out",
    "there is no account with this address",
];

#[tokio::test]
async fn given_the_mail_flows_when_they_ran_then_no_token_and_no_mail_text_is_in_the_function_log()
{
    let mut tokens = Vec::new();
    let mut request_ids = Vec::new();
    let mut saw = |a: &Answer| {
        if let Some(id) = a.header("x-request-id") {
            request_ids.push(id.to_string());
        }
    };
    let email = format!(
        "maillog-{}@example.com",
        flowbotz_tests::events::unique_ip().replace(':', "")
    );
    // Register and verify.
    let a = register(&email, PASSWORD).await;
    saw(&a);
    assert_eq!(a.status, 202, "{}", a.body);
    let mails = wait_for_mail(&email, 1, MAIL_WAIT).await;
    assert_eq!(mails[0].subject, VERIFY_SUBJECT);
    let verify = mails[0].link_token("verify").expect("a verify link");
    let a = verify_email(&verify, PASSWORD).await;
    saw(&a);
    assert_eq!(a.status, 204, "{}", a.body);
    tokens.push(verify);
    // Register again: the "already have an account" mail with a reset link.
    let a = register(&email, NEW_PASSWORD).await;
    saw(&a);
    let mails = wait_for_mail(&email, 2, MAIL_WAIT).await;
    assert_eq!(mails[1].subject, EXISTING_SUBJECT);
    tokens.push(mails[1].link_token("reset").expect("a reset link"));
    // A reset, and a reset notice to an address without an account.
    let a = request_reset(&email).await;
    saw(&a);
    let mails = wait_for_mail(&email, 3, MAIL_WAIT).await;
    let reset = mails[2].link_token("reset").expect("a reset link");
    let a = confirm_reset(&reset, NEW_PASSWORD).await;
    saw(&a);
    assert_eq!(a.status, 204, "{}", a.body);
    tokens.push(reset);
    let nobody = format!("nobody-{email}");
    let a = request_reset(&nobody).await;
    saw(&a);
    wait_for_mail(&nobody, 1, MAIL_WAIT).await;

    let mut log = String::new();
    for _ in 0..100 {
        log = function_log();
        if request_ids.iter().all(|id| log.contains(id.as_str())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!log.is_empty(), "FLOWBOTZ_FUNCTION_LOG is not readable");
    for id in &request_ids {
        assert!(log.contains(id.as_str()), "no log line for request {id}");
    }
    for token in &tokens {
        assert!(
            !log.contains(token.as_str()),
            "a mailed token reached the log: {}…",
            &token[..8]
        );
    }
    for text in MAIL_TEXT {
        assert!(!log.contains(text), "mail text reached the log: {text}");
    }
}

/// Issue 19, item 3, both halves: strangers who know only the email cap the guesses at the
/// account (five, then 429 for every client without proof of an earlier login), yet the owner
/// always gets in: from a device that logged in before (its device token), and from any device
/// through the reset flow, which works during the lock and clears it.
#[tokio::test]
async fn given_strangers_locked_an_account_when_its_owner_uses_a_known_device_or_the_reset_flow_then_the_owner_gets_in()
 {
    let s = new_session().await;
    let login = |body: Value| async move {
        invoke(
            "login",
            &Event::new(Shape::HttpV2, "POST", "/api/auth/login").json_body(&body),
        )
        .await
    };
    let first = login(json!({"email": s.email, "password": s.password})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let device = first.json()["device_token"]
        .as_str()
        .expect("a device token")
        .to_string();

    for _ in 0..5 {
        assert_eq!(
            login_status(&s.email, "not the password at all 0").await,
            401
        );
    }
    assert_eq!(
        login_status(&s.email, &s.password).await,
        429,
        "guesses stay capped per account"
    );

    let known =
        login(json!({"email": s.email, "password": s.password, "device_token": device})).await;
    assert_eq!(
        known.status, 200,
        "the owner's known device: {}",
        known.body
    );

    let token = reset_token(&s.email).await;
    let new = "amber quartz meadow harbour 17";
    let confirmed = confirm_reset(&token, new).await;
    assert_eq!(confirmed.status, 204, "{}", confirmed.body);
    assert_eq!(
        login_status(&s.email, new).await,
        200,
        "the reset cleared the lock"
    );
}

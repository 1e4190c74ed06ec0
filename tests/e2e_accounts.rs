//! Accounts and sessions end to end: register, verify the mailed link, login, CSRF tokens, token
//! attacks, per-account throttling, erasure, pre-hijacking and password reset, through the
//! running functions and the local SES.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use flowbotz_security::mail::{
    EXISTING_SUBJECT, NO_ACCOUNT_SUBJECT, RESET_SUBJECT, VERIFY_SUBJECT,
};
use flowbotz_tests::events::{Event, SHAPES, Shape, unique_ip};
use flowbotz_tests::mailbox::wait_for_mail;
use flowbotz_tests::stack::{
    MAIL_WAIT, PASSWORD, Session, assert_problem, assert_security_headers, invoke, local_secret,
    mailed_token, new_session, raw_http, register, verify_email,
};
use serde_json::{Value, json};

fn login_event(email: &str, password: &str) -> Event {
    Event::new(Shape::RestV1, "POST", "/api/auth/login")
        .json_body(&json!({"email": email, "password": password}))
}

fn without_id(mut v: Value) -> Value {
    v["request_id"] = Value::Null;
    v
}

fn authed(shape: Shape, method: &str, path: &str, s: &Session) -> Event {
    Event::new(shape, method, path).header("Authorization", &format!("Bearer {}", s.access_token))
}

#[tokio::test]
async fn given_register_login_and_csrf_token_when_called_then_the_session_works() {
    let s = new_session().await;
    // A duplicate registration answers exactly like a new one.
    let dup = json!({"email": s.email.to_uppercase(), "password": "another strong passphrase 99"});
    let a = invoke(
        "register",
        &Event::new(Shape::RestV1, "POST", "/api/auth/register").json_body(&dup),
    )
    .await;
    assert_eq!(a.status, 202);
    let fresh = json!({"email": format!("fresh-{}", s.email), "password": PASSWORD});
    let b = invoke(
        "register",
        &Event::new(Shape::RestV1, "POST", "/api/auth/register").json_body(&fresh),
    )
    .await;
    assert_eq!(a.body, b.body, "no account enumeration through register");
    assert_security_headers(&a);

    for shape in SHAPES {
        let a = invoke(
            "csrf-token",
            &authed(shape, "GET", "/api/auth/csrf-token", &s),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        // An hour, or less by the seconds since login: a CSRF token ends with its session.
        assert!(
            a.json()["expires_in"]
                .as_u64()
                .is_some_and(|s| (3590..=3600).contains(&s)),
            "{}",
            a.body
        );
        assert!(
            a.json()["csrf_token"]
                .as_str()
                .is_some_and(|t| t.starts_with("v2."))
        );
    }
    assert_problem(
        &invoke(
            "csrf-token",
            &Event::new(Shape::HttpV2, "GET", "/api/auth/csrf-token"),
        )
        .await,
        401,
    );
}

#[tokio::test]
async fn given_wrong_password_and_unknown_email_when_logging_in_then_identical_401s() {
    let s = new_session().await;
    let wrong = invoke("login", &login_event(&s.email, "not the right passphrase")).await;
    let unknown = invoke(
        "login",
        &login_event(&format!("nobody-{}", s.email), "not the right passphrase"),
    )
    .await;
    assert_problem(&wrong, 401);
    assert_problem(&unknown, 401);
    assert_eq!(without_id(wrong.json()), without_id(unknown.json()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn given_many_racing_wrong_passwords_from_distinct_ips_when_logging_in_then_at_most_five_are_verified()
 {
    let s = new_session().await;
    let attempts: Vec<_> = (0..30)
        .map(|_| {
            let e = login_event(&s.email, "not the right passphrase").source_ip(&unique_ip());
            tokio::spawn(async move {
                let a = invoke("login", &e).await;
                if a.status == 429 {
                    assert_eq!(
                        a.json()["type"],
                        "/problems/account-throttled",
                        "{}",
                        a.body
                    );
                }
                a.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.expect("task"));
    }
    let verified = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        verified <= 5,
        "{verified} attempts reached the password check: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        30 - verified
    );
}

#[tokio::test]
async fn given_five_failed_logins_when_a_sixth_arrives_then_429_with_retry_after() {
    let s = new_session().await;
    for _ in 0..5 {
        assert_eq!(
            invoke("login", &login_event(&s.email, "not the right passphrase"))
                .await
                .status,
            401
        );
    }
    let a = invoke("login", &login_event(&s.email, &s.password)).await;
    assert_problem(&a, 429);
    assert_eq!(a.json()["type"], "/problems/account-throttled");
    assert!(
        a.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s > 800 && s <= 900)
    );
}

fn forge(claims: &Value, key: &str, alg: &str) -> String {
    let header = B64.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = B64.encode(claims.to_string());
    if alg == "none" {
        return format!("{header}.{payload}.");
    }
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let mut h = Header::new(if alg == "HS512" {
        Algorithm::HS512
    } else {
        Algorithm::HS256
    });
    h.kid = None;
    encode(&h, claims, &EncodingKey::from_secret(key.as_bytes())).unwrap_or_default()
}

#[tokio::test]
async fn given_forged_or_stale_tokens_when_calling_then_401() {
    let s = new_session().await;
    let parts: Vec<&str> = s.access_token.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).expect("b64")).expect("json");
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).expect("b64")).expect("json");
    let key = local_secret("JWT_SECRET_KEY");
    let kid = header["kid"].as_str().expect("kid").to_string();
    let with_kid = |claims: &Value, key: &str| {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        encode(&h, claims, &EncodingKey::from_secret(key.as_bytes())).expect("encode")
    };
    let mut expired = claims.clone();
    expired["exp"] = json!(claims["iat"].as_u64().unwrap_or(0) - 60);
    expired["iat"] = json!(claims["iat"].as_u64().unwrap_or(0) - 3600);
    expired["nbf"] = expired["iat"].clone();
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("someone-else");
    let mut tampered = s.access_token.clone();
    let evil = B64.encode(
        claims
            .to_string()
            .replace(claims["sub"].as_str().unwrap_or("x"), "admin"),
    );
    tampered = format!(
        "{}.{}.{}",
        parts[0],
        evil,
        tampered.rsplit('.').next().unwrap_or("")
    );
    let cases = [
        ("alg none", forge(&claims, &key, "none")),
        (
            "another key",
            with_kid(&claims, "a-different-key-0123456789abcdef-xyz"),
        ),
        ("expired", with_kid(&expired, &key)),
        ("wrong aud", with_kid(&wrong_aud, &key)),
        ("tampered payload", tampered),
        ("HS512", forge(&claims, &key, "HS512")),
        ("garbage", "abc.def.ghi".to_string()),
    ];
    for (name, token) in cases {
        let e = Event::new(Shape::HttpV2, "GET", "/api/auth/csrf-token")
            .header("Authorization", &format!("Bearer {token}"));
        let a = invoke("csrf-token", &e).await;
        assert_problem(&a, 401);
        assert!(
            a.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{name}"
        );
    }
    // The genuine token still works.
    assert_eq!(
        invoke(
            "csrf-token",
            &authed(Shape::HttpV2, "GET", "/api/auth/csrf-token", &s)
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn given_bad_csrf_or_origins_when_erasing_then_403_and_with_both_then_204() {
    let s = new_session().await;
    let other = new_session().await;
    let del = |s: &Session| authed(Shape::RestV1, "DELETE", "/api/account", s);
    let forged = {
        let mut t = s.csrf_token.clone();
        let last = t.pop().unwrap_or('A');
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    };
    let cases = [
        ("missing", del(&s)),
        ("forged", del(&s).header("X-CSRF-Token", &forged)),
        (
            "other user's",
            del(&s).header("X-CSRF-Token", &other.csrf_token),
        ),
        (
            "expired",
            del(&s).header("X-CSRF-Token", "v2.1000.bm9uY2U.AAAA"),
        ),
        (
            "disallowed origin",
            del(&s)
                .header("X-CSRF-Token", &s.csrf_token)
                .header("Origin", "https://evil.example"),
        ),
        (
            "cross-site",
            del(&s)
                .header("X-CSRF-Token", &s.csrf_token)
                .header("Sec-Fetch-Site", "cross-site"),
        ),
        (
            "same-site",
            del(&s)
                .header("X-CSRF-Token", &s.csrf_token)
                .header("Sec-Fetch-Site", "same-site"),
        ),
    ];
    for (name, e) in cases {
        let a = invoke("account", &e.source_ip(&unique_ip())).await;
        assert_problem(&a, 403);
        assert!(
            a.json()["type"]
                .as_str()
                .is_some_and(|t| t.contains("csrf") || t.contains("cross-origin")),
            "{name}"
        );
    }
    assert_problem(
        &invoke(
            "account",
            &Event::new(Shape::HttpV2, "DELETE", "/api/account"),
        )
        .await,
        401,
    );
    // An allowed origin with a valid token passes.
    let ok = del(&s)
        .header("X-CSRF-Token", &s.csrf_token)
        .header("Origin", "http://localhost:3000");
    let a = invoke("account", &ok).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_security_headers(&a);
    // The erased account now fails like an unknown email.
    let gone = invoke("login", &login_event(&s.email, &s.password)).await;
    let unknown = invoke(
        "login",
        &login_event(&format!("never-{}", s.email), &s.password),
    )
    .await;
    assert_problem(&gone, 401);
    assert_eq!(without_id(gone.json()), without_id(unknown.json()));
}

#[tokio::test]
async fn given_weak_passwords_when_registering_then_422_naming_the_rule() {
    for (password, words) in [
        ("short", "at least 12"),
        ("password1234", "commonly used"),
        ("zzzzzzzzzzzzzzzz", "too easy"),
    ] {
        let body = json!({"email": format!("weak-{}@example.com", unique_ip().replace(':', "")), "password": password});
        let a = invoke(
            "register",
            &Event::new(Shape::HttpV2, "POST", "/api/auth/register").json_body(&body),
        )
        .await;
        assert_problem(&a, 422);
        let errors = a.json()["errors"].clone();
        assert!(errors.to_string().contains(words), "{errors}");
        assert!(!a.body.contains(password));
    }
}

#[test]
fn given_ten_logins_over_http_when_limits_trip_then_429_with_headers_and_xff_changes_nothing() {
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..10 {
        let xff = format!("203.0.113.{i}");
        let a = raw_http(
            "POST",
            "/api/auth/login",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", &xff),
            ],
            b"{}",
        );
        statuses.push(a.status);
        last = Some(a);
    }
    assert_eq!(&statuses[..3], &[422, 422, 422], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(
        statuses[3..5].iter().all(|s| *s == 429 || *s == 422),
        "{statuses:?}"
    );
    let a = last.expect("answer");
    assert_problem(&a, 429);
    assert!(a.header("retry-after").is_some());
    assert_eq!(a.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(
        a.header("ratelimit-policy"),
        Some("\"minute\";q=5;w=60, \"burst\";q=3;w=10")
    );
    assert!(
        a.header("ratelimit")
            .is_some_and(|v| v.contains("\"burst\";r="))
    );
}

#[tokio::test]
async fn given_undeliverable_looking_addresses_when_registering_then_422_on_email_and_real_ones_pass()
 {
    let register = |email: &str| {
        Event::new(Shape::HttpV2, "POST", "/api/auth/register")
            .source_ip(&unique_ip())
            .json_body(&json!({"email": email, "password": "violet quasar mangrove tundra 71"}))
    };
    for bad in ["a@b", "a@localhost", "a@b.c0m"] {
        let a = invoke("register", &register(bad)).await;
        assert_problem(&a, 422);
        assert_eq!(a.json()["errors"][0]["field"], "email", "{bad}: {}", a.body);
    }
    let tag = unique_ip().replace(':', "");
    for good in [
        format!("someone+{tag}@example.com"),
        format!("{tag}@mail.eu.example.org"),
        format!("{tag}@xn--bcher-kva.example.com"),
    ] {
        assert_eq!(
            invoke("register", &register(&good)).await.status,
            202,
            "{good}"
        );
    }
}

#[tokio::test]
async fn given_an_erased_account_when_its_tokens_are_used_again_then_every_authenticated_endpoint_answers_401()
 {
    let s = new_session().await;
    let with_csrf = |e: Event| e.header("X-CSRF-Token", &s.csrf_token);
    let erase = invoke(
        "account",
        &with_csrf(authed(Shape::HttpV2, "DELETE", "/api/account", &s)),
    )
    .await;
    assert_eq!(erase.status, 204, "{}", erase.body);
    let chat = json!({"messages": [{"role": "user", "content": "still there?"}]});
    let pay = json!({"amount": 2000, "currency": "usd"});
    let cases = [
        (
            "csrf-token",
            authed(Shape::RestV1, "GET", "/api/auth/csrf-token", &s),
        ),
        (
            "chat",
            with_csrf(authed(Shape::HttpV2, "POST", "/api/ai/chat", &s)).json_body(&chat),
        ),
        (
            "payment-intent",
            with_csrf(authed(
                Shape::RestV1,
                "POST",
                "/api/payments/create-payment-intent",
                &s,
            ))
            .json_body(&pay),
        ),
        (
            "account",
            with_csrf(authed(Shape::HttpV2, "DELETE", "/api/account", &s)),
        ),
    ];
    for (function, e) in cases {
        let a = invoke(function, &e).await;
        assert_problem(&a, 401);
        assert_eq!(a.json()["type"], "/problems/unauthorized", "{function}");
    }
}

// ------------------------------------------------------------------------------------------
// Email ownership: verification, pre-hijacking, reset
// ------------------------------------------------------------------------------------------

fn fresh_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", unique_ip().replace(':', ""))
}

/// The parts of a problem that must not tell two failures apart.
fn problem_parts(a: &flowbotz_tests::stack::Answer) -> Value {
    let v = a.json();
    json!([v["type"], v["title"], v["detail"], v["status"]])
}

#[tokio::test]
async fn given_a_registration_not_yet_verified_when_logging_in_then_401_like_a_wrong_password_for_an_unknown_email_and_200_after_verifying()
 {
    let email = fresh_email("unverified");
    let a = register(&email, PASSWORD).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let early = invoke("login", &login_event(&email, PASSWORD)).await;
    let unknown = invoke(
        "login",
        &login_event(&fresh_email("nobody"), "not the right passphrase"),
    )
    .await;
    assert_problem(&early, 401);
    assert_problem(&unknown, 401);
    assert_eq!(problem_parts(&early), problem_parts(&unknown));
    assert_eq!(without_id(early.json()), without_id(unknown.json()));

    let token = mailed_token(&email, 1, "verify").await;
    let a = verify_email(&token, PASSWORD).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let a = invoke("login", &login_event(&email, PASSWORD)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The link is single use.
    let a = verify_email(&token, PASSWORD).await;
    assert_problem(&a, 400);
    assert_eq!(a.json()["type"], "/problems/invalid-link");
}

#[tokio::test]
async fn given_an_attacker_registered_the_victims_email_first_when_the_links_are_used_then_only_the_victims_own_link_and_password_make_the_account()
 {
    let attacker_password = "obsidian kestrel lagoon rampart 58";
    let victim_password = PASSWORD;
    let email = fresh_email("victim");
    // The attacker registers the victim's address first, then the victim registers it.
    let a = register(&email, attacker_password).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let accepted = a.body.clone();
    let a = register(&email, victim_password).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.body, accepted);
    let mails = wait_for_mail(&email, 2, MAIL_WAIT).await;
    assert!(
        mails.iter().all(|m| m.subject == VERIFY_SUBJECT),
        "{mails:?}"
    );
    let attackers_link = mails[0].link_token("verify").expect("a verify link");
    let victims_link = mails[1].link_token("verify").expect("a verify link");
    assert_ne!(attackers_link, victims_link);

    // The victim clicks the attacker's link and enters their own password: refused, nothing
    // created.
    let a = verify_email(&attackers_link, victim_password).await;
    assert_problem(&a, 400);
    assert_eq!(a.json()["type"], "/problems/invalid-link");
    for password in [victim_password, attacker_password] {
        let a = invoke("login", &login_event(&email, password)).await;
        assert_problem(&a, 401);
    }
    // The victim's own link with the victim's password makes the account, the victim's alone.
    let a = verify_email(&victims_link, victim_password).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let a = invoke("login", &login_event(&email, attacker_password)).await;
    assert_problem(&a, 401);
    let a = invoke("login", &login_event(&email, victim_password)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The attacker's link is spent: it never makes a second account.
    let a = verify_email(&attackers_link, attacker_password).await;
    assert_problem(&a, 400);
    assert_eq!(a.json()["type"], "/problems/invalid-link");

    // Registering the verified address again answers as for a new one and mails its owner.
    let again = register(&email, attacker_password).await;
    let fresh = register(&fresh_email("fresh"), attacker_password).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body, fresh.body, "no enumeration through register");
    assert_eq!(again.body, accepted);
    let mails = wait_for_mail(&email, 3, MAIL_WAIT).await;
    assert_eq!(mails.len(), 3, "{mails:?}");
    assert_eq!(mails[2].subject, EXISTING_SUBJECT);
    assert!(
        mails[2].link_token("reset").is_some(),
        "a reset link: {}",
        mails[2].text
    );
    assert!(mails[2].link_token("verify").is_none(), "no second account");
    let a = invoke("login", &login_event(&email, attacker_password)).await;
    assert_problem(&a, 401);
    let a = invoke("login", &login_event(&email, victim_password)).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

async fn request_reset(email: &str) -> flowbotz_tests::stack::Answer {
    invoke(
        "reset",
        &Event::new(Shape::HttpV2, "POST", "/api/auth/password-reset")
            .json_body(&json!({"email": email})),
    )
    .await
}

async fn confirm_reset(token: &str, password: &str) -> flowbotz_tests::stack::Answer {
    invoke(
        "reset",
        &Event::new(Shape::RestV1, "POST", "/api/auth/password-reset/confirm")
            .json_body(&json!({"token": token, "password": password})),
    )
    .await
}

#[tokio::test]
async fn given_a_password_reset_when_confirmed_with_the_mailed_token_then_the_new_password_works_old_sessions_end_and_the_token_is_single_use()
 {
    let new_password = "obsidian kestrel lagoon rampart 58";
    let s = new_session().await;
    let nobody = fresh_email("nobody");
    let unknown = request_reset(&nobody).await;
    let known = request_reset(&s.email).await;
    assert_eq!(known.status, 202, "{}", known.body);
    assert_eq!(unknown.status, 202, "{}", unknown.body);
    assert_eq!(known.body, unknown.body, "no enumeration through reset");
    assert_security_headers(&known);
    let notice = wait_for_mail(&nobody, 1, MAIL_WAIT).await;
    assert_eq!(notice[0].subject, NO_ACCOUNT_SUBJECT);
    assert!(notice[0].link_token("reset").is_none());

    let mails = wait_for_mail(&s.email, 2, MAIL_WAIT).await;
    assert_eq!(mails[1].subject, RESET_SUBJECT);
    let token = mails[1].link_token("reset").expect("a reset link");
    // The password policy applies.
    let a = confirm_reset(&token, "short").await;
    assert_problem(&a, 422);
    let a = confirm_reset(&token, new_password).await;
    assert_eq!(a.status, 204, "{}", a.body);

    assert_problem(
        &invoke("login", &login_event(&s.email, &s.password)).await,
        401,
    );
    let a = invoke(
        "csrf-token",
        &authed(Shape::HttpV2, "GET", "/api/auth/csrf-token", &s),
    )
    .await;
    assert_problem(&a, 401);
    let a = invoke("login", &login_event(&s.email, new_password)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    let again = confirm_reset(&token, "saffron prairie nectar hollow 93").await;
    assert_problem(&again, 400);
    assert_eq!(again.json()["type"], "/problems/invalid-link");
    let a = invoke("login", &login_event(&s.email, new_password)).await;
    assert_eq!(a.status, 200, "the spent token changed nothing: {}", a.body);
}

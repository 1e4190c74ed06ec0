use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::memory::MemorySecrets;
use super::*;
use crate::clock::ManualClock;
use crate::session::Sessions;

const T0: u64 = 1_800_000_000_000;
const JWT_ID: &str = "flowbotz/production/jwt-secret-key";
const CSRF_ID: &str = "flowbotz/production/csrf-secret-key";
const WEBHOOK_ID: &str = "flowbotz/production/stripe-webhook-secret";

fn key(n: u8) -> String {
    format!("{}-{n}", "k".repeat(40))
}

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(move |k| map.get(k).cloned())
}

fn production() -> Config {
    config(&[
        ("ENVIRONMENT", "production"),
        ("JWT_SECRET_KEY_ID", JWT_ID),
        ("CSRF_SECRET_KEY_ID", CSRF_ID),
        ("STRIPE_WEBHOOK_SECRET_ID", WEBHOOK_ID),
    ])
    .expect("config")
}

fn source() -> Arc<MemorySecrets> {
    let s = MemorySecrets::new();
    s.rotate(JWT_ID, &key(1));
    s.rotate(CSRF_ID, &key(1));
    s.rotate(WEBHOOK_ID, "whsec_0123456789abcdef0123456789abcdef");
    Arc::new(s)
}

async fn load(source: &Arc<MemorySecrets>, clock: &ManualClock) -> Secrets {
    Secrets::load(
        &production(),
        &[Need::JwtKey, Need::CsrfKey, Need::StripeWebhookSecret],
        source.clone(),
        Arc::new(clock.clone()),
    )
    .await
    .expect("secrets")
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

#[tokio::test]
async fn given_ids_when_loading_then_rotating_secrets_are_read_at_both_stages_and_others_once() {
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let secrets = load(&src, &clock).await;
    assert_eq!(
        src.reads(),
        5,
        "JWT and CSRF at two stages, the webhook at one"
    );
    let snap = secrets.snapshot();
    assert_eq!(
        snap.get(Need::JwtKey).expect("jwt").current.expose(),
        key(1)
    );
    assert_eq!(snap.get(Need::JwtKey).expect("jwt").previous, None);
    assert!(snap.get(Need::AiApiKey).is_none(), "not asked for");
    assert!(
        !format!("{secrets:?}").contains(&key(1)),
        "Debug never shows a value"
    );
}

#[tokio::test]
async fn given_a_fresh_cache_when_requests_arrive_then_nothing_is_fetched_until_the_ttl_passes() {
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let secrets = load(&src, &clock).await;
    let after_load = src.reads();
    clock.advance_ms(299_000);
    secrets.refresh_if_due().await;
    assert_eq!(src.reads(), after_load, "inside the 300 s TTL");
    src.rotate(JWT_ID, &key(2));
    clock.advance_ms(1_000);
    secrets.refresh_if_due().await;
    assert_eq!(src.reads(), after_load + 5, "one refresh of every secret");
    let snap = secrets.snapshot();
    assert_eq!(snap.generation(), 2);
    let jwt = snap.get(Need::JwtKey).expect("jwt");
    assert_eq!(jwt.current.expose(), key(2));
    assert_eq!(
        jwt.previous.as_ref().map(Secret::expose),
        Some(key(1).as_str())
    );
}

#[tokio::test]
async fn given_a_rotation_when_a_warm_instance_refreshes_then_old_tokens_verify_and_two_rotations_old_do_not()
 {
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let cfg = production();
    let secrets = load(&src, &clock).await;
    let sessions =
        Sessions::with_secrets(&cfg, secrets.clone(), Arc::new(clock.clone())).expect("sessions");
    let (before, session) = sessions.issue_session("u", 0).expect("token");
    let before = before.token;
    let csrf_before = sessions.issue_csrf(&session).token;

    src.rotate(JWT_ID, &key(2));
    src.rotate(CSRF_ID, &key(2));
    clock.advance_ms(300_000);
    secrets.refresh_if_due().await;
    assert_eq!(
        sessions
            .authenticate(&bearer(&before))
            .expect("old key verifies"),
        "u"
    );
    assert!(
        sessions.verify_csrf(&csrf_before, &session).is_ok(),
        "old CSRF key verifies"
    );
    let after = sessions.issue_access_token("u", 0).expect("token").token;
    assert_ne!(
        jsonwebtoken::decode_header(&before).expect("h").kid,
        jsonwebtoken::decode_header(&after).expect("h").kid,
        "new tokens are signed with the new key"
    );

    src.rotate(JWT_ID, &key(3));
    src.rotate(CSRF_ID, &key(3));
    clock.advance_ms(300_000);
    secrets.refresh_if_due().await;
    assert!(
        sessions.authenticate(&bearer(&after)).is_ok(),
        "one rotation old"
    );
    assert!(
        sessions.authenticate(&bearer(&before)).is_err(),
        "two rotations old verifies nothing"
    );
    assert!(sessions.verify_csrf(&csrf_before, &session).is_err());
}

#[tokio::test]
async fn given_an_instance_that_rotated_first_when_a_stale_one_meets_its_token_then_one_early_refresh_accepts_it()
 {
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let cfg = production();
    let stale = Sessions::with_secrets(&cfg, load(&src, &clock).await, Arc::new(clock.clone()))
        .expect("sessions");
    src.rotate(JWT_ID, &key(2));
    src.rotate(CSRF_ID, &key(2));
    let fresh = Sessions::with_secrets(&cfg, load(&src, &clock).await, Arc::new(clock.clone()))
        .expect("sessions");
    let token = fresh.issue_access_token("u", 0).expect("token").token;
    assert!(stale.authenticate(&bearer(&token)).is_err(), "unknown key");
    assert_eq!(
        stale
            .authenticate_fresh(&bearer(&token))
            .await
            .expect("refreshed")
            .sub,
        "u"
    );

    // Forged kids cannot turn into a flood of fetches: one forced refresh per interval.
    let reads = src.reads();
    let mut forged = bearer("eyJhbGciOiJIUzI1NiIsImtpZCI6ImZvcmdlZCJ9.e30.c2ln");
    for _ in 0..20 {
        assert!(stale.authenticate_fresh(&forged).await.is_err());
    }
    assert_eq!(
        src.reads(),
        reads,
        "the refresh above used this interval's turn"
    );
    clock.advance_ms(FORCED_REFRESH_INTERVAL.as_millis() as u64);
    for _ in 0..20 {
        assert!(stale.authenticate_fresh(&forged).await.is_err());
    }
    assert_eq!(src.reads(), reads + 5, "one refresh in the next interval");
    forged.clear();
}

#[tokio::test]
async fn given_secrets_manager_down_when_refreshing_then_values_in_use_are_kept_and_retried_later()
{
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let secrets = load(&src, &clock).await;
    src.set_failing(true);
    clock.advance_ms(300_000);
    secrets.refresh_if_due().await;
    let failed = src.reads();
    assert_eq!(
        secrets
            .snapshot()
            .get(Need::JwtKey)
            .expect("kept")
            .current
            .expose(),
        key(1)
    );
    clock.advance_ms(RETRY_AFTER_FAILURE.as_millis() as u64 - 1);
    secrets.refresh_if_due().await;
    assert_eq!(src.reads(), failed, "not before the retry delay");
    src.set_failing(false);
    src.rotate(JWT_ID, &key(2));
    clock.advance_ms(1);
    secrets.refresh_if_due().await;
    assert_eq!(
        secrets
            .snapshot()
            .get(Need::JwtKey)
            .expect("jwt")
            .current
            .expose(),
        key(2)
    );
}

#[tokio::test]
async fn given_a_missing_unreadable_or_weak_secret_when_loading_then_the_id_variable_is_named() {
    let clock = Arc::new(ManualClock::at_ms(T0));
    let needs = [Need::JwtKey, Need::CsrfKey];
    let empty = Arc::new(MemorySecrets::new());
    let err = Secrets::load(&production(), &needs, empty, clock.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JWT_SECRET_KEY_ID"), "{err}");

    let down = source();
    down.set_failing(true);
    let err = Secrets::load(&production(), &needs, down, clock.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JWT_SECRET_KEY_ID"), "{err}");

    let weak = source();
    weak.rotate(CSRF_ID, "dev-only-0123456789abcdef0123456789abcdef");
    let err = Secrets::load(&production(), &needs, weak, clock.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CSRF_SECRET_KEY_ID"), "{err}");
    assert!(
        !err.to_string().contains("dev-only-0123"),
        "never the value"
    );

    let no_id = config(&[
        ("ENVIRONMENT", "production"),
        ("CSRF_SECRET_KEY_ID", CSRF_ID),
    ])
    .expect("config");
    let err = Secrets::load(&no_id, &needs, source(), clock)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "JWT_SECRET_KEY_ID is required in production"
    );
}

#[test]
fn given_production_when_a_secret_value_or_local_endpoint_is_in_the_environment_then_start_is_refused()
 {
    for var in [
        "JWT_SECRET_KEY",
        "JWT_SECRET_KEY_PREVIOUS",
        "CSRF_SECRET_KEY",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "AI_API_KEY",
    ] {
        let err = config(&[("ENVIRONMENT", "staging"), (var, &key(9))]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{var} must not be set in staging")),
            "{err}"
        );
        assert!(!err.to_string().contains(&key(9)));
    }
    for var in crate::config::LOCAL_OVERRIDES {
        let err =
            config(&[("ENVIRONMENT", "production"), (var, "http://127.0.0.1:1")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{var} must not be set in production")),
            "{err}"
        );
        assert!(config(&[("ENVIRONMENT", "development"), (var, "http://127.0.0.1:1")]).is_ok());
    }
    let any = [("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:1")];
    let err = crate::config::check_overrides(any, Environment::Production).unwrap_err();
    assert!(err.to_string().contains("AWS_ENDPOINT_URL_SQS"));
    assert!(crate::config::check_overrides(any, Environment::Development).is_ok());
}

#[test]
fn given_no_environment_when_loading_then_start_is_refused_naming_it() {
    let err = config(&[("JWT_SECRET_KEY", "k"), ("CSRF_SECRET_KEY", "k")]).unwrap_err();
    assert!(
        err.to_string().starts_with("ENVIRONMENT is required"),
        "{err}"
    );
}

#[test]
fn given_log_levels_when_deployed_then_dependencies_never_go_below_info() {
    use crate::log::filter;
    assert_eq!(
        filter("trace", Environment::Development, &["login"]),
        "trace"
    );
    assert_eq!(filter("info", Environment::Production, &["login"]), "info");
    assert_eq!(filter("warn", Environment::Staging, &["login"]), "warn");
    assert_eq!(
        filter("trace", Environment::Production, &["login"]),
        "info,flowbotz_security=trace,login=trace"
    );
    assert_eq!(
        filter("debug", Environment::Staging, &["payment_intent"]),
        "info,flowbotz_security=debug,payment_intent=debug"
    );
    let err = config(&[
        ("ENVIRONMENT", "production"),
        ("LOG_LEVEL", "lambda_runtime=trace"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("LOG_LEVEL"), "{err}");
    assert!(
        config(&[
            ("ENVIRONMENT", "development"),
            ("LOG_LEVEL", "lambda_runtime=trace")
        ])
        .is_ok()
    );
}

#[tokio::test]
async fn given_one_unreadable_secret_when_refreshing_then_the_others_still_rotate() {
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let secrets = load(&src, &clock).await;
    src.rotate(JWT_ID, &key(2));
    src.rotate(WEBHOOK_ID, "dev-only-weak");
    clock.advance_ms(300_000);
    secrets.refresh_if_due().await;
    let snap = secrets.snapshot();
    assert_eq!(
        snap.get(Need::JwtKey).expect("jwt").current.expose(),
        key(2)
    );
    assert_eq!(
        snap.get(Need::StripeWebhookSecret)
            .expect("kept")
            .current
            .expose(),
        "whsec_0123456789abcdef0123456789abcdef",
        "the refused value is not installed"
    );
}

#[tokio::test]
async fn given_refreshes_failing_longer_than_four_ttls_when_checked_then_the_secrets_are_expired_until_one_succeeds()
 {
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let secrets = load(&src, &clock).await;
    assert_eq!(secrets.max_staleness(), Duration::from_secs(1200));
    src.set_failing(true);
    clock.advance_ms(300_000);
    secrets.refresh_if_due().await;
    assert!(!secrets.expired(), "a failure starts the clock");
    for _ in 0..40 {
        clock.advance_ms(RETRY_AFTER_FAILURE.as_millis() as u64);
        secrets.refresh_if_due().await;
    }
    assert!(!secrets.expired(), "exactly 20 minutes of failures");
    clock.advance_ms(RETRY_AFTER_FAILURE.as_millis() as u64);
    secrets.refresh_if_due().await;
    assert!(secrets.expired(), "over 20 minutes of failures");
    src.set_failing(false);
    clock.advance_ms(RETRY_AFTER_FAILURE.as_millis() as u64);
    secrets.refresh_if_due().await;
    assert!(!secrets.expired());
}

#[test]
fn given_a_webhook_secret_list_with_one_weak_part_when_loading_then_refused() {
    let src = source();
    src.rotate(
        WEBHOOK_ID,
        "whsec_0123456789abcdef0123456789abcdef,whsec_short",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let err = rt
        .block_on(Secrets::load(
            &production(),
            &[Need::StripeWebhookSecret],
            src,
            Arc::new(ManualClock::at_ms(T0)),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("STRIPE_WEBHOOK_SECRET_ID"),
        "{err}"
    );
}

#[tokio::test]
async fn given_expired_secrets_when_a_request_arrives_then_the_pipeline_answers_503() {
    use crate::guard::BodyKind;
    use crate::pipeline::{Ctx, Endpoint, Handler, HandlerResult, Pipeline, json};
    use http::Method;
    use lambda_http::{Body, Request};

    struct Ok200;
    impl Handler for Ok200 {
        async fn handle(&self, _req: Request, _ctx: &mut Ctx) -> HandlerResult {
            Ok(json(http::StatusCode::OK, &serde_json::json!({})))
        }
    }
    const HOOK: Endpoint = Endpoint {
        body: BodyKind::None,
        body_bytes: 0,
        ip_block: true,
        ..crate::catalogue::EndpointId::Webhook.endpoint()
    };
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let secrets = load(&src, &clock).await;
    let pipeline = Pipeline::new(HOOK, Arc::new(production())).with_secrets(secrets.clone());
    let post = || {
        http::Request::builder()
            .method(Method::POST)
            .uri("/api/payments/webhook")
            .body(Body::Empty)
            .expect("request")
    };
    assert_eq!(pipeline.serve(post(), &Ok200).await.status(), 200);
    src.set_failing(true);
    clock.advance_ms(300_000);
    secrets.refresh_if_due().await;
    clock.advance_ms(secrets.max_staleness().as_millis() as u64 + 1);
    assert_eq!(pipeline.serve(post(), &Ok200).await.status(), 503);
    src.set_failing(false);
    clock.advance_ms(RETRY_AFTER_FAILURE.as_millis() as u64);
    assert_eq!(
        pipeline.serve(post(), &Ok200).await.status(),
        200,
        "recovers"
    );
}

#[tokio::test]
async fn given_a_csrf_token_from_an_instance_that_rotated_first_when_a_stale_one_checks_it_then_one_early_refresh_accepts_it()
 {
    let src = source();
    let clock = ManualClock::at_ms(T0);
    let cfg = production();
    let stale = Sessions::with_secrets(&cfg, load(&src, &clock).await, Arc::new(clock.clone()))
        .expect("sessions");
    src.rotate(JWT_ID, &key(2));
    src.rotate(CSRF_ID, &key(2));
    let fresh = Sessions::with_secrets(&cfg, load(&src, &clock).await, Arc::new(clock.clone()))
        .expect("sessions");
    let (_, session) = fresh.issue_session("u", 0).expect("token");
    let token = fresh.issue_csrf(&session).token;
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-csrf-token",
        HeaderValue::from_str(&token).expect("header"),
    );
    let cors = crate::cors::Cors::new(&[], &[http::Method::POST]);
    assert!(
        stale.check_csrf(&headers, &session, &cors).is_err(),
        "unknown key"
    );
    assert!(
        stale
            .check_csrf_fresh(&headers, &session, &cors)
            .await
            .is_ok(),
        "accepted after one early refresh"
    );
}

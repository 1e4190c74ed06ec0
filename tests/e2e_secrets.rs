//! Secrets against moto's Secrets Manager (started by `make test`): the run-time fetch and the
//! four rotation steps of the JWT and CSRF keys, driven one by one, with tokens signed before a
//! rotation verified after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use flowbotz_security::Config;
use flowbotz_security::Environment;
use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::secrets::Secrets;
use flowbotz_security::secrets::aws::{self, SecretsManager};
use flowbotz_security::secrets::rotation::{RotationError, RotationEvent, Step, rotate};
use flowbotz_security::session::Sessions;
use http::HeaderMap;

async fn client() -> Client {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER").is_ok(),
        "make test points AWS_ENDPOINT_URL_SECRETS_MANAGER at the stack's moto"
    );
    aws::client(Duration::from_secs(5)).await
}

fn unique(label: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("flowbotz/test/{label}-{n:x}-{}", std::process::id())
}

async fn create(client: &Client, label: &str) -> String {
    let name = unique(label);
    client
        .create_secret()
        .name(&name)
        .secret_string(format!("initial-{}", "x".repeat(40)))
        .send()
        .await
        .expect("create secret");
    name
}

async fn stages(client: &Client, id: &str) -> HashMap<String, Vec<String>> {
    client
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .expect("describe")
        .version_ids_to_stages
        .unwrap_or_default()
}

async fn value(client: &Client, id: &str, stage: &str) -> Option<String> {
    client
        .get_secret_value()
        .secret_id(id)
        .version_stage(stage)
        .send()
        .await
        .ok()
        .and_then(|o| o.secret_string)
}

fn event(id: &str, token: &str, step: Step) -> RotationEvent {
    RotationEvent {
        secret_id: id.into(),
        token: token.into(),
        step,
    }
}

async fn rotate_fully(client: &Client, id: &str, env: Environment) -> String {
    let token = format!("token-{}", unique("t").replace('/', "-"));
    for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
        rotate(client, &event(id, &token, step), env)
            .await
            .unwrap_or_else(|e| panic!("{step:?}: {e}"));
    }
    token
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    h
}

async fn sessions_on(jwt: &str, csrf: &str) -> (Sessions, Secrets) {
    let vars: HashMap<&str, String> = HashMap::from([
        ("ENVIRONMENT", "production".to_string()),
        ("JWT_SECRET_KEY_ID", jwt.to_string()),
        ("CSRF_SECRET_KEY_ID", csrf.to_string()),
    ]);
    let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
    let source = Arc::new(SecretsManager::new(client().await));
    let secrets = Secrets::load(
        &config,
        &[Need::JwtKey, Need::CsrfKey],
        source,
        Arc::new(SystemClock),
    )
    .await
    .expect("secrets from moto");
    let sessions =
        Sessions::with_secrets(&config, secrets.clone(), Arc::new(SystemClock)).expect("sessions");
    (sessions, secrets)
}

#[tokio::test]
async fn given_each_rotation_step_when_driven_against_secrets_manager_then_versions_move_as_documented()
 {
    let client = client().await;
    let env = Environment::Production;
    let id = create(&client, "steps").await;
    let original = value(&client, &id, "AWSCURRENT").await.expect("current");
    let token = "token-steps-0000000000000000000000000001";

    // setSecret, testSecret and finishSecret refuse a token that was never created.
    for step in [Step::Set, Step::Test, Step::Finish] {
        assert!(matches!(
            rotate(&client, &event(&id, token, step), env).await,
            Err(RotationError::NotPending { .. })
        ));
    }

    rotate(&client, &event(&id, token, Step::Create), env)
        .await
        .expect("createSecret");
    let pending = value(&client, &id, "AWSPENDING")
        .await
        .expect("pending value");
    assert_eq!(pending.len(), 64);
    assert!(pending.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        value(&client, &id, "AWSCURRENT").await.as_deref(),
        Some(original.as_str())
    );
    rotate(&client, &event(&id, token, Step::Create), env)
        .await
        .expect("a retried createSecret");
    assert_eq!(
        value(&client, &id, "AWSPENDING").await.as_deref(),
        Some(pending.as_str()),
        "a retried step changes nothing"
    );

    rotate(&client, &event(&id, token, Step::Set), env)
        .await
        .expect("setSecret");
    rotate(&client, &event(&id, token, Step::Test), env)
        .await
        .expect("testSecret");
    rotate(&client, &event(&id, token, Step::Finish), env)
        .await
        .expect("finishSecret");
    assert_eq!(
        value(&client, &id, "AWSCURRENT").await.as_deref(),
        Some(pending.as_str())
    );
    assert_eq!(
        value(&client, &id, "AWSPREVIOUS").await.as_deref(),
        Some(original.as_str())
    );
    assert!(stages(&client, &id).await[token].contains(&"AWSCURRENT".to_string()));
    rotate(&client, &event(&id, token, Step::Finish), env)
        .await
        .expect("a finished rotation answers every step");
}

#[tokio::test]
async fn given_a_weak_pending_value_when_tested_then_the_rotation_stops_before_finish() {
    let client = client().await;
    let id = create(&client, "weak").await;
    let token = "token-weak-00000000000000000000000000001";
    client
        .put_secret_value()
        .secret_id(&id)
        .client_request_token(token)
        .secret_string("dev-only-0123456789abcdef0123456789abcdef")
        .version_stages("AWSPENDING")
        .send()
        .await
        .expect("put");
    let err = rotate(
        &client,
        &event(&id, token, Step::Test),
        Environment::Production,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RotationError::Weak { .. }), "{err}");
    assert!(
        !err.to_string().contains("0123456789abcdef"),
        "never the value"
    );
}

#[tokio::test]
async fn given_tokens_signed_before_a_rotation_when_verified_after_it_then_they_hold_and_two_rotations_old_do_not()
 {
    let client = client().await;
    let env = Environment::Production;
    let jwt = create(&client, "jwt").await;
    let csrf = create(&client, "csrf").await;
    let (sessions, secrets) = sessions_on(&jwt, &csrf).await;
    let (before, session) = sessions.issue_session("user-1", 0).expect("token");
    let before = before.token;
    let csrf_before = sessions.issue_csrf(&session).token;

    rotate_fully(&client, &jwt, env).await;
    rotate_fully(&client, &csrf, env).await;
    // A warm instance picks the new keys up at its next refresh (the TTL, or an early refresh
    // when it meets a token signed with a key it does not know).
    assert!(secrets.refresh_now().await, "new values fetched");
    assert_eq!(
        sessions
            .authenticate(&bearer(&before))
            .expect("still valid"),
        "user-1"
    );
    assert!(sessions.verify_csrf(&csrf_before, &session).is_ok());
    let after = sessions
        .issue_access_token("user-1", 0)
        .expect("token")
        .token;

    // An instance started after the rotation verifies what the old key signed, too.
    let (fresh, _) = sessions_on(&jwt, &csrf).await;
    assert!(fresh.authenticate(&bearer(&before)).is_ok());
    assert!(fresh.authenticate(&bearer(&after)).is_ok());

    rotate_fully(&client, &jwt, env).await;
    rotate_fully(&client, &csrf, env).await;
    let (later, _) = sessions_on(&jwt, &csrf).await;
    assert!(
        later.authenticate(&bearer(&after)).is_ok(),
        "one rotation old"
    );
    assert!(
        later.authenticate(&bearer(&before)).is_err(),
        "two rotations old verifies nothing"
    );
    assert!(later.verify_csrf(&csrf_before, &session).is_err());
}

//! `POST /api/auth/password`: changes the caller's password; every other session ends.

mod handler;

use std::sync::Arc;

use flowbotz_security::accounts::dynamodb::DynamoUserStore;
use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::revocation::dynamodb::DynamoSessionStore;
use flowbotz_security::session::Sessions;
use flowbotz_security::{Pipeline, runtime};

const NEEDS: &[Need] = &[Need::JwtKey, Need::CsrfKey];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), NEEDS)?);
    let clock = Arc::new(SystemClock);
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let users = Arc::new(DynamoUserStore::new(client.clone(), &config.tables.users));
    let sessions = Sessions::with_secrets(&config, secrets.clone(), clock.clone())?;
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_session_store(Arc::new(DynamoSessionStore::new(
            client.clone(),
            &config.tables.users,
        )))
        .with_limiter(runtime::limiter(&config, client))
        .with_secrets(secrets)
        .with_sessions(sessions);
    runtime::run(
        pipeline,
        handler::ChangePassword::new(users, clock, config.login_throttle, config.password),
    )
    .await
}

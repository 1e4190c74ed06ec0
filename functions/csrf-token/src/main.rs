//! `GET /api/auth/csrf-token`: a fresh CSRF token for the caller's session.

mod handler;

use std::sync::Arc;

use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::revocation::dynamodb::DynamoSessionStore;
use flowbotz_security::session::Sessions;
use flowbotz_security::{Pipeline, runtime};

const NEEDS: &[Need] = &[Need::JwtKey, Need::CsrfKey];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), NEEDS)?);
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let sessions = Sessions::with_secrets(&config, secrets.clone(), Arc::new(SystemClock))?;
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_session_store(Arc::new(DynamoSessionStore::new(
            client.clone(),
            &config.tables.users,
        )))
        .with_limiter(runtime::limiter(&config, client))
        .with_secrets(secrets)
        .with_sessions(sessions.clone());
    runtime::run(pipeline, handler::CsrfToken { sessions }).await
}

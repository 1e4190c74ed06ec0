//! `DELETE /api/account`: erases the caller's account and what is stored about it.

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
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let users = Arc::new(DynamoUserStore::new(client.clone(), &config.tables.users));
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_session_store(Arc::new(DynamoSessionStore::new(
            client.clone(),
            &config.tables.users,
        )))
        .with_limiter(runtime::limiter(&config, client))
        .with_sessions(Sessions::with_secrets(
            &config,
            secrets.clone(),
            Arc::new(SystemClock),
        )?)
        .with_secrets(secrets);
    runtime::run(pipeline, handler::Account { users }).await
}

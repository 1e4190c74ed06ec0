//! `POST /api/auth/logout` and `POST /api/auth/logout-all`: one function for the two ways of
//! ending sessions (the same store, the same pipeline apart from the route).

mod handler;

use std::sync::Arc;

use flowbotz_security::accounts::dynamodb::DynamoUserStore;
use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::revocation::dynamodb::DynamoSessionStore;
use flowbotz_security::session::Sessions;
use flowbotz_security::{EndpointId, Pipeline, runtime};

const NEEDS: &[Need] = &[Need::JwtKey, Need::CsrfKey];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), NEEDS)?);
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let users = Arc::new(DynamoUserStore::new(client.clone(), &config.tables.users));
    let sessions = Sessions::with_secrets(&config, secrets.clone(), Arc::new(SystemClock))?;
    let live = Arc::new(DynamoSessionStore::new(
        client.clone(),
        &config.tables.users,
    ));
    let limiter = runtime::limiter(&config, client);
    let pipeline = |id: EndpointId| {
        Pipeline::new(id.endpoint(), config.clone())
            .with_session_store(live.clone())
            .with_limiter(limiter.clone())
            .with_secrets(secrets.clone())
            .with_sessions(sessions.clone())
    };
    runtime::run_pair(
        (
            pipeline(EndpointId::Logout),
            handler::Logout::new(users.clone()),
        ),
        (
            pipeline(EndpointId::LogoutAll),
            handler::LogoutAll::new(users),
        ),
    )
    .await
}

//! `POST /api/auth/password-reset` and `POST /api/auth/password-reset/confirm`: one function for
//! the two steps of one flow (the same table items, the same mail and token code).

mod handler;

use std::sync::Arc;

use flowbotz_security::accounts::dynamodb::DynamoUserStore;
use flowbotz_security::accounts::tokens::dynamodb::DynamoTokenStore;
use flowbotz_security::clock::SystemClock;
use flowbotz_security::store::dynamodb;
use flowbotz_security::{EndpointId, Pipeline, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), &[])?);
    let (client, mail) = tokio::join!(
        dynamodb::client(config.store_timeout),
        runtime::mailer(&config)
    );
    let (mailer, links) = mail?;
    let users = Arc::new(DynamoUserStore::new(client.clone(), &config.tables.users));
    let tokens = Arc::new(DynamoTokenStore::new(client.clone(), &config.tables.users));
    let clock = Arc::new(SystemClock);
    let limiter = runtime::limiter(&config, client);
    let request = Pipeline::new(EndpointId::PasswordReset.endpoint(), config.clone())
        .with_limiter(limiter.clone());
    let confirm = Pipeline::new(EndpointId::PasswordResetConfirm.endpoint(), config.clone())
        .with_limiter(limiter);
    runtime::run_pair(
        (
            request,
            handler::RequestReset::new(users.clone(), tokens.clone(), mailer, links, clock.clone()),
        ),
        (
            confirm,
            handler::ConfirmReset::new(users, tokens, clock, config.password),
        ),
    )
    .await
}

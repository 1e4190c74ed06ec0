//! `POST /api/auth/verify-email`: proves the mailbox and the registration's password together,
//! and only then creates the account.

mod handler;

use std::sync::Arc;

use flowbotz_security::accounts::dynamodb::DynamoUserStore;
use flowbotz_security::accounts::tokens::dynamodb::DynamoTokenStore;
use flowbotz_security::clock::SystemClock;
use flowbotz_security::store::dynamodb;
use flowbotz_security::{Pipeline, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), &[])?);
    let client = dynamodb::client(config.store_timeout).await;
    let users = Arc::new(DynamoUserStore::new(client.clone(), &config.tables.users));
    let tokens = Arc::new(DynamoTokenStore::new(client.clone(), &config.tables.users));
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client));
    runtime::run(
        pipeline,
        handler::VerifyEmail::new(users, tokens, Arc::new(SystemClock)),
    )
    .await
}

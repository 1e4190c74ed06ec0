//! `POST /api/auth/register`: records a pending registration and mails its verification link
//! (or, for an email that has an account, a "you already have an account" mail); the same 202
//! either way.

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
    let (client, mail) = tokio::join!(
        dynamodb::client(config.store_timeout),
        runtime::mailer(&config)
    );
    let (mailer, links) = mail?;
    let users = Arc::new(DynamoUserStore::new(client.clone(), &config.tables.users));
    let tokens = Arc::new(DynamoTokenStore::new(client.clone(), &config.tables.users));
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client));
    runtime::run(
        pipeline,
        handler::Register::new(
            users,
            tokens,
            mailer,
            links,
            Arc::new(SystemClock),
            config.password,
        ),
    )
    .await
}

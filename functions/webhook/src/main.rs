//! `POST /api/payments/webhook`: verified, exactly-once Stripe events.

mod handler;

use std::sync::Arc;

use flowbotz_security::clock::SystemClock;
use flowbotz_security::payments::dynamodb::DynamoLedger;
use flowbotz_security::store::dynamodb;
use flowbotz_security::{Pipeline, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(&[])?);
    let settings = handler::Settings::from_env(config.environment)?;
    let client = dynamodb::client(config.store_timeout).await;
    let ledger = Arc::new(DynamoLedger::new(client.clone(), &config.tables.payments));
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client));
    runtime::run(
        pipeline,
        handler::Webhook::new(ledger, Arc::new(SystemClock), settings),
    )
    .await
}

//! `POST /api/payments/webhook`: verified, exactly-once Stripe events.

mod handler;

use std::sync::Arc;

use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::payments::dynamodb::DynamoLedger;
use flowbotz_security::{Pipeline, runtime};

const NEEDS: &[Need] = &[Need::StripeWebhookSecret];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), NEEDS)?);
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let settings = handler::Settings::from_env(secrets.clone())?;
    let ledger = Arc::new(DynamoLedger::new(client.clone(), &config.tables.payments));
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client))
        .with_secrets(secrets);
    runtime::run(
        pipeline,
        handler::Webhook::new(ledger, Arc::new(SystemClock), settings),
    )
    .await
}

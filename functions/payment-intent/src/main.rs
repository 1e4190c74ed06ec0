//! `POST /api/payments/create-payment-intent`: a validated Stripe PaymentIntent for the caller.

mod customer;
mod handler;
mod provider;

use std::sync::Arc;

use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::payments::customers::dynamodb::DynamoCustomers;
use flowbotz_security::session::Sessions;
use flowbotz_security::store::dynamodb;
use flowbotz_security::{Pipeline, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(&[Need::JwtKey, Need::CsrfKey])?);
    let settings = provider::Settings::from_env(config.environment)?;
    let stripe = provider::StripeIntents::new(&settings)?;
    let client = dynamodb::client(config.store_timeout).await;
    let owners = Arc::new(DynamoCustomers::new(client.clone(), &config.tables.users));
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client))
        .with_sessions(Sessions::new(&config, Arc::new(SystemClock))?);
    let handler = handler::PaymentIntent::new(
        stripe.map(Arc::new).map(|s| handler::Stripe {
            intents: s.clone(),
            customers: s,
        }),
        owners,
        Arc::new(SystemClock),
        settings,
    );
    runtime::run(pipeline, handler).await
}

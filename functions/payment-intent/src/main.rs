//! `POST /api/payments/create-payment-intent`: a validated Stripe PaymentIntent for the caller.

mod customer;
mod handler;
mod provider;

use std::sync::Arc;

use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::payments::customers::dynamodb::DynamoCustomers;
use flowbotz_security::payments::dynamodb::DynamoLedger;
use flowbotz_security::revocation::dynamodb::DynamoSessionStore;
use flowbotz_security::session::Sessions;
use flowbotz_security::{Pipeline, runtime};

const NEEDS: &[Need] = &[Need::JwtKey, Need::CsrfKey, Need::StripeSecretKey];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), NEEDS)?);
    let settings = provider::Settings::from_env(config.environment)?;
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let stripe = provider::StripeIntents::new(&settings, &secrets)?;
    let owners = Arc::new(DynamoCustomers::new(client.clone(), &config.tables.users));
    let payments = Arc::new(DynamoLedger::new(client.clone(), &config.tables.payments));
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
    let handler = handler::PaymentIntent::new(
        stripe.map(Arc::new).map(|s| handler::Stripe {
            intents: s.clone(),
            customers: s,
        }),
        owners,
        payments,
        Arc::new(SystemClock),
        settings,
    );
    runtime::run(pipeline, handler).await
}

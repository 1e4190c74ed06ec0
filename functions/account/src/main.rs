//! `DELETE /api/account`: erases the caller's account and what is stored about it: payment
//! records pseudonymised, the Stripe customer deleted (or its deletion recorded and retried).

mod handler;
mod stripe_customers;

use std::sync::Arc;

use flowbotz_security::accounts::dynamodb::DynamoUserStore;
use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::payments::customers::dynamodb::DynamoCustomers;
use flowbotz_security::payments::dynamodb::DynamoLedger;
use flowbotz_security::payments::stripe::StripeSettings;
use flowbotz_security::revocation::dynamodb::DynamoSessionStore;
use flowbotz_security::session::Sessions;
use flowbotz_security::{Pipeline, runtime};

const NEEDS: &[Need] = &[Need::JwtKey, Need::CsrfKey, Need::StripeSecretKey];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), NEEDS)?);
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let users = Arc::new(DynamoUserStore::new(client.clone(), &config.tables.users));
    let owners = Arc::new(DynamoCustomers::new(client.clone(), &config.tables.users));
    let payments = Arc::new(DynamoLedger::new(client.clone(), &config.tables.payments));
    let stripe = stripe_customers::StripeCustomers::new(
        StripeSettings::from_env(config.environment)?,
        &secrets,
    )?;
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
    let handler = handler::Account {
        users,
        owners,
        payments,
        stripe: stripe.map(|s| Arc::new(s) as _),
        clock: Arc::new(SystemClock),
    };
    runtime::run(pipeline, handler).await
}

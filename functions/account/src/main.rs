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
use flowbotz_security::session::Sessions;
use flowbotz_security::store::dynamodb;
use flowbotz_security::{Pipeline, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(&[Need::JwtKey, Need::CsrfKey])?);
    let client = dynamodb::client(config.store_timeout).await;
    let users = Arc::new(DynamoUserStore::new(client.clone(), &config.tables.users));
    let owners = Arc::new(DynamoCustomers::new(client.clone(), &config.tables.users));
    let payments = Arc::new(DynamoLedger::new(client.clone(), &config.tables.payments));
    let stripe_settings = stripe_customers::Settings::from_env(config.environment)?;
    let stripe = stripe_customers::StripeCustomers::new(&stripe_settings)?;
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client))
        .with_sessions(Sessions::new(&config, Arc::new(SystemClock))?);
    let handler = handler::Account {
        users,
        owners,
        payments,
        stripe: stripe.map(|s| Arc::new(s) as _),
        clock: Arc::new(SystemClock),
    };
    runtime::run(pipeline, handler).await
}

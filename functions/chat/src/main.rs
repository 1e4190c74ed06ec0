//! `POST /api/ai/chat`: an authenticated, CSRF-protected proxy to an OpenAI-compatible provider.

mod config;
mod handler;
mod provider;

use flowbotz_security::Event;
use std::sync::Arc;

use flowbotz_security::budget::dynamodb::DynamoBudgetStore;
use flowbotz_security::budget::{Budget, BudgetPolicy};
use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::revocation::dynamodb::DynamoSessionStore;
use flowbotz_security::session::Sessions;
use flowbotz_security::{Pipeline, runtime};

const NEEDS: &[Need] = &[Need::JwtKey, Need::CsrfKey, Need::AiApiKey];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), NEEDS)?);
    let ai = config::AiConfig::from_env(config.environment).inspect_err(|err| {
        tracing::error!(event = Event::StartupFailed.as_str(), error = %err, "configuration refused");
    })?;
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let provider = provider::from_config(&ai, &secrets)?;
    let budget = Budget::new(
        Arc::new(DynamoBudgetStore::new(
            client.clone(),
            &config.tables.rate_limits,
        )),
        Arc::new(SystemClock),
        BudgetPolicy {
            per_account: ai.daily_tokens_per_account,
            service: ai.daily_tokens_service,
            per_network: ai.daily_tokens_per_network,
        },
    );
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
    runtime::run(pipeline, handler::Chat::new(provider, (&ai).into(), budget)).await
}

//! `POST /api/ai/chat`: an authenticated, CSRF-protected proxy to an OpenAI-compatible provider.

mod config;
mod handler;
mod provider;

use std::sync::Arc;

use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::session::Sessions;
use flowbotz_security::store::dynamodb;
use flowbotz_security::{Pipeline, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(&[Need::JwtKey, Need::CsrfKey])?);
    let ai = config::AiConfig::from_env(config.environment).inspect_err(|err| {
        tracing::error!(event = "startup.failed", error = %err, "configuration refused");
    })?;
    let provider = provider::from_config(&ai)?;
    let client = dynamodb::client(config.store_timeout).await;
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client))
        .with_sessions(Sessions::new(&config, Arc::new(SystemClock))?);
    runtime::run(pipeline, handler::Chat::new(provider, (&ai).into())).await
}

//! `POST /api/ai/chat`: an authenticated, CSRF-protected proxy to an OpenAI-compatible provider.

mod config;
mod handler;
mod provider;

use std::sync::Arc;

use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::Need;
use flowbotz_security::session::Sessions;
use flowbotz_security::{Pipeline, runtime};

const NEEDS: &[Need] = &[Need::JwtKey, Need::CsrfKey, Need::AiApiKey];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), NEEDS)?);
    let ai = config::AiConfig::from_env(config.environment).inspect_err(|err| {
        tracing::error!(event = "startup.failed", error = %err, "configuration refused");
    })?;
    let (secrets, client) = runtime::clients(&config, NEEDS).await?;
    let provider = provider::from_config(&ai, &secrets)?;
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client))
        .with_sessions(Sessions::with_secrets(
            &config,
            secrets.clone(),
            Arc::new(SystemClock),
        )?)
        .with_secrets(secrets);
    runtime::run(pipeline, handler::Chat::new(provider, (&ai).into())).await
}

//! Wiring for a function's `main`: the DynamoDB-backed rate limiter and the Lambda loop.

use crate::events::Event;
use std::convert::Infallible;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use lambda_http::{Request, service_fn};

use crate::clock::SystemClock;
use crate::config::Config;
#[cfg(feature = "secrets")]
use crate::config::{ConfigError, Need, SecretOrigin};
use crate::pipeline::{Handler, Pipeline};
use crate::ratelimit::RateLimiter;
#[cfg(feature = "secrets")]
use crate::secrets::Secrets;
use crate::store::dynamodb::DynamoRateLimitStore;

/// The rate limiter on the configured table, covering every configured endpoint's policy.
pub fn limiter(config: &Config, client: Client) -> Arc<RateLimiter> {
    let store = DynamoRateLimitStore::new(client, config.tables.rate_limits.clone());
    Arc::new(RateLimiter::new(
        Arc::new(store),
        Arc::new(SystemClock),
        config.block,
        config.endpoints.keys().copied(),
        config.store_timeout,
    ))
}

/// The mailer of a function that sends account mail, and the links it puts in them:
/// SES v2 from `MAIL_FROM`, links under `APP_BASE_URL` (both required outside development).
#[cfg(feature = "mail")]
pub async fn mailer(
    config: &Config,
) -> Result<(Arc<dyn crate::mail::Mailer>, crate::mail::Links), ConfigError> {
    let settings = config.mail().inspect_err(|err| {
        tracing::error!(event = Event::StartupFailed.as_str(), error = %err, "mail settings refused");
    })?;
    let client = crate::mail::ses::client(config.store_timeout.max(MAIL_TIMEOUT)).await;
    Ok((
        Arc::new(crate::mail::ses::SesMailer::new(client, settings.from)),
        crate::mail::Links::new(&settings.app_base_url),
    ))
}

/// The bound on one SES call: long enough for SES, short enough that a register or reset
/// request still answers well inside API Gateway's limit.
#[cfg(feature = "mail")]
const MAIL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves Lambda invocations of a function with two endpoints (a tight family such as the two
/// reset steps): a request addressed to `second`'s route goes through it, every other request
/// through `first` (which answers 404 for a route it does not serve).
pub async fn run_pair<A: Handler + 'static, B: Handler + 'static>(
    first: (Pipeline, A),
    second: (Pipeline, B),
) -> Result<(), lambda_http::Error> {
    let first = Arc::new(first);
    let second = Arc::new(second);
    lambda_http::run(service_fn(move |req: Request| {
        let first = Arc::clone(&first);
        let second = Arc::clone(&second);
        async move {
            let resp = if second.0.serves(&req) {
                second.0.serve(req, &second.1).await
            } else {
                first.0.serve(req, &first.1).await
            };
            Ok::<_, Infallible>(resp)
        }
    }))
    .await
}

/// Serves Lambda invocations through `pipeline` and `handler` until the runtime stops.
pub async fn run<H: Handler + 'static>(
    pipeline: Pipeline,
    handler: H,
) -> Result<(), lambda_http::Error> {
    let pipeline = Arc::new(pipeline);
    let handler = Arc::new(handler);
    lambda_http::run(service_fn(move |req: Request| {
        let pipeline = Arc::clone(&pipeline);
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(pipeline.serve(req, handler.as_ref()).await) }
    }))
    .await
}

/// Loads the secrets in `needs` from AWS Secrets Manager (those `config` names by id) with the
/// configured TTL; fails, naming the variable, as [`Secrets::load`] does. Call it during init
/// beside the other clients' construction (`tokio::join!`).
#[cfg(feature = "secrets")]
pub async fn secrets(config: &Config, needs: &[Need]) -> Result<Secrets, ConfigError> {
    let named = |n: &Need| matches!(config.secrets.get(n), Some(SecretOrigin::Id(_)));
    if !needs.iter().any(named) {
        config.require(needs)?;
        return Ok(Secrets::from_config(config));
    }
    let client = crate::secrets::aws::client(config.store_timeout.max(SECRETS_TIMEOUT)).await;
    let source = Arc::new(crate::secrets::aws::SecretsManager::new(client));
    Secrets::load(config, needs, source, Arc::new(SystemClock))
        .await
        .inspect_err(|err| {
            tracing::error!(event = Event::StartupFailed.as_str(), error = %err, "secrets refused");
        })
}

/// The least bound on each Secrets Manager call.
#[cfg(feature = "secrets")]
const SECRETS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The secrets in `needs` and a DynamoDB client, built concurrently during init.
#[cfg(feature = "secrets")]
pub async fn clients(config: &Config, needs: &[Need]) -> Result<(Secrets, Client), ConfigError> {
    let (secrets, client) = tokio::join!(
        secrets(config, needs),
        crate::store::dynamodb::client(config.store_timeout)
    );
    Ok((secrets?, client))
}

//! Wiring for a function's `main`: the DynamoDB-backed rate limiter and the Lambda loop.

use std::convert::Infallible;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use lambda_http::{Request, service_fn};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::pipeline::{Handler, Pipeline};
use crate::ratelimit::RateLimiter;
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

//! `GET /api/health`: liveness and the deployed environment and version.

mod handler;

use std::sync::Arc;

use flowbotz_security::store::dynamodb;
use flowbotz_security::{Pipeline, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Arc::new(flowbotz_security::start(env!("CARGO_CRATE_NAME"), &[])?);
    let client = dynamodb::client(config.store_timeout).await;
    let pipeline = Pipeline::new(handler::ENDPOINT, config.clone())
        .with_limiter(runtime::limiter(&config, client));
    runtime::run(pipeline, handler::Health::new(&config)).await
}

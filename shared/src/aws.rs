//! Settings shared by the AWS SDK clients (DynamoDB, Secrets Manager): bounded calls with one
//! retry, region and credentials from Lambda's variables, and a local endpoint in development.

use std::time::Duration;

use aws_config::Region;
use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::meta::region::ProvideRegion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

/// Every operation within `timeout`, each attempt and the connection within half of it.
pub(crate) fn timeouts(timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(timeout / 2)
        .operation_attempt_timeout(timeout / 2)
        .operation_timeout(timeout)
        .build()
}

/// At most one retry, so a slow or unreachable service fails fast.
pub(crate) fn retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(2)
}

/// The region from `AWS_REGION`.
pub(crate) async fn region() -> Option<Region> {
    EnvironmentVariableRegionProvider::new().region().await
}

/// Credentials from the execution role's variables.
pub(crate) fn credentials() -> EnvironmentVariableCredentialsProvider {
    EnvironmentVariableCredentialsProvider::new()
}

/// `service_var` (such as `AWS_ENDPOINT_URL_DYNAMODB`), else `AWS_ENDPOINT_URL`: a local
/// endpoint, refused outside development by [`crate::config::Config::from_env`].
pub(crate) fn endpoint(service_var: &str) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    var(service_var).or_else(|| var("AWS_ENDPOINT_URL"))
}

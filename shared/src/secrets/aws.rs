//! AWS Secrets Manager as the [`SecretSource`], and its client.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::BehaviorVersion;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use super::{SecretError, SecretSource, Stage};

/// A Secrets Manager client from the environment, each call bounded by `timeout` with one
/// retry. Region and credentials come from Lambda's variables through `aws-config`'s
/// environment providers (as for [`crate::store::dynamodb::client`]);
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER` (else `AWS_ENDPOINT_URL`) points it at a local server in
/// development ([`crate::config::Config::from_env`] refuses both elsewhere).
pub async fn client(timeout: Duration) -> Client {
    let mut config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(crate::aws::region().await)
        .credentials_provider(crate::aws::credentials())
        .timeout_config(crate::aws::timeouts(timeout))
        .retry_config(crate::aws::retries());
    if let Some(url) = crate::aws::endpoint("AWS_ENDPOINT_URL_SECRETS_MANAGER") {
        config = config.endpoint_url(url);
    }
    Client::from_conf(config.build())
}

/// Secrets read from AWS Secrets Manager with `GetSecretValue`.
#[derive(Debug, Clone)]
pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    /// The source on `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl SecretSource for SecretsManager {
    async fn fetch(&self, id: &str, stage: Stage) -> Result<Option<String>, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .version_stage(stage.label())
            .send()
            .await;
        match out {
            Ok(out) => match out.secret_string {
                Some(value) => Ok(Some(value)),
                None => Err(SecretError::NotAString { id: id.to_string() }),
            },
            Err(SdkError::ServiceError(e))
                if e.err().code() == Some("ResourceNotFoundException") =>
            {
                match stage {
                    Stage::Previous => Ok(None),
                    Stage::Current => Err(SecretError::NotFound { id: id.to_string() }),
                }
            }
            Err(e) => Err(SecretError::Unavailable {
                id: id.to_string(),
                reason: e
                    .code()
                    .map(str::to_string)
                    .unwrap_or_else(|| sdk_kind(&e).into()),
            }),
        }
    }
}

fn sdk_kind<E, R>(e: &SdkError<E, R>) -> &'static str {
    match e {
        SdkError::TimeoutError(_) => "timeout",
        SdkError::DispatchFailure(_) => "unreachable",
        SdkError::ResponseError(_) => "unreadable response",
        SdkError::ConstructionFailure(_) => "request not built",
        _ => "service error",
    }
}

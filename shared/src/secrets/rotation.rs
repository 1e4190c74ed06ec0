//! Automatic rotation of a generated key (the JWT and CSRF keys) through Secrets Manager's
//! four steps, as a rotation Lambda function receives them.
//!
//! - `createSecret`: a new random value (`GetRandomPassword`, 64 characters) is stored under
//!   the rotation's token with the `AWSPENDING` label, unless that version already exists (a
//!   retried step changes nothing).
//! - `setSecret`: nothing to do: the key lives only in Secrets Manager, and the functions read
//!   it from there.
//! - `testSecret`: the pending value must be strong enough for the environment
//!   ([`check_secret`]) and must sign and verify (HMAC-SHA256).
//! - `finishSecret`: `AWSCURRENT` moves to the new version; Secrets Manager moves
//!   `AWSPREVIOUS` to the old one. Functions then sign with the new key and still verify with the
//!   old one; the key before it has no label left and verifies nothing.
//!
//! Steps are idempotent: Secrets Manager retries a failed step, and a finished rotation's
//! token answers every step with success.

use crate::events::Event;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::{Environment, check_secret};

/// Length of a generated key, in characters (letters and digits: about 380 bits).
pub const KEY_CHARS: i64 = 64;

const PENDING: &str = "AWSPENDING";
const CURRENT: &str = "AWSCURRENT";

/// The event Secrets Manager sends to a rotation function.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RotationEvent {
    /// The secret's ARN.
    #[serde(rename = "SecretId")]
    pub secret_id: String,
    /// The new version's id.
    #[serde(rename = "ClientRequestToken")]
    pub token: String,
    /// The step.
    #[serde(rename = "Step")]
    pub step: Step,
}

/// A rotation step.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Step {
    /// Create the pending version.
    #[serde(rename = "createSecret")]
    Create,
    /// Install the pending value in the service that uses it.
    #[serde(rename = "setSecret")]
    Set,
    /// Check the pending value.
    #[serde(rename = "testSecret")]
    Test,
    /// Make the pending version current.
    #[serde(rename = "finishSecret")]
    Finish,
}

/// Why a step failed. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The token names no version of the secret, or one not staged for rotation.
    #[error("version {token} of {secret} is not staged for rotation")]
    NotPending {
        /// The secret.
        secret: String,
        /// The token.
        token: String,
    },
    /// The pending value fails the environment's strength rules.
    #[error("the pending value of {secret} is refused: {reason}")]
    Weak {
        /// The secret.
        secret: String,
        /// Why.
        reason: String,
    },
    /// A Secrets Manager call failed.
    #[error("{operation} on {secret} failed: {reason}")]
    Aws {
        /// The operation.
        operation: &'static str,
        /// The secret.
        secret: String,
        /// The error code.
        reason: String,
    },
}

fn aws<E: ProvideErrorMetadata, R>(
    operation: &'static str,
    secret: &str,
) -> impl FnOnce(SdkError<E, R>) -> RotationError {
    move |e| RotationError::Aws {
        operation,
        secret: secret.to_string(),
        reason: e.code().unwrap_or("unavailable").to_string(),
    }
}

/// Carries out one step of `event`.
pub async fn rotate(
    client: &Client,
    event: &RotationEvent,
    environment: Environment,
) -> Result<(), RotationError> {
    let secret = event.secret_id.as_str();
    let token = event.token.as_str();
    let described = client
        .describe_secret()
        .secret_id(secret)
        .send()
        .await
        .map_err(aws("DescribeSecret", secret))?;
    let stages = described
        .version_ids_to_stages
        .unwrap_or_default()
        .remove(token);
    let staged = |label: &str| {
        stages
            .as_ref()
            .is_some_and(|s| s.iter().any(|l| l == label))
    };
    if staged(CURRENT) {
        tracing::info!(event = Event::SecretsRotationStep.as_str(), step = ?event.step, secret, "version already current; nothing to do");
        return Ok(());
    }
    if stages.is_some() && !staged(PENDING) {
        return Err(RotationError::NotPending {
            secret: secret.into(),
            token: token.into(),
        });
    }
    if stages.is_none() && event.step != Step::Create {
        return Err(RotationError::NotPending {
            secret: secret.into(),
            token: token.into(),
        });
    }
    match event.step {
        Step::Create => {
            if stages.is_none() {
                let value = client
                    .get_random_password()
                    .password_length(KEY_CHARS)
                    .exclude_punctuation(true)
                    .include_space(false)
                    .require_each_included_type(true)
                    .send()
                    .await
                    .map_err(aws("GetRandomPassword", secret))?
                    .random_password
                    .ok_or_else(|| RotationError::Aws {
                        operation: "GetRandomPassword",
                        secret: secret.into(),
                        reason: "no password returned".into(),
                    })?;
                client
                    .put_secret_value()
                    .secret_id(secret)
                    .client_request_token(token)
                    .secret_string(value)
                    .version_stages(PENDING)
                    .send()
                    .await
                    .map_err(aws("PutSecretValue", secret))?;
            }
        }
        Step::Set => {}
        Step::Test => {
            let value = client
                .get_secret_value()
                .secret_id(secret)
                .version_id(token)
                .version_stage(PENDING)
                .send()
                .await
                .map_err(aws("GetSecretValue", secret))?
                .secret_string
                .unwrap_or_default();
            let key = check_secret("pending key", value, environment).map_err(|e| {
                RotationError::Weak {
                    secret: secret.into(),
                    reason: e.to_string(),
                }
            })?;
            let mac = |msg: &[u8]| {
                let mut m = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
                    .expect("HMAC takes keys of any length");
                m.update(msg);
                m
            };
            let tag = mac(b"rotation test").finalize().into_bytes();
            mac(b"rotation test")
                .verify_slice(&tag)
                .map_err(|_| RotationError::Weak {
                    secret: secret.into(),
                    reason: "the key does not verify what it signed".into(),
                })?;
        }
        Step::Finish => {
            let current = client
                .describe_secret()
                .secret_id(secret)
                .send()
                .await
                .map_err(aws("DescribeSecret", secret))?
                .version_ids_to_stages
                .unwrap_or_default()
                .into_iter()
                .find(|(_, labels)| labels.iter().any(|l| l == CURRENT))
                .map(|(id, _)| id);
            let mut update = client
                .update_secret_version_stage()
                .secret_id(secret)
                .version_stage(CURRENT)
                .move_to_version_id(token);
            if let Some(current) = current {
                update = update.remove_from_version_id(current);
            }
            update
                .send()
                .await
                .map_err(aws("UpdateSecretVersionStage", secret))?;
        }
    }
    tracing::info!(event = Event::SecretsRotationStep.as_str(), step = ?event.step, secret, "rotation step done");
    Ok(())
}

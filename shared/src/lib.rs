//! Security controls for Rust AWS Lambda HTTP functions behind API Gateway.
//!
//! A function declares its policy as an [`pipeline::Endpoint`] and hands each request to
//! [`pipeline::Pipeline::serve`], which applies, in one fixed order: request id, CORS, the
//! request guard, IP blocks and rate limits, body limits, bearer authentication, CSRF, then
//! the handler, the security headers and one structured log line. Every rejection is an
//! [`error::ApiError`] rendered as RFC 9457 problem+json.
//!
//! Features: `accounts` adds password hashing, the password policy and the user store
//! ([`accounts`]); `payments` adds Stripe webhook verification and the event ledger
//! ([`payments`]); `secrets` adds AWS Secrets Manager as the source of [`secrets::Secrets`] and
//! the key-rotation steps; `mail` adds sending through Amazon SES v2 ([`mail`]); `dynamodb` adds the DynamoDB rate-limit store ([`store::dynamodb`]) and the Lambda
//! wiring in `runtime`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "accounts")]
pub mod accounts;
#[cfg(any(feature = "dynamodb", feature = "secrets", feature = "mail"))]
mod aws;
pub mod budget;
pub mod catalogue;
pub mod clock;
pub mod config;
pub mod cors;
pub mod error;
pub mod events;
pub mod guard;
pub mod headers;
pub mod log;
pub mod mail;
#[cfg(feature = "payments")]
pub mod payments;
pub mod pipeline;
pub mod ratelimit;
pub mod revocation;
#[cfg(feature = "dynamodb")]
pub mod runtime;
pub mod secrets;
pub mod session;
pub mod store;
pub mod validate;

pub use catalogue::EndpointId;
pub use config::{Config, ConfigError, Environment, Secret};
pub use error::{ApiError, FieldError};
pub use events::Event;
pub use pipeline::{Ctx, Endpoint, Handler, HandlerResult, Pipeline, StoreFailure};

/// Loads the configuration, checks that the secrets in `needs` have an origin, and installs
/// JSON logging; on a configuration error, logs it (naming the variable, never its value) and
/// returns it so `main` exits before serving. `crate_name` is the function's crate
/// (`env!("CARGO_CRATE_NAME")`), whose own logs follow `LOG_LEVEL` when dependencies may not
/// ([`log::filter`]).
pub fn start(crate_name: &str, needs: &[config::Need]) -> Result<Config, ConfigError> {
    match Config::from_env().and_then(|c| c.require(needs).map(|()| c)) {
        Ok(config) => {
            log::init(&log::filter(
                &config.log_level,
                config.environment,
                &[crate_name],
            ));
            Ok(config)
        }
        Err(err) => {
            log::init("info");
            tracing::error!(event = Event::StartupFailed.as_str(), error = %err, "configuration refused");
            Err(err)
        }
    }
}

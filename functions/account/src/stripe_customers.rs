//! Deleting the account's Stripe customer through async-stripe (which detaches its saved
//! payment methods), behind a small trait so the handler is tested without a network. The
//! secret key comes from the environment exactly as for payment-intent.

use std::time::Duration;

use async_trait::async_trait;
use flowbotz_security::config::{ConfigError, check_secret};
use flowbotz_security::{Environment, Secret};
use stripe::{Client, ClientBuilder, StripeError};
use stripe_core::customer::DeleteCustomer;

/// The Stripe settings the account function reads.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `STRIPE_SECRET_KEY`: required outside development; without it in development a
    /// customer's deletion stays pending.
    pub(crate) secret_key: Option<Secret>,
    /// `STRIPE_API_BASE`: Stripe's API base URL (the local stand-in in development).
    pub(crate) api_base: Option<String>,
    /// `STRIPE_TIMEOUT_MS`: bound on each Stripe request (default 5,000).
    pub(crate) timeout: Duration,
}

impl Settings {
    pub(crate) fn from_env(env: Environment) -> Result<Self, ConfigError> {
        Self::from_lookup(env, |k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
    }

    pub(crate) fn from_lookup(
        env: Environment,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let secret_key = match get("STRIPE_SECRET_KEY") {
            Some(k) => Some(check_secret("STRIPE_SECRET_KEY", k, env)?),
            None if env.is_deployed() => {
                return Err(ConfigError::Missing {
                    var: "STRIPE_SECRET_KEY".into(),
                    environment: env,
                });
            }
            None => None,
        };
        let timeout_ms = match get("STRIPE_TIMEOUT_MS") {
            Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
                var: "STRIPE_TIMEOUT_MS".into(),
                reason: "not a number".into(),
            })?,
            None => 5_000,
        };
        Ok(Self {
            secret_key,
            api_base: get("STRIPE_API_BASE"),
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

#[async_trait]
pub(crate) trait CustomerDeletion: Send + Sync {
    /// Deletes the customer; an already deleted or unknown customer counts as deleted. The
    /// error is for logs only.
    async fn delete_customer(&self, customer_id: &str) -> Result<(), String>;
}

/// Stripe through async-stripe.
pub(crate) struct StripeCustomers {
    client: Client,
}

impl StripeCustomers {
    /// The client, or `None` when no key is configured (development only).
    pub(crate) fn new(settings: &Settings) -> Result<Option<Self>, ConfigError> {
        let Some(key) = &settings.secret_key else {
            return Ok(None);
        };
        let mut builder = ClientBuilder::new(key.expose()).timeout(settings.timeout);
        if let Some(base) = &settings.api_base {
            let base = if base.ends_with('/') {
                base.clone()
            } else {
                format!("{base}/")
            };
            builder = builder.url(base);
        }
        let client = builder.build().map_err(|_| ConfigError::Invalid {
            var: "STRIPE_API_BASE".into(),
            reason: "the Stripe client could not be built".into(),
        })?;
        Ok(Some(Self { client }))
    }
}

#[async_trait]
impl CustomerDeletion for StripeCustomers {
    async fn delete_customer(&self, customer_id: &str) -> Result<(), String> {
        match DeleteCustomer::new(customer_id).send(&self.client).await {
            Ok(_) => Ok(()),
            Err(StripeError::Stripe(api, 404))
                if api.code.as_ref().map(|c| c.as_str()) == Some("resource_missing") =>
            {
                Ok(())
            }
            Err(StripeError::Stripe(api, status)) => {
                Err(format!("stripe answered {status} ({})", api.type_.as_str()))
            }
            Err(StripeError::Timeout) => Err("stripe timed out".into()),
            Err(StripeError::ClientError(_)) => Err("network error reaching stripe".into()),
            Err(StripeError::JSONDeserialize(_)) => Err("unreadable reply from stripe".into()),
            Err(StripeError::ConfigError(_)) => Err("stripe client misconfigured".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_no_key_when_deployed_then_refused_and_a_key_is_redacted_in_debug() {
        assert!(Settings::from_lookup(Environment::Production, |_| None).is_err());
        let s = Settings::from_lookup(Environment::Development, |k| {
            (k == "STRIPE_SECRET_KEY").then(|| "sk_test_0123456789abcdefghijklmnop".into())
        })
        .expect("settings");
        assert!(!format!("{s:?}").contains("sk_test_0123"));
        assert!(StripeCustomers::new(&s).expect("client").is_some());
    }
}

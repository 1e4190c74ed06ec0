//! A Stripe API client on the secret key in use: built from the function's [`Secrets`] and
//! built again when a refresh brings a new key (`STRIPE_SECRET_KEY_ID`), so a key rolled with
//! `put-secret-value` reaches warm instances without a redeploy.

use std::sync::Mutex;
use std::time::Duration;

use ::stripe::{Client, ClientBuilder};

use crate::config::{ConfigError, Environment, Need, Secret};
use crate::secrets::Secrets;

/// How the client reaches Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSettings {
    /// `STRIPE_API_BASE`: Stripe's API base URL, honoured in development only (the local
    /// stand-in); [`crate::config::Config::from_env`] refuses it elsewhere.
    pub api_base: Option<String>,
    /// `STRIPE_TIMEOUT_MS`: bound on each Stripe request (default 5,000).
    pub timeout: Duration,
}

impl StripeSettings {
    /// The settings through `get`, which maps a variable name to its value.
    pub fn from_lookup(
        env: Environment,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let timeout_ms: u64 = match get("STRIPE_TIMEOUT_MS") {
            Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
                var: "STRIPE_TIMEOUT_MS".into(),
                reason: "not a number".into(),
            })?,
            None => 5_000,
        };
        Ok(Self {
            api_base: get("STRIPE_API_BASE").filter(|_| !env.is_deployed()),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// The settings from the process environment.
    pub fn from_env(env: Environment) -> Result<Self, ConfigError> {
        Self::from_lookup(env, |k| std::env::var(k).ok())
    }
}

/// The client could not be had: no key, or the client could not be built (for logs).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("stripe client unavailable: {0}")]
pub struct Unavailable(pub &'static str);

/// A Stripe client following the Stripe key of [`Secrets`].
pub struct StripeClient {
    secrets: Secrets,
    settings: StripeSettings,
    built: Mutex<(u64, Client)>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn build(key: &Secret, settings: &StripeSettings) -> Result<Client, ConfigError> {
    let mut builder = ClientBuilder::new(key.expose()).timeout(settings.timeout);
    if let Some(base) = &settings.api_base {
        let base = if base.ends_with('/') {
            base.clone()
        } else {
            format!("{base}/")
        };
        builder = builder.url(base);
    }
    builder.build().map_err(|_| ConfigError::Invalid {
        var: "STRIPE_API_BASE".into(),
        reason: "the Stripe client could not be built".into(),
    })
}

impl StripeClient {
    /// The client, or `None` when the function has no Stripe key (development only: the
    /// configuration refuses a deployed function without `STRIPE_SECRET_KEY_ID`).
    pub fn new(settings: StripeSettings, secrets: &Secrets) -> Result<Option<Self>, ConfigError> {
        let snapshot = secrets.snapshot();
        let Some(key) = snapshot.get(Need::StripeSecretKey) else {
            return Ok(None);
        };
        let client = build(&key.current, &settings)?;
        Ok(Some(Self {
            secrets: secrets.clone(),
            settings,
            built: Mutex::new((snapshot.generation(), client)),
        }))
    }

    /// The client of the key in use now.
    pub fn get(&self) -> Result<Client, Unavailable> {
        let snapshot = self.secrets.snapshot();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if built.0 == snapshot.generation() {
            return Ok(built.1.clone());
        }
        let key = snapshot
            .get(Need::StripeSecretKey)
            .ok_or(Unavailable("no Stripe key"))?;
        let client = build(&key.current, &self.settings)
            .map_err(|_| Unavailable("the client could not be built"))?;
        *built = (snapshot.generation(), client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Versions;

    #[test]
    fn given_settings_when_deployed_then_the_base_url_is_ignored_and_the_timeout_read() {
        let vars = |k: &str| match k {
            "STRIPE_API_BASE" => Some("http://127.0.0.1:1/".to_string()),
            "STRIPE_TIMEOUT_MS" => Some("1200".to_string()),
            _ => None,
        };
        let dev = StripeSettings::from_lookup(Environment::Development, vars).expect("dev");
        assert_eq!(dev.api_base.as_deref(), Some("http://127.0.0.1:1/"));
        assert_eq!(dev.timeout, Duration::from_millis(1200));
        let prod = StripeSettings::from_lookup(Environment::Production, vars).expect("prod");
        assert_eq!(prod.api_base, None);
        assert!(
            StripeSettings::from_lookup(Environment::Development, |k| {
                (k == "STRIPE_TIMEOUT_MS").then(|| "x".into())
            })
            .is_err()
        );
    }

    #[test]
    fn given_no_stripe_key_when_building_then_none_and_with_one_a_client() {
        let settings =
            StripeSettings::from_lookup(Environment::Development, |_| None).expect("settings");
        let none = Secrets::fixed(Environment::Development, Default::default());
        assert!(
            StripeClient::new(settings.clone(), &none)
                .expect("ok")
                .is_none()
        );
        let some = Secrets::fixed(
            Environment::Development,
            [(Need::StripeSecretKey, Versions::single("sk_test_x"))].into(),
        );
        let client = StripeClient::new(settings, &some)
            .expect("ok")
            .expect("client");
        assert!(client.get().is_ok());
        assert!(!format!("{client:?}").contains("sk_test_x"));
    }
}

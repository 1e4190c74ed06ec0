//! Creating PaymentIntents at Stripe through async-stripe, behind a small trait so the handler
//! is tested without a network.

use std::collections::HashMap;

use async_trait::async_trait;
use flowbotz_security::Environment;
use flowbotz_security::config::ConfigError;
use flowbotz_security::payments::stripe::{StripeClient, StripeSettings};
use flowbotz_security::secrets::Secrets;
use stripe::{Client, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_core::payment_intent::CreatePaymentIntent;

/// The function's payment settings, from the environment.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// How the Stripe client reaches Stripe (`STRIPE_API_BASE` in development,
    /// `STRIPE_TIMEOUT_MS`).
    pub(crate) stripe: StripeSettings,
    /// `PAYMENT_MAX_AMOUNT`: the largest amount in minor units (default 1,000,000).
    pub(crate) max_amount: i64,
    /// `PAYMENT_CURRENCIES`: allowed currencies, comma-separated (default usd,eur,gbp).
    pub(crate) currencies: Vec<String>,
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
        let number = |var: &str, default: u64| -> Result<u64, ConfigError> {
            get(var).map_or(Ok(default), |v| {
                v.trim().parse().map_err(|_| ConfigError::Invalid {
                    var: var.into(),
                    reason: "not a number".into(),
                })
            })
        };
        let currencies: Vec<String> = get("PAYMENT_CURRENCIES")
            .unwrap_or_else(|| "usd,eur,gbp".into())
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if currencies
            .iter()
            .any(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_lowercase()))
        {
            return Err(ConfigError::Invalid {
                var: "PAYMENT_CURRENCIES".into(),
                reason: "three-letter ISO codes".into(),
            });
        }
        Ok(Self {
            stripe: StripeSettings::from_lookup(env, &get)?,
            max_amount: number("PAYMENT_MAX_AMOUNT", 1_000_000)? as i64,
            currencies,
        })
    }
}

/// What the function asks Stripe to create.
#[derive(Debug, Clone)]
pub(crate) struct IntentRequest {
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) description: Option<String>,
    /// The account's own address, set by the server when the client asks for a receipt.
    pub(crate) receipt_email: Option<String>,
    /// The account's server-owned customer.
    pub(crate) customer: String,
    pub(crate) metadata: HashMap<String, String>,
}

/// The parts of a created intent the client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreatedIntent {
    pub(crate) id: String,
    pub(crate) client_secret: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) status: String,
}

/// How a create failed, with only what is safe to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProviderError {
    /// Stripe refused the request's parameters; `param` and `code` are Stripe's.
    Invalid {
        param: Option<String>,
        code: Option<String>,
    },
    /// The idempotency key was used before with other parameters.
    IdempotencyConflict,
    /// Stripe rate-limited the account.
    RateLimited,
    /// The request did not complete in time.
    Timeout,
    /// Network failure, bad key, Stripe outage or an unreadable reply (for logs).
    Unavailable(String),
}

#[async_trait]
pub(crate) trait Intents: Send + Sync {
    async fn create(
        &self,
        req: &IntentRequest,
        idempotency_key: &str,
    ) -> Result<CreatedIntent, ProviderError>;
}

/// Stripe through async-stripe.
pub(crate) struct StripeIntents {
    pub(crate) client: StripeClient,
}

impl StripeIntents {
    /// The client, or `None` when no key is configured (development only: the configuration
    /// refuses the rest).
    pub(crate) fn new(settings: &Settings, secrets: &Secrets) -> Result<Option<Self>, ConfigError> {
        Ok(StripeClient::new(settings.stripe.clone(), secrets)?.map(|client| Self { client }))
    }

    /// The client of the Stripe key in use now.
    pub(crate) fn client(&self) -> Result<Client, ProviderError> {
        self.client
            .get()
            .map_err(|e| ProviderError::Unavailable(e.to_string()))
    }
}

pub(crate) fn classify(err: StripeError) -> ProviderError {
    match err {
        StripeError::Stripe(api, status) => {
            let kind = api.type_.as_str().to_string();
            match (status, kind.as_str()) {
                (_, "idempotency_error") => ProviderError::IdempotencyConflict,
                (429, _) => ProviderError::RateLimited,
                (400 | 402 | 404, "invalid_request_error" | "card_error") => {
                    ProviderError::Invalid {
                        param: api.param.clone(),
                        code: api.code.as_ref().map(|c| c.as_str().to_string()),
                    }
                }
                (status, kind) => {
                    ProviderError::Unavailable(format!("stripe answered {status} ({kind})"))
                }
            }
        }
        StripeError::Timeout => ProviderError::Timeout,
        StripeError::ClientError(_) => {
            ProviderError::Unavailable("network error reaching stripe".into())
        }
        StripeError::JSONDeserialize(_) => {
            ProviderError::Unavailable("unreadable reply from stripe".into())
        }
        StripeError::ConfigError(_) => {
            ProviderError::Unavailable("stripe client misconfigured".into())
        }
    }
}

#[async_trait]
impl Intents for StripeIntents {
    async fn create(
        &self,
        req: &IntentRequest,
        idempotency_key: &str,
    ) -> Result<CreatedIntent, ProviderError> {
        let currency = req
            .currency
            .parse::<stripe_types::Currency>()
            .map_err(|_| ProviderError::Invalid {
                param: Some("currency".into()),
                code: None,
            })?;
        let mut create =
            CreatePaymentIntent::new(req.amount, currency).metadata(req.metadata.clone());
        if let Some(d) = &req.description {
            create = create.description(d);
        }
        if let Some(e) = &req.receipt_email {
            create = create.receipt_email(e);
        }
        create = create.customer(&req.customer);
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|_| ProviderError::Unavailable("invalid idempotency key".into()))?;
        let intent = create
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client()?)
            .await
            .map_err(classify)?;
        Ok(CreatedIntent {
            id: intent.id.as_str().to_string(),
            client_secret: intent.client_secret.unwrap_or_default(),
            amount: intent.amount,
            currency: intent.currency.to_string(),
            status: intent.status.as_str().to_string(),
        })
    }
}

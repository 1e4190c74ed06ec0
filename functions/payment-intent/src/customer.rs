//! Creating the account's Stripe customer through async-stripe, behind a small trait so the
//! handler is tested without a network.

use std::collections::HashMap;

use async_trait::async_trait;
use stripe::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::customer::CreateCustomer;

use crate::provider::{ProviderError, StripeIntents, classify};

#[async_trait]
pub(crate) trait Customers: Send + Sync {
    /// Creates the customer of `user_id` with `idempotency_key`; returns its id.
    async fn create_customer(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<String, ProviderError>;
}

#[async_trait]
impl Customers for StripeIntents {
    async fn create_customer(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<String, ProviderError> {
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|_| ProviderError::Unavailable("invalid idempotency key".into()))?;
        let customer = CreateCustomer::new()
            .metadata(HashMap::from([(
                "user_id".to_string(),
                user_id.to_string(),
            )]))
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client()?)
            .await
            .map_err(classify)?;
        Ok(customer.id.as_str().to_string())
    }
}

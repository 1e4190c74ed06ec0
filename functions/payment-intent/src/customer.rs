//! Creating the account's Stripe customer through async-stripe (and deleting one created for an
//! account that was erased meanwhile), behind a small trait so the handler is tested without a
//! network.

use std::collections::HashMap;

use async_trait::async_trait;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_core::customer::{CreateCustomer, DeleteCustomer};

use crate::provider::{ProviderError, StripeIntents, classify};

#[async_trait]
pub(crate) trait Customers: Send + Sync {
    /// Creates the customer of `user_id` with `idempotency_key`; returns its id.
    async fn create_customer(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<String, ProviderError>;

    /// Deletes a customer; an already deleted or unknown one counts as deleted.
    async fn delete_customer(&self, customer_id: &str) -> Result<(), ProviderError>;
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

    async fn delete_customer(&self, customer_id: &str) -> Result<(), ProviderError> {
        match DeleteCustomer::new(customer_id).send(&self.client()?).await {
            Ok(_) => Ok(()),
            Err(StripeError::Stripe(api, 404))
                if api.code.as_ref().map(|c| c.as_str()) == Some("resource_missing") =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }
}

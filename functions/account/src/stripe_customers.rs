//! Deleting the account's Stripe customer through async-stripe (which detaches its saved
//! payment methods), behind a small trait so the handler is tested without a network. The
//! secret key is the function's `STRIPE_SECRET_KEY_ID` secret, as for payment-intent.

use async_trait::async_trait;
use flowbotz_security::config::ConfigError;
use flowbotz_security::payments::stripe::{StripeClient, StripeSettings};
use flowbotz_security::secrets::Secrets;
use stripe::StripeError;
use stripe_core::customer::DeleteCustomer;

#[async_trait]
pub(crate) trait CustomerDeletion: Send + Sync {
    /// Deletes the customer; an already deleted or unknown customer counts as deleted. The
    /// error is for logs only.
    async fn delete_customer(&self, customer_id: &str) -> Result<(), String>;
}

/// Stripe through async-stripe, on the Stripe key of the function's secrets.
pub(crate) struct StripeCustomers {
    client: StripeClient,
}

impl StripeCustomers {
    /// The client, or `None` when the function has no Stripe key (development only; a
    /// customer's deletion then stays pending).
    pub(crate) fn new(
        settings: StripeSettings,
        secrets: &Secrets,
    ) -> Result<Option<Self>, ConfigError> {
        Ok(StripeClient::new(settings, secrets)?.map(|client| Self { client }))
    }
}

#[async_trait]
impl CustomerDeletion for StripeCustomers {
    async fn delete_customer(&self, customer_id: &str) -> Result<(), String> {
        let client = self.client.get().map_err(|e| e.to_string())?;
        match DeleteCustomer::new(customer_id).send(&client).await {
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
    use flowbotz_security::Environment;
    use flowbotz_security::config::Need;
    use flowbotz_security::secrets::Versions;

    #[test]
    fn given_a_stripe_key_in_the_secrets_when_building_then_a_client_and_without_one_none() {
        let settings =
            StripeSettings::from_lookup(Environment::Development, |_| None).expect("settings");
        let none = Secrets::fixed(Environment::Development, Default::default());
        assert!(
            StripeCustomers::new(settings.clone(), &none)
                .expect("ok")
                .is_none()
        );
        let some = Secrets::fixed(
            Environment::Development,
            [(
                Need::StripeSecretKey,
                Versions::single("sk_test_0123456789abcdef"),
            )]
            .into(),
        );
        assert!(StripeCustomers::new(settings, &some).expect("ok").is_some());
    }
}

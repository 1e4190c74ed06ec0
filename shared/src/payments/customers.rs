//! The server-owned Stripe customer of each account, kept on the account's `user#<id>` item.
//!
//! The first payment of an account creates its customer at Stripe with an `Idempotency-Key`
//! derived from the user id ([`customer_idempotency_key`]) and stores it with a conditional
//! write ([`CustomerStore::set_customer`]): two instances racing on the first payment send the
//! same key, so Stripe creates one customer and both store the same id; if they ever differ
//! (the key expired between a crash and a retry), the stored one wins and is used.
//!
//! Erasure first marks the account `erasing` ([`CustomerStore::mark_erasing`]), which returns
//! the customer stored at that moment, in one atomic step. From then on `set_customer` stores
//! nothing and `owner` finds no account, so a customer created by a payment racing the erasure
//! is either returned to the erasure (which deletes it at Stripe) or refused to the payment
//! (which deletes it at Stripe itself): never left alive with nobody knowing it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::ratelimit::StoreError;

/// What the payment functions know about an account.
#[derive(Clone, PartialEq, Eq)]
pub struct Owner {
    /// The account's email: the only address a receipt goes to.
    pub email: String,
    /// Its Stripe customer, once created.
    pub customer_id: Option<String>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("customer_id", &self.customer_id)
            .finish_non_exhaustive()
    }
}

/// The outcome of storing a customer id on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetCustomer {
    /// The account now names this customer (or already did).
    Stored,
    /// The account already names another customer, which is the one to use.
    Existing(String),
    /// The account does not exist or is being erased: a customer just created for it has to
    /// be deleted at Stripe by the caller.
    NoAccount,
}

/// The Stripe `Idempotency-Key` for creating `user_id`'s customer: the same for every
/// instance, so concurrent first payments create one customer.
pub fn customer_idempotency_key(user_id: &str) -> String {
    format!(
        "fbz-customer-{}",
        hex::encode(Sha256::digest(user_id.as_bytes()))
    )
}

/// Where the account's customer id lives.
#[async_trait]
pub trait CustomerStore: Send + Sync {
    /// The account of `user_id`, if it exists and is not being erased.
    async fn owner(&self, user_id: &str) -> Result<Option<Owner>, StoreError>;

    /// Stores `customer_id` on the account unless it already names one; stores nothing on an
    /// account that is gone or being erased ([`SetCustomer::NoAccount`]).
    async fn set_customer(
        &self,
        user_id: &str,
        customer_id: &str,
    ) -> Result<SetCustomer, StoreError>;

    /// Marks the account of `user_id` as being erased and returns the customer it names, in
    /// one atomic step; `Ok(None)` when it names none or does not exist. Repeatable: a retried
    /// erasure gets the same customer.
    async fn mark_erasing(&self, user_id: &str) -> Result<Option<String>, StoreError>;
}

/// Accounts in a `HashMap`, for unit tests.
#[derive(Debug, Default)]
pub struct MemoryCustomers {
    owners: Mutex<HashMap<String, (Owner, bool)>>,
}

impl MemoryCustomers {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an account.
    pub fn insert(&self, user_id: &str, email: &str) {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                user_id.to_string(),
                (
                    Owner {
                        email: email.to_string(),
                        customer_id: None,
                    },
                    false,
                ),
            );
    }

    /// Removes an account, as erasure's delete of the user item does; `false` if there was
    /// none.
    pub fn remove(&self, user_id: &str) -> bool {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user_id)
            .is_some()
    }
}

#[async_trait]
impl CustomerStore for MemoryCustomers {
    async fn owner(&self, user_id: &str) -> Result<Option<Owner>, StoreError> {
        Ok(self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user_id)
            .filter(|(_, erasing)| !erasing)
            .map(|(owner, _)| owner.clone()))
    }

    async fn set_customer(
        &self,
        user_id: &str,
        customer_id: &str,
    ) -> Result<SetCustomer, StoreError> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let Some((owner, false)) = owners.get_mut(user_id) else {
            return Ok(SetCustomer::NoAccount);
        };
        match &owner.customer_id {
            Some(c) if c != customer_id => Ok(SetCustomer::Existing(c.clone())),
            _ => {
                owner.customer_id = Some(customer_id.to_string());
                Ok(SetCustomer::Stored)
            }
        }
    }

    async fn mark_erasing(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        Ok(owners.get_mut(user_id).and_then(|(owner, erasing)| {
            *erasing = true;
            owner.customer_id.clone()
        }))
    }
}

/// The customer store on the users table.
#[cfg(feature = "dynamodb")]
pub mod dynamodb {
    use std::collections::HashMap;

    use async_trait::async_trait;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::error::SdkError;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    use aws_sdk_dynamodb::types::{
        AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure,
    };

    use super::{CustomerStore, Owner, SetCustomer};
    use crate::ratelimit::StoreError;
    use crate::store::dynamodb::{PK, s, text, unavailable};

    const CUSTOMER: &str = "stripe_customer";
    /// Set on the `user#<id>` item when its erasure begins; the item is deleted at its end.
    const ERASING: &str = "erasing";

    /// Customer ids on the users table's `user#<id>` items.
    #[derive(Debug, Clone)]
    pub struct DynamoCustomers {
        client: Client,
        table: String,
    }

    impl DynamoCustomers {
        /// A store on the users `table`.
        pub fn new(client: Client, table: impl Into<String>) -> Self {
            Self {
                client,
                table: table.into(),
            }
        }
    }

    fn user_key(user_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(PK.to_string(), s(format!("user#{user_id}")))])
    }

    #[async_trait]
    impl CustomerStore for DynamoCustomers {
        async fn owner(&self, user_id: &str) -> Result<Option<Owner>, StoreError> {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(user_key(user_id)))
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            Ok(out
                .item()
                .filter(|i| !i.contains_key(ERASING))
                .and_then(|i| {
                    Some(Owner {
                        email: text(i, "email")?,
                        customer_id: text(i, CUSTOMER),
                    })
                }))
        }

        async fn set_customer(
            &self,
            user_id: &str,
            customer_id: &str,
        ) -> Result<SetCustomer, StoreError> {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(user_key(user_id)))
                .update_expression("SET #c = :c")
                .condition_expression(
                    "attribute_exists(#pk) AND attribute_not_exists(#e) \
                     AND (attribute_not_exists(#c) OR #c = :c)",
                )
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#e", ERASING)
                .expression_attribute_names("#c", CUSTOMER)
                .expression_attribute_values(":c", s(customer_id))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            match result {
                Ok(_) => Ok(SetCustomer::Stored),
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
                {
                    let old = match e.err() {
                        UpdateItemError::ConditionalCheckFailedException(c) => c.item().cloned(),
                        _ => None,
                    };
                    Ok(
                        match old
                            .as_ref()
                            .filter(|i| !i.contains_key(ERASING))
                            .and_then(|i| text(i, CUSTOMER))
                        {
                            Some(existing) => SetCustomer::Existing(existing),
                            None => SetCustomer::NoAccount,
                        },
                    )
                }
                Err(e) => Err(unavailable(e)),
            }
        }

        async fn mark_erasing(&self, user_id: &str) -> Result<Option<String>, StoreError> {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(user_key(user_id)))
                .update_expression("SET #e = :t")
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#e", ERASING)
                .expression_attribute_values(":t", AttributeValue::Bool(true))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match result {
                Ok(out) => Ok(out.attributes().and_then(|i| text(i, CUSTOMER))),
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
                {
                    Ok(None)
                }
                Err(e) => Err(unavailable(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_user_when_deriving_the_customer_key_then_stable_distinct_and_short() {
        let a = customer_idempotency_key("u-1");
        assert_eq!(a, customer_idempotency_key("u-1"));
        assert_ne!(a, customer_idempotency_key("u-2"));
        assert!(a.len() <= 255 && !a.contains("u-1"));
    }

    #[tokio::test]
    async fn given_racing_writes_when_storing_then_the_first_customer_wins() {
        let store = MemoryCustomers::new();
        store.insert("u-1", "a@example.com");
        assert_eq!(
            store.set_customer("u-1", "cus_A").await.expect("set"),
            SetCustomer::Stored
        );
        assert_eq!(
            store.set_customer("u-1", "cus_A").await.expect("set"),
            SetCustomer::Stored
        );
        assert_eq!(
            store.set_customer("u-1", "cus_B").await.expect("set"),
            SetCustomer::Existing("cus_A".into())
        );
        assert_eq!(
            store.set_customer("gone", "cus_C").await.expect("set"),
            SetCustomer::NoAccount
        );
        let owner = store.owner("u-1").await.expect("read").expect("owner");
        assert!(!format!("{owner:?}").contains("example.com"));
    }

    #[tokio::test]
    async fn given_an_erasure_that_began_when_a_racing_payment_stores_its_customer_then_refused() {
        let store = MemoryCustomers::new();
        store.insert("u-1", "a@example.com");
        assert_eq!(store.mark_erasing("u-1").await.expect("mark"), None);
        assert_eq!(
            store.set_customer("u-1", "cus_A").await.expect("set"),
            SetCustomer::NoAccount
        );
        assert_eq!(store.owner("u-1").await.expect("read"), None);
        store.insert("u-2", "b@example.com");
        store.set_customer("u-2", "cus_B").await.expect("set");
        assert_eq!(
            store.mark_erasing("u-2").await.expect("mark").as_deref(),
            Some("cus_B")
        );
        assert_eq!(store.mark_erasing("gone").await.expect("mark"), None);
    }
}

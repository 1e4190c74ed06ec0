//! The user store on a DynamoDB table keyed by `pk`:
//!
//! - `email#<email>`: the account (user id, Argon2id hash, name, created_at);
//! - `user#<id>`: the email of a user id, so an account can be erased from its token;
//! - `loginfail#<sha256(email)>`: failed logins in the current window, with a TTL.
//!
//! Registration writes the first two in one transaction conditioned on neither existing, so an
//! email is unique without a read.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};

use super::{Attempt, Failures, UserRecord, UserStore, failure_key};
use crate::ratelimit::StoreError;
use crate::store::dynamodb::{PK, TTL_ATTRIBUTE, n, number, s, text, unavailable};

/// Accounts on a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoUserStore {
    client: Client,
    table: String,
}

impl DynamoUserStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn key(pk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), s(pk))])
}

fn email_pk(email: &str) -> String {
    format!("email#{email}")
}

fn user_pk(user_id: &str) -> String {
    format!("user#{user_id}")
}

fn failure_pk(email: &str) -> String {
    format!("loginfail#{}", failure_key(email))
}

fn to_user(item: &HashMap<String, AttributeValue>) -> Option<UserRecord> {
    Some(UserRecord {
        user_id: text(item, "user_id")?,
        email: text(item, "email")?,
        password_hash: text(item, "password_hash")?,
        name: text(item, "name"),
        created_at: number(item, "created_at").unwrap_or(0),
    })
}

fn to_failures(item: &HashMap<String, AttributeValue>) -> Failures {
    Failures {
        count: number(item, "failures").unwrap_or(0) as u32,
        since_s: number(item, "since").unwrap_or(0),
    }
}

fn built<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Unavailable(e.to_string()))
}

#[async_trait]
impl UserStore for DynamoUserStore {
    async fn create(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let mut account = HashMap::from([
            (PK.to_string(), s(email_pk(&user.email))),
            ("user_id".to_string(), s(&user.user_id)),
            ("email".to_string(), s(&user.email)),
            ("password_hash".to_string(), s(&user.password_hash)),
            ("created_at".to_string(), n(user.created_at)),
        ]);
        if let Some(name) = &user.name {
            account.insert("name".to_string(), s(name));
        }
        let index = HashMap::from([
            (PK.to_string(), s(user_pk(&user.user_id))),
            ("email".to_string(), s(&user.email)),
            ("created_at".to_string(), n(user.created_at)),
        ]);
        let put = |item| {
            built(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", PK)
                    .build(),
            )
        };
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put(account)?).build())
            .transact_items(TransactWriteItem::builder().put(put(index)?).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), TransactWriteItemsError::TransactionCanceledException(c)
                if c.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn lookup(&self, email: &str) -> Result<(Option<UserRecord>, Failures), StoreError> {
        let keys = built(
            KeysAndAttributes::builder()
                .keys(key(email_pk(email)))
                .keys(key(failure_pk(email)))
                .consistent_read(true)
                .build(),
        )?;
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(unavailable)?;
        if out.unprocessed_keys().is_some_and(|u| !u.is_empty()) {
            return Err(StoreError::Unavailable(
                "batch read left keys unprocessed".into(),
            ));
        }
        let mut user = None;
        let mut failures = Failures::default();
        for item in out
            .responses()
            .and_then(|r| r.get(&self.table))
            .into_iter()
            .flatten()
        {
            match text(item, PK) {
                Some(pk) if pk.starts_with("email#") => user = to_user(item),
                Some(pk) if pk.starts_with("loginfail#") => failures = to_failures(item),
                _ => {}
            }
        }
        Ok((user, failures))
    }

    async fn reserve_attempt(
        &self,
        email: &str,
        now_s: u64,
        max: u32,
        window_s: u64,
    ) -> Result<Attempt, StoreError> {
        let cutoff = now_s.saturating_sub(window_s);
        let expires = now_s + window_s + 60;
        // A restart may race another instance's restart: a few tries settle it.
        for _ in 0..3 {
            let counted = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(failure_pk(email))))
                .update_expression(
                    "SET #f = if_not_exists(#f, :zero) + :one, #s = if_not_exists(#s, :now), #ttl = :exp",
                )
                .condition_expression("attribute_not_exists(#s) OR (#s > :cutoff AND #f < :max)")
                .expression_attribute_names("#f", "failures")
                .expression_attribute_names("#s", "since")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(now_s))
                .expression_attribute_values(":exp", n(expires))
                .expression_attribute_values(":cutoff", n(cutoff))
                .expression_attribute_values(":max", n(max))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let old = match counted {
                Ok(out) => {
                    return Ok(Attempt::Admitted(
                        out.attributes().map(to_failures).unwrap_or_default(),
                    ));
                }
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
                {
                    match e.err() {
                        UpdateItemError::ConditionalCheckFailedException(c) => {
                            c.item().map(to_failures).unwrap_or_default()
                        }
                        _ => Failures::default(),
                    }
                }
                Err(e) => return Err(unavailable(e)),
            };
            if old.since_s > cutoff {
                return Ok(Attempt::Throttled {
                    retry_after: (old.since_s + window_s).saturating_sub(now_s).max(1),
                });
            }
            // The window has passed: start a new one, unless another instance just did.
            let restarted = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(failure_pk(email))))
                .update_expression("SET #f = :one, #s = :now, #ttl = :exp")
                .condition_expression("#s <= :cutoff")
                .expression_attribute_names("#f", "failures")
                .expression_attribute_names("#s", "since")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(now_s))
                .expression_attribute_values(":exp", n(expires))
                .expression_attribute_values(":cutoff", n(cutoff))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match restarted {
                Ok(out) => {
                    return Ok(Attempt::Admitted(
                        out.attributes().map(to_failures).unwrap_or_default(),
                    ));
                }
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(
            "login attempt not reserved after three tries".into(),
        ))
    }

    async fn clear_failures(&self, email: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(failure_pk(email))))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn update_hash(&self, email: &str, password_hash: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(email_pk(email))))
            .update_expression("SET #h = :h")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#h", "password_hash")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":h", s(password_hash))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn erase(&self, user_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(email) = out.item().and_then(|i| text(i, "email")) else {
            return Ok(false);
        };
        let delete = |pk: String| {
            built(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk)))
                    .build(),
            )
        };
        self.client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .delete(delete(email_pk(&email))?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .delete(delete(user_pk(user_id))?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .delete(delete(failure_pk(&email))?)
                    .build(),
            )
            .send()
            .await
            .map_err(unavailable)?;
        Ok(true)
    }
}

//! The user store on a DynamoDB table keyed by `pk`:
//!
//! - `email#<email>`: the account (`user_id`, `email`, `password_hash`, `name`, `created_at`,
//!   `email_verified_at`, and `session_gen` mirrored from `user#<id>` so login reads it with the
//!   account);
//! - `user#<id>`: the email of a user id, so an account can be found and erased from its
//!   token, with `created_at`, `email_verified_at`, `session_gen` and `session_keep`, which
//!   [`crate::revocation::dynamodb`] reads on every authenticated request;
//! - `loginfail#<sha256(email)>`: failed logins in the current window, with a TTL;
//! - `session#<jti>`: an ended session (logout), with a TTL at the token's expiry.
//!
//! Verification writes the first two in one transaction conditioned on neither existing, so an
//! email is unique without a read. An `email#` item without `email_verified_at` is never
//! returned. Every change of `session_gen` updates both items in one transaction conditioned
//! on both existing (and on the email item still naming the user id), so the mirror never
//! drifts and an erased account is never written back.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::{Attempt, EndSessions, Failures, UserRecord, UserStore, failure_key};
use crate::ratelimit::StoreError;
use crate::revocation::dynamodb::{SESSION_GEN, SESSION_KEEP, session_pk, user_pk};
use crate::store::dynamodb::{PK, TTL_ATTRIBUTE, n, number, s, text, unavailable};

/// The attribute written only when a mailed link proved the mailbox.
pub const EMAIL_VERIFIED_AT: &str = "email_verified_at";

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
        email_verified_at: number(item, EMAIL_VERIFIED_AT)?,
        session_gen: number(item, SESSION_GEN).unwrap_or(0),
    })
}

/// Whether a transaction was cancelled by a failed condition (not an outage).
fn condition_failed<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    matches!(err, SdkError::ServiceError(e)
        if matches!(e.err(), TransactWriteItemsError::TransactionCanceledException(c)
        if c.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))))
}

fn to_failures(item: &HashMap<String, AttributeValue>) -> Failures {
    Failures {
        count: number(item, "failures").unwrap_or(0) as u32,
        since_s: number(item, "since").unwrap_or(0),
    }
}

impl DynamoUserStore {
    /// The email recorded on `user#<user_id>` (one consistent read).
    async fn email_of(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item().and_then(|i| text(i, "email")))
    }

    /// One transaction: bumps the session generation of both account items (setting the
    /// keeper, or removing it), optionally replacing the password hash and clearing the
    /// failed-login count; `Ok(false)` if the account is gone or the email is another's.
    async fn bump(
        &self,
        user_id: &str,
        email: &str,
        password_hash: Option<&str>,
        end: EndSessions,
    ) -> Result<bool, StoreError> {
        let mut account = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(email_pk(email))))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#uid", "user_id")
            .expression_attribute_names("#gen", SESSION_GEN)
            .expression_attribute_values(":uid", s(user_id))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        account = match password_hash {
            Some(h) => account
                .update_expression("SET #gen = if_not_exists(#gen, :zero) + :one, #h = :h")
                .expression_attribute_names("#h", "password_hash")
                .expression_attribute_values(":h", s(h)),
            None => account.update_expression("SET #gen = if_not_exists(#gen, :zero) + :one"),
        };
        // A change by a session: only while the hash is the one its password was checked
        // against (no reset landed meanwhile).
        account = match &end {
            EndSessions::AllExcept { verified_hash, .. } => account
                .condition_expression("attribute_exists(#pk) AND #uid = :uid AND #h = :verified")
                .expression_attribute_names("#h", "password_hash")
                .expression_attribute_values(":verified", s(verified_hash)),
            EndSessions::All => {
                account.condition_expression("attribute_exists(#pk) AND #uid = :uid")
            }
        };
        let mut index = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id))))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#gen", SESSION_GEN)
            .expression_attribute_names("#keep", SESSION_KEEP)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        index = match end {
            // ... and only while the changing session still stands (no logout everywhere or
            // reset ended it meanwhile).
            EndSessions::AllExcept {
                jti, generation, ..
            } => {
                let alive = if generation == 0 {
                    "(attribute_not_exists(#gen) OR #gen = :cgen OR #keep = :keep)"
                } else {
                    "(#gen = :cgen OR #keep = :keep)"
                };
                index
                    .condition_expression(format!("attribute_exists(#pk) AND {alive}"))
                    .update_expression(
                        "SET #gen = if_not_exists(#gen, :zero) + :one, #keep = :keep",
                    )
                    .expression_attribute_values(":keep", s(jti))
                    .expression_attribute_values(":cgen", n(generation))
            }
            EndSessions::All => index
                .condition_expression("attribute_exists(#pk)")
                .update_expression("SET #gen = if_not_exists(#gen, :zero) + :one REMOVE #keep"),
        };
        let mut tx = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .update(built(account.build())?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .update(built(index.build())?)
                    .build(),
            );
        if password_hash.is_some() {
            // The changed password's failed logins no longer mean anything.
            let clear = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(failure_pk(email))))
                .build();
            tx = tx.transact_items(TransactWriteItem::builder().delete(built(clear)?).build());
        }
        match tx.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
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
            (EMAIL_VERIFIED_AT.to_string(), n(user.email_verified_at)),
            (SESSION_GEN.to_string(), n(user.session_gen)),
        ]);
        if let Some(name) = &user.name {
            account.insert("name".to_string(), s(name));
        }
        let index = HashMap::from([
            (PK.to_string(), s(user_pk(&user.user_id))),
            ("email".to_string(), s(&user.email)),
            ("created_at".to_string(), n(user.created_at)),
            (EMAIL_VERIFIED_AT.to_string(), n(user.email_verified_at)),
            (SESSION_GEN.to_string(), n(user.session_gen)),
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
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn find(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(email) = self.email_of(user_id).await? else {
            return Ok(None);
        };
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(email_pk(&email))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out
            .item()
            .and_then(to_user)
            .filter(|u| u.user_id == user_id))
    }

    async fn set_password(
        &self,
        user_id: &str,
        email: &str,
        password_hash: &str,
        end: EndSessions,
    ) -> Result<bool, StoreError> {
        self.bump(user_id, email, Some(password_hash), end).await
    }

    async fn end_all_sessions(&self, user_id: &str) -> Result<bool, StoreError> {
        let Some(email) = self.email_of(user_id).await? else {
            return Ok(false);
        };
        self.bump(user_id, &email, None, EndSessions::All).await
    }

    async fn end_session(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        // UpdateItem creates the item: the users table's writers already hold that action.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(session_pk(jti))))
            .update_expression("SET #ttl = :exp")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":exp", n(exp))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
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

    async fn update_hash(
        &self,
        email: &str,
        old_hash: &str,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(email_pk(email))))
            .update_expression("SET #h = :h")
            .condition_expression("attribute_exists(#pk) AND #h = :old")
            .expression_attribute_names("#h", "password_hash")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":h", s(password_hash))
            .expression_attribute_values(":old", s(old_hash))
            .send()
            .await;
        match updated {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn erase(&self, user_id: &str) -> Result<bool, StoreError> {
        let Some(email) = self.email_of(user_id).await? else {
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

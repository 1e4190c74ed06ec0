//! Session liveness on the users table, read in one `BatchGetItem` (consistent reads) of:
//!
//! - `user#<id>`: the account, which registration writes and erasure deletes, with its
//!   `session_gen` (absent: 0) and optional `session_keep` (the `jti` a password change kept);
//! - `session#<jti>`: the denial of one ended session (logout), with the TTL attribute set to
//!   the token's `exp`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use super::{AccountSessions, SessionState, SessionStore, state};
use crate::ratelimit::StoreError;
use crate::session::Claims;
use crate::store::dynamodb::{PK, number, s, text, unavailable};

/// The attribute of `user#<id>` (mirrored on `email#<email>`) holding the session generation.
pub const SESSION_GEN: &str = "session_gen";
/// The attribute of `user#<id>` naming the one session a password change kept.
pub const SESSION_KEEP: &str = "session_keep";

/// The key of the account item of `user_id`.
pub fn user_pk(user_id: &str) -> String {
    format!("user#{user_id}")
}

/// The key of the denial item of the session `jti`.
pub fn session_pk(jti: &str) -> String {
    format!("session#{jti}")
}

/// Session liveness read from the users table.
#[derive(Debug, Clone)]
pub struct DynamoSessionStore {
    client: Client,
    table: String,
}

impl DynamoSessionStore {
    /// A store on the users table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn read(
        &self,
        keys: KeysAndAttributes,
    ) -> Result<
        (
            Vec<HashMap<String, AttributeValue>>,
            Option<KeysAndAttributes>,
        ),
        StoreError,
    > {
        let mut out = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(unavailable)?;
        let items = out
            .responses
            .as_mut()
            .and_then(|r| r.remove(&self.table))
            .unwrap_or_default();
        let left = out
            .unprocessed_keys
            .as_mut()
            .and_then(|u| u.remove(&self.table))
            .filter(|k| !k.keys().is_empty());
        Ok((items, left))
    }
}

#[async_trait]
impl SessionStore for DynamoSessionStore {
    async fn check(&self, claims: &Claims) -> Result<SessionState, StoreError> {
        let key = |pk: String| HashMap::from([(PK.to_string(), s(pk))]);
        let keys = KeysAndAttributes::builder()
            .keys(key(user_pk(&claims.sub)))
            .keys(key(session_pk(&claims.jti)))
            .consistent_read(true)
            .projection_expression("#pk, #gen, #keep")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#gen", SESSION_GEN)
            .expression_attribute_names("#keep", SESSION_KEEP)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (mut items, left) = self.read(keys).await?;
        if let Some(left) = left {
            // DynamoDB may leave keys unprocessed under load: one more try, then fail closed.
            let (more, still) = self.read(left).await?;
            if still.is_some() {
                return Err(StoreError::Unavailable(
                    "batch read left keys unprocessed".into(),
                ));
            }
            items.extend(more);
        }
        let mut account = None;
        let mut denied = false;
        for item in &items {
            match text(item, PK) {
                Some(pk) if pk.starts_with("user#") => {
                    account = Some(AccountSessions {
                        session_gen: number(item, SESSION_GEN).unwrap_or(0),
                        session_keep: text(item, SESSION_KEEP),
                    });
                }
                Some(pk) if pk.starts_with("session#") => denied = true,
                _ => {}
            }
        }
        Ok(state(account.as_ref(), denied, claims))
    }
}

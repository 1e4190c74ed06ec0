//! Session liveness on the users table: the account's `user#<id>` item, which registration
//! writes and erasure deletes, and its optional `sessions_valid_after` attribute (epoch seconds).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{SessionState, SessionStore, state};
use crate::ratelimit::StoreError;
use crate::session::Claims;
use crate::store::dynamodb::{PK, number, unavailable};

/// The attribute of `user#<id>` that ends every session issued before it.
pub const SESSIONS_VALID_AFTER: &str = "sessions_valid_after";

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
}

#[async_trait]
impl SessionStore for DynamoSessionStore {
    async fn check(&self, claims: &Claims) -> Result<SessionState, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(HashMap::from([(
                PK.to_string(),
                AttributeValue::S(format!("user#{}", claims.sub)),
            )])))
            .projection_expression("#pk, #va")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#va", SESSIONS_VALID_AFTER)
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let account = out
            .item()
            .map(|item| number(item, SESSIONS_VALID_AFTER).unwrap_or(0));
        Ok(state(account, claims.iat))
    }
}

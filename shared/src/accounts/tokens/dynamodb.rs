//! One-time tokens on the users table, one item per token:
//!
//! - `token#<hex sha256(token)>`: `purpose` (`verify` | `reset`), `expires_at` (epoch seconds,
//!   also the table's TTL attribute), and the grant: `email`, `password_hash` and an optional
//!   `name` (verify), or `user_id` and `email` (reset).
//!
//! Consuming is one `DeleteItem` conditioned on the purpose and on `expires_at > now`, with
//! `ReturnValues = ALL_OLD`: the delete that succeeds is the one consumer that gets the grant.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{Grant, PendingRegistration, Purpose, ResetGrant, TokenStore, token_hash, well_formed};
use crate::ratelimit::StoreError;
use crate::store::dynamodb::{PK, TTL_ATTRIBUTE, n, s, text, unavailable};

/// One-time tokens on a DynamoDB table (the users table).
#[derive(Debug, Clone)]
pub struct DynamoTokenStore {
    client: Client,
    table: String,
}

impl DynamoTokenStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn token_pk(hash: &str) -> String {
    format!("token#{hash}")
}

fn to_item(hash: &str, grant: &Grant, expires_at_s: u64) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (PK.to_string(), s(token_pk(hash))),
        ("purpose".to_string(), s(grant.purpose().as_str())),
        (TTL_ATTRIBUTE.to_string(), n(expires_at_s)),
    ]);
    match grant {
        Grant::Verify(p) => {
            item.insert("email".into(), s(&p.email));
            item.insert("password_hash".into(), s(&p.password_hash));
            if let Some(name) = &p.name {
                item.insert("name".into(), s(name));
            }
        }
        Grant::Reset(r) => {
            item.insert("email".into(), s(&r.email));
            item.insert("user_id".into(), s(&r.user_id));
        }
    }
    item
}

fn to_grant(item: &HashMap<String, AttributeValue>) -> Option<Grant> {
    match text(item, "purpose")?.as_str() {
        "verify" => Some(Grant::Verify(PendingRegistration {
            email: text(item, "email")?,
            name: text(item, "name"),
            password_hash: text(item, "password_hash")?,
        })),
        "reset" => Some(Grant::Reset(ResetGrant {
            user_id: text(item, "user_id")?,
            email: text(item, "email")?,
        })),
        _ => None,
    }
}

#[async_trait]
impl TokenStore for DynamoTokenStore {
    async fn put(&self, hash: &str, grant: &Grant, expires_at_s: u64) -> Result<(), StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(hash, grant, expires_at_s)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Err(StoreError::Unavailable("token hash already stored".into()))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn consume(
        &self,
        token: &str,
        purpose: Purpose,
        now_s: u64,
    ) -> Result<Option<Grant>, StoreError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(token_pk(&token_hash(token))))
            .condition_expression("attribute_exists(#pk) AND #p = :p AND #exp > :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#p", "purpose")
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":p", s(purpose.as_str()))
            .expression_attribute_values(":now", n(now_s))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .attributes()
                .and_then(to_grant)
                .filter(|g| g.purpose() == purpose)),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), DeleteItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_grants_when_mapped_to_items_and_back_then_equal_and_keyed_by_hash_only() {
        for grant in [
            Grant::Verify(PendingRegistration {
                email: "a@example.com".into(),
                name: None,
                password_hash: "h".into(),
            }),
            Grant::Verify(PendingRegistration {
                email: "a@example.com".into(),
                name: Some("A".into()),
                password_hash: "h".into(),
            }),
            Grant::Reset(ResetGrant {
                user_id: "u".into(),
                email: "a@example.com".into(),
            }),
        ] {
            let item = to_item("abc", &grant, 9);
            assert_eq!(text(&item, PK).as_deref(), Some("token#abc"));
            assert_eq!(to_grant(&item), Some(grant));
        }
    }
}

//! The event ledger on a DynamoDB table keyed by `pk`:
//!
//! - `event#<evt id>`: `state` (`processing` with `lease_until`, or `completed`), kept 30 days
//!   through the TTL attribute;
//! - `payment#<pi id>`: user, amount, currency, status, the last event applied and its time.
//!
//! Claims are conditional puts that return the old item on conflict, so a repeat costs one
//! request; payment updates are conditional on the event being new and not older than the
//! last one applied, so a retried or reordered delivery never applies twice or goes back.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::{Claim, EventLedger, PaymentRecord, PaymentUpdate};
use crate::ratelimit::StoreError;
use crate::store::dynamodb::{PK, TTL_ATTRIBUTE, n, number, s, text, unavailable};

/// The ledger on a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    /// A ledger on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl EventLedger for DynamoLedger {
    async fn claim(
        &self,
        event_id: &str,
        now_s: u64,
        lease_s: u64,
        keep_s: u64,
    ) -> Result<Claim, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(format!("event#{event_id}")))
            .item("state", s("processing"))
            .item("lease_until", n(now_s + lease_s))
            .item(TTL_ATTRIBUTE, n(now_s + keep_s))
            .condition_expression(
                "attribute_not_exists(#pk) OR (#state = :processing AND #lease < :now)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":processing", s("processing"))
            .expression_attribute_values(":now", n(now_s))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Acquired),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let old = match e.err() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item().cloned(),
                    _ => None,
                };
                let old = old.unwrap_or_default();
                if text(&old, "state").as_deref() == Some("completed") {
                    Ok(Claim::Completed)
                } else {
                    let lease = number(&old, "lease_until").unwrap_or(now_s + 1);
                    Ok(Claim::InProgress {
                        retry_after: lease.saturating_sub(now_s).max(1),
                    })
                }
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn apply_payment(&self, u: &PaymentUpdate) -> Result<bool, StoreError> {
        let mut set = vec![
            "amount = :amount",
            "currency = :currency",
            "#status = :status",
            "last_event_id = :evt",
            "last_event_created = :created",
        ];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(format!("payment#{}", u.intent_id)))
            .condition_expression(
                "attribute_not_exists(#pk) OR (last_event_id <> :evt AND last_event_created <= :created)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":amount", n(u.amount))
            .expression_attribute_values(":currency", s(&u.currency))
            .expression_attribute_values(":status", s(&u.status))
            .expression_attribute_values(":evt", s(&u.event_id))
            .expression_attribute_values(":created", n(u.event_created))
            .expression_attribute_values(":one", n(1));
        if let Some(user) = &u.user_id {
            set.push("user_id = :user");
            req = req.expression_attribute_values(":user", s(user));
        }
        let expr = format!("SET {} ADD updates :one", set.join(", "));
        match req.update_expression(expr).send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn complete(&self, event_id: &str, now_s: u64) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(format!("event#{event_id}")))
            .update_expression("SET #state = :completed, completed_at = :now REMOVE lease_until")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":completed", s("completed"))
            .expression_attribute_values(":now", n(now_s))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn payment(&self, intent_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(format!("payment#{intent_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item().map(|i| PaymentRecord {
            update: PaymentUpdate {
                intent_id: intent_id.to_string(),
                user_id: text(i, "user_id"),
                amount: number(i, "amount").unwrap_or(0) as i64,
                currency: text(i, "currency").unwrap_or_default(),
                status: text(i, "status").unwrap_or_default(),
                event_id: text(i, "last_event_id").unwrap_or_default(),
                event_created: number(i, "last_event_created").unwrap_or(0),
            },
            updates: number(i, "updates").unwrap_or(0),
        }))
    }
}

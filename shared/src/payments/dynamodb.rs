//! The event ledger on a DynamoDB table keyed by `pk`:
//!
//! - `event#<evt id>`: `state` (`processing` with `lease_until`, or `completed`), kept 30 days
//!   through the TTL attribute;
//! - `payment#<pi id>`: user and `owner` (`user#<id>`, indexed by `by_owner`), amount,
//!   currency, status with its rank, refunded amount, the last event applied and its time;
//!   after the user's erasure, `erased_at`, and user and owner replaced by `erased`;
//! - `stripe-customer-deletion#<cus id>`: a Stripe customer whose deletion is still to be
//!   retried (owner [`PENDING_OWNER`]).
//!
//! Claims are conditional puts that return the old item on conflict, so a repeat costs one
//! request. A payment's status is written only if the event's rank is higher than the stored
//! one ([`super::state`]), its refunded amount only if higher, so retried or reordered
//! deliveries converge to one record and never go back.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{Claim, EventLedger, PaymentRecord, PaymentUpdate};
use crate::ratelimit::StoreError;
use crate::store::dynamodb::{PK, TTL_ATTRIBUTE, n, number, s, text, unavailable};

/// The attribute of the owner index: `user#<id>` on payment records, [`PENDING_OWNER`] on
/// pending Stripe deletions.
pub const OWNER: &str = "owner";
/// The global secondary index on [`OWNER`] (template.yaml `PaymentsTable`).
pub const OWNER_INDEX: &str = "by_owner";
/// The owner of pending Stripe customer deletions.
pub const PENDING_OWNER: &str = "pending#stripe-customer-deletion";
const PENDING_PREFIX: &str = "stripe-customer-deletion#";
/// What erasure leaves in `user_id` and `owner` instead of the user: present, so that a late
/// event's `if_not_exists` never links the user again; no user id is this word (ids are UUIDs).
const ERASED: &str = "erased";

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
        let key = s(format!("payment#{}", u.intent_id));
        let t = &u.transition;
        // What the event says apart from the status: the same in every event that says it, so
        // always written. A user is linked only if none was (erasure leaves ERASED behind).
        let mut facts = Vec::new();
        if u.facts.is_some() {
            facts.push("amount = :amount, currency = :currency");
        }
        if u.user_id.is_some() {
            facts.push(
                "user_id = if_not_exists(user_id, :user), #owner = if_not_exists(#owner, :owner)",
            );
        }
        let with_facts = |mut req: UpdateItemFluentBuilder| {
            if let Some(f) = &u.facts {
                req = req
                    .expression_attribute_values(":amount", n(f.amount))
                    .expression_attribute_values(":currency", s(&f.currency));
            }
            if let Some(user) = &u.user_id {
                req = req
                    .expression_attribute_names("#owner", OWNER)
                    .expression_attribute_values(":user", s(user))
                    .expression_attribute_values(":owner", s(owner_of(user)));
            }
            req
        };
        // The status, with the facts in the same write so a reader never sees one without the
        // other, only if the event ranks higher than what is stored.
        let mut set = vec![
            "#status = :status, #rank = :rank, last_event_id = :evt, last_event_created = :created",
        ];
        set.extend(facts.iter().copied());
        if t.refunded_amount > 0 {
            // A refund that advances the status is above every refunded amount stored before.
            set.push("refunded_amount = :r");
        }
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, key.clone())
            .update_expression(format!("SET {} ADD updates :one", set.join(", ")))
            .condition_expression("attribute_not_exists(#rank) OR #rank < :rank")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#rank", "status_rank")
            .expression_attribute_values(":status", s(t.status.as_str()))
            .expression_attribute_values(":rank", n(t.rank()))
            .expression_attribute_values(":evt", s(&u.event_id))
            .expression_attribute_values(":created", n(t.event_created))
            .expression_attribute_values(":one", n(1));
        if t.refunded_amount > 0 {
            req = req.expression_attribute_values(":r", n(t.refunded_amount));
        }
        let advanced = refused_is_ok(with_facts(req).send().await.map(|_| ()))?;
        if advanced {
            return Ok(true);
        }
        // A higher-ranked event came first: its record still gets this event's facts and the
        // higher refunded amount, so every delivery order ends in the same record.
        if !facts.is_empty() {
            let req = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, key.clone())
                .update_expression(format!("SET {}", facts.join(", ")));
            with_facts(req).send().await.map_err(unavailable)?;
        }
        if t.refunded_amount > 0 {
            let refund = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, key)
                .update_expression("SET refunded_amount = :r")
                .condition_expression(
                    "attribute_not_exists(refunded_amount) OR refunded_amount < :r",
                )
                .expression_attribute_values(":r", n(t.refunded_amount))
                .send()
                .await;
            refused_is_ok(refund.map(|_| ()))?;
        }
        Ok(false)
    }

    async fn record_owner(&self, intent_id: &str, user_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(format!("payment#{intent_id}")))
            .update_expression(
                "SET user_id = if_not_exists(user_id, :user), #owner = if_not_exists(#owner, :owner)",
            )
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(":user", s(user_id))
            .expression_attribute_values(":owner", s(owner_of(user_id)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
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
            intent_id: intent_id.to_string(),
            user_id: text(i, "user_id").filter(|u| u != ERASED),
            amount: signed(i, "amount"),
            currency: text(i, "currency"),
            status: text(i, "status").unwrap_or_default(),
            rank: number(i, "status_rank").unwrap_or(0),
            refunded_amount: signed(i, "refunded_amount").unwrap_or(0),
            last_event_id: text(i, "last_event_id").unwrap_or_default(),
            last_event_created: number(i, "last_event_created").unwrap_or(0),
            erased_at: number(i, "erased_at"),
            updates: number(i, "updates").unwrap_or(0),
        }))
    }

    async fn pseudonymise_user(&self, user_id: &str, now_s: u64) -> Result<u64, StoreError> {
        let mut changed = 0;
        for pk in self.by_owner(&owner_of(user_id), None).await? {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(pk))
                .update_expression("SET erased_at = :now, user_id = :erased, #owner = :erased")
                .condition_expression("attribute_exists(#pk) AND user_id = :user")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_values(":now", n(now_s))
                .expression_attribute_values(":erased", s(ERASED))
                .expression_attribute_values(":user", s(user_id))
                .send()
                .await;
            if refused_is_ok(result.map(|_| ()))? {
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn add_pending_deletion(&self, customer_id: &str, now_s: u64) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(format!("{PENDING_PREFIX}{customer_id}")))
            .item(OWNER, s(PENDING_OWNER))
            .item("customer_id", s(customer_id))
            .item("since", n(now_s))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn pending_deletions(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .by_owner(PENDING_OWNER, Some(limit))
            .await?
            .into_iter()
            .filter_map(|pk| pk.strip_prefix(PENDING_PREFIX).map(str::to_string))
            .collect())
    }

    async fn remove_pending_deletion(&self, customer_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(format!("{PENDING_PREFIX}{customer_id}")))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl DynamoLedger {
    /// The keys of the items of `owner` in the owner index, every page or up to `limit`.
    async fn by_owner(&self, owner: &str, limit: Option<usize>) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OWNER_INDEX)
                .key_condition_expression("#owner = :owner")
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_values(":owner", s(owner))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            keys.extend(out.items().iter().filter_map(|i| text(i, PK)));
            if limit.is_some_and(|l| keys.len() >= l) {
                keys.truncate(limit.unwrap_or(usize::MAX));
                return Ok(keys);
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(keys),
            }
        }
    }
}

fn owner_of(user_id: &str) -> String {
    format!("user#{user_id}")
}

fn signed(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// `Ok(true)` if the write happened, `Ok(false)` if its condition refused it.
fn refused_is_ok(result: Result<(), SdkError<UpdateItemError>>) -> Result<bool, StoreError> {
    match result {
        Ok(()) => Ok(true),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
        {
            Ok(false)
        }
        Err(e) => Err(unavailable(e)),
    }
}

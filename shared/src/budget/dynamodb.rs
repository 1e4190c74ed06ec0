//! The budget counters in a DynamoDB table keyed by `pk` (the rate-limit table): one
//! `TransactWriteItems` per reservation and per settlement, so the account's and the service's
//! counters always move together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use super::{BudgetStore, ReserveOutcome};
use crate::ratelimit::StoreError;
use crate::store::dynamodb::{PK, TTL_ATTRIBUTE, unavailable};

const USED: &str = "tokens_used";

/// Tries of a transaction cancelled by a conflicting one.
const CONFLICT_TRIES: u32 = 4;

async fn backoff(attempt: u32) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 20;
    tokio::time::sleep(std::time::Duration::from_millis(
        10 * (1 << attempt) + jitter,
    ))
    .await;
}

/// Budget counters on a DynamoDB table.
#[derive(Debug)]
pub struct DynamoBudgetStore {
    client: Client,
    table: String,
    requests: AtomicU64,
}

impl DynamoBudgetStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            requests: AtomicU64::new(0),
        }
    }

    /// Writes `items` in one transaction. The service counter is one hot item: a transaction
    /// overlapping another on it is cancelled with `TransactionConflict`, which is retried
    /// with jitter, never a verdict. Any other cancellation returns its reasons' codes.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<String>>, StoreError> {
        let mut attempt = 0;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let reasons: Vec<String> = match result {
                Ok(_) => return Ok(Ok(())),
                Err(SdkError::ServiceError(e)) => match e.err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None").to_string())
                        .collect(),
                    _ => return Err(unavailable(SdkError::ServiceError(e))),
                },
                Err(err) => return Err(unavailable(err)),
            };
            attempt += 1;
            let conflicted = reasons.iter().any(|c| c == "TransactionConflict")
                && !reasons.iter().any(|c| c == "ConditionalCheckFailed");
            if !conflicted || attempt == CONFLICT_TRIES {
                return Ok(Err(reasons));
            }
            backoff(attempt - 1).await;
        }
    }

    fn update(
        &self,
        key: &str,
        amount: AttributeValue,
        expires_at_s: u64,
        limit: Option<u64>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut names = HashMap::from([
            ("#used".to_string(), USED.to_string()),
            ("#exp".to_string(), TTL_ATTRIBUTE.to_string()),
        ]);
        let mut values = HashMap::from([
            (":amount".to_string(), amount),
            (
                ":exp".to_string(),
                AttributeValue::N(expires_at_s.to_string()),
            ),
        ]);
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.to_string()))
            .update_expression("ADD #used :amount SET #exp = :exp");
        if let Some(limit) = limit {
            values.insert(":limit".into(), AttributeValue::N(limit.to_string()));
            update = update.condition_expression("attribute_not_exists(#used) OR #used < :limit");
        }
        names.shrink_to_fit();
        let update = update
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

#[async_trait]
impl BudgetStore for DynamoBudgetStore {
    async fn reserve(
        &self,
        counters: &[(String, u64)],
        amount: u64,
        expires_at_s: u64,
    ) -> Result<ReserveOutcome, StoreError> {
        let items = counters
            .iter()
            .map(|(key, limit)| {
                self.update(
                    key,
                    AttributeValue::N(amount.to_string()),
                    expires_at_s,
                    Some(*limit),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        match self.transact(items).await? {
            Ok(()) => Ok(ReserveOutcome::Reserved),
            Err(reasons) => match reasons.iter().position(|c| c == "ConditionalCheckFailed") {
                Some(i) => Ok(ReserveOutcome::Refused(i)),
                None => Err(StoreError::Unavailable(
                    "budget transaction cancelled without a verdict".into(),
                )),
            },
        }
    }

    async fn adjust(
        &self,
        keys: &[String],
        delta: i64,
        expires_at_s: u64,
    ) -> Result<(), StoreError> {
        let items = keys
            .iter()
            .map(|key| {
                self.update(
                    key,
                    AttributeValue::N(delta.to_string()),
                    expires_at_s,
                    None,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::Unavailable(
                "budget settlement cancelled".into(),
            )),
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

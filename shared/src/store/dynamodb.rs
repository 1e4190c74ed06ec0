//! DynamoDB stores and client construction.
//!
//! Counter items live in one table keyed by `pk` (string). Each [`CounterUpdate`] becomes one
//! conditional `UpdateItem` with `ReturnValues = ALL_NEW` and
//! `ReturnValuesOnConditionCheckFailure = ALL_OLD`, so a refused condition costs no second read.
//! Expressions use attribute names and values only; nothing from a request is spliced in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::BehaviorVersion;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use crate::ratelimit::window::{CounterItem, CounterUpdate, SLOTS, Step, Window};
use crate::ratelimit::{RateLimitStore, StoreError, UpdateOutcome};

/// The partition key attribute of every table.
pub const PK: &str = "pk";
/// The TTL attribute of every table.
pub const TTL_ATTRIBUTE: &str = "expires_at";
const BLOCKED: &str = "blocked_until";

/// A DynamoDB client from the environment, with every operation bounded by `timeout` and at
/// most one retry, so a slow or unreachable table fails fast instead of holding the function
/// until its own timeout.
///
/// Region and credentials come from the environment only, which is where Lambda puts them
/// (`AWS_REGION`, and the execution role's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), through `aws-config`'s environment providers;
/// `AWS_ENDPOINT_URL_DYNAMODB` (else `AWS_ENDPOINT_URL`) points the client at a local DynamoDB.
/// `aws-config`'s loader and default provider chains are not used: on Lambda they end at the
/// same variables, and they add profile files, IMDS, STS and SSO code to every binary (0.8 MB
/// here; see BENCHMARKS.md).
pub async fn client(timeout: Duration) -> Client {
    let mut config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(crate::aws::region().await)
        .credentials_provider(crate::aws::credentials())
        .timeout_config(crate::aws::timeouts(timeout))
        .retry_config(crate::aws::retries());
    if let Some(url) = crate::aws::endpoint("AWS_ENDPOINT_URL_DYNAMODB") {
        config = config.endpoint_url(url);
    }
    Client::from_conf(config.build())
}

/// The rate-limit store on a DynamoDB table.
#[derive(Debug)]
pub struct DynamoRateLimitStore {
    client: Client,
    table: String,
    requests: AtomicU64,
}

impl DynamoRateLimitStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            requests: AtomicU64::new(0),
        }
    }
}

/// A string attribute.
pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A string attribute of an item.
pub(crate) fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

/// A whole-number attribute of an item.
pub(crate) fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn names(slot: usize) -> [String; 3] {
    [
        format!("w{slot}i"),
        format!("w{slot}c"),
        format!("w{slot}p"),
    ]
}

/// The expressions of one update: (update, condition, names, values).
fn expressions(
    update: &CounterUpdate,
) -> (
    String,
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let mut sets = vec!["#ttl = :ttl".to_string()];
    let mut conds = vec!["(attribute_not_exists(#blk) OR #blk <= :now)".to_string()];
    let mut names_map = HashMap::from([
        ("#ttl".to_string(), TTL_ATTRIBUTE.to_string()),
        ("#blk".to_string(), BLOCKED.to_string()),
    ]);
    let mut values = HashMap::from([
        (":ttl".to_string(), n(update.expires_at_s)),
        (":now".to_string(), n(update.now_s)),
        (":one".to_string(), n(1)),
    ]);
    for (slot, step) in update.steps.iter().enumerate() {
        let Some(step) = step else { continue };
        let [wi, wc, wp] = names(slot);
        let (i, c, p) = (
            format!("#i{slot}"),
            format!("#c{slot}"),
            format!("#p{slot}"),
        );
        names_map.insert(i.clone(), wi);
        names_map.insert(c.clone(), wc);
        names_map.insert(p.clone(), wp);
        match *step {
            Step::Increment {
                index,
                previous,
                below,
            } => {
                sets.push(format!("{c} = {c} + :one"));
                conds.push(format!(
                    "{i} = :idx{slot} AND {p} = :prev{slot} AND {c} < :below{slot}"
                ));
                values.insert(format!(":idx{slot}"), n(index));
                values.insert(format!(":prev{slot}"), n(previous));
                values.insert(format!(":below{slot}"), n(below));
            }
            Step::Roll {
                from,
                index,
                max_current,
            } => {
                sets.push(format!("{p} = {c}, {c} = :one, {i} = :idx{slot}"));
                conds.push(format!("{i} = :from{slot} AND {c} <= :max{slot}"));
                values.insert(format!(":idx{slot}"), n(index));
                values.insert(format!(":from{slot}"), n(from));
                values.insert(format!(":max{slot}"), n(max_current));
            }
            Step::Start { before, index } => {
                sets.push(format!("{p} = :zero, {c} = :one, {i} = :idx{slot}"));
                conds.push(format!(
                    "(attribute_not_exists({i}) OR {i} < :before{slot})"
                ));
                values.insert(format!(":idx{slot}"), n(index));
                values.insert(format!(":before{slot}"), n(before));
                values.insert(":zero".to_string(), n(0));
            }
        }
    }
    (
        format!("SET {}", sets.join(", ")),
        conds.join(" AND "),
        names_map,
        values,
    )
}

/// Reads a counter item from DynamoDB attributes.
fn from_item(item: &HashMap<String, AttributeValue>) -> CounterItem {
    let mut out = CounterItem {
        blocked_until_s: number(item, BLOCKED),
        ..Default::default()
    };
    for slot in 0..SLOTS {
        let [wi, wc, wp] = names(slot);
        if let Some(index) = number(item, &wi) {
            out.windows[slot] = Some(Window {
                index,
                current: number(item, &wc).unwrap_or(0) as u32,
                previous: number(item, &wp).unwrap_or(0) as u32,
            });
        }
    }
    out
}

/// A store error from an SDK error: timeouts apart, the rest as text for the log.
pub(crate) fn unavailable<E: std::error::Error + 'static>(
    err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> StoreError {
    match err {
        SdkError::TimeoutError(_) => StoreError::Timeout,
        other => StoreError::Unavailable(DisplayErrorContext(other).to_string()),
    }
}

#[async_trait]
impl RateLimitStore for DynamoRateLimitStore {
    async fn apply(&self, key: &str, update: &CounterUpdate) -> Result<UpdateOutcome, StoreError> {
        let (set, condition, names, values) = expressions(update);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.to_string()))
            .update_expression(set)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(UpdateOutcome::Applied(
                out.attributes().map(from_item).unwrap_or_default(),
            )),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                let item = match e.err() {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item().map(from_item),
                    _ => None,
                };
                Ok(UpdateOutcome::ConditionFailed(item))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn block(
        &self,
        keys: &[String],
        until_s: u64,
        expires_at_s: u64,
    ) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let update = Update::builder()
                .table_name(&self.table)
                .key(PK, AttributeValue::S(key.clone()))
                .update_expression("SET #blk = :until, #ttl = :ttl")
                .expression_attribute_names("#blk", BLOCKED)
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":until", n(until_s))
                .expression_attribute_values(":ttl", n(expires_at_s))
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

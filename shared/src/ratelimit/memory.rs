//! An in-memory [`RateLimitStore`] for unit tests and benchmarks. Functions use the DynamoDB
//! store; this one applies the same conditional updates under a mutex.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::window::{CounterItem, CounterUpdate};
use super::{RateLimitStore, StoreError, UpdateOutcome};

/// Counter items in a `HashMap`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<String, CounterItem>>,
    requests: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimitStore for MemoryStore {
    async fn apply(&self, key: &str, update: &CounterUpdate) -> Result<UpdateOutcome, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let current = items.get(key);
        if !update.holds(current) {
            return Ok(UpdateOutcome::ConditionFailed(current.copied()));
        }
        let next = update.apply(current);
        items.insert(key.to_string(), next);
        Ok(UpdateOutcome::Applied(next))
    }

    async fn block(
        &self,
        keys: &[String],
        until_s: u64,
        _expires_at_s: u64,
    ) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            items.entry(key.clone()).or_default().blocked_until_s = Some(until_s);
        }
        Ok(())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

//! An in-memory [`RateLimitStore`] for unit tests and benchmarks. Functions use the DynamoDB
//! store; this one applies the same conditional updates under a mutex.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::window::{CounterItem, CounterUpdate};
use super::{RateLimitStore, StoreError, UpdateOutcome};

/// Counter items in a `HashMap`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<String, CounterItem>>,
    requests: AtomicU64,
    failing: AtomicBool,
    delay: Mutex<Option<Duration>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call fail as an unreachable store would (for tests of the
    /// store-failure modes).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every later call wait `delay` (on the tokio clock) before answering, as a slow
    /// but reachable store would; `None` answers at once.
    pub fn set_delay(&self, delay: Option<Duration>) {
        *self.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    async fn arrive(&self) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let delay = *self.delay.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store set to fail".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl RateLimitStore for MemoryStore {
    async fn apply(&self, key: &str, update: &CounterUpdate) -> Result<UpdateOutcome, StoreError> {
        self.arrive().await?;
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
        self.arrive().await?;
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

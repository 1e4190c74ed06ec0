//! An in-memory [`BudgetStore`] for unit tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use super::{BudgetStore, ReserveOutcome};
use crate::ratelimit::StoreError;

/// Counters in memory; a switch makes every call fail.
#[derive(Debug, Default)]
pub struct MemoryBudgetStore {
    counters: Mutex<HashMap<String, i128>>,
    failing: AtomicBool,
    requests: AtomicU64,
}

impl MemoryBudgetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of `key`.
    pub fn used(&self, key: &str) -> i128 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Makes every call fail (`true`) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i128>> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store failing".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl BudgetStore for MemoryBudgetStore {
    async fn reserve(
        &self,
        counters: &[(String, u64)],
        amount: u64,
        _expires_at_s: u64,
    ) -> Result<ReserveOutcome, StoreError> {
        self.start()?;
        let mut map = self.lock();
        for (i, (key, limit)) in counters.iter().enumerate() {
            if map.get(key).copied().unwrap_or(0) >= i128::from(*limit) {
                return Ok(ReserveOutcome::Refused(i));
            }
        }
        for (key, _) in counters {
            *map.entry(key.clone()).or_insert(0) += i128::from(amount);
        }
        Ok(ReserveOutcome::Reserved)
    }

    async fn adjust(
        &self,
        keys: &[String],
        delta: i64,
        _expires_at_s: u64,
    ) -> Result<(), StoreError> {
        self.start()?;
        let mut map = self.lock();
        for key in keys {
            *map.entry(key.clone()).or_insert(0) += i128::from(delta);
        }
        Ok(())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

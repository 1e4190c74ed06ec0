//! An in-memory [`SecretSource`] for unit tests and benchmarks: values per secret and stage,
//! a switch that makes every read fail, and a count of reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use super::{SecretError, SecretSource, Stage};

/// Secrets held in memory.
#[derive(Debug, Default)]
pub struct MemorySecrets {
    values: Mutex<HashMap<String, (String, Option<String>)>>,
    failing: AtomicBool,
    reads: AtomicU64,
}

impl MemorySecrets {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` as the current version of `id`; the old current one becomes previous,
    /// as a finished rotation leaves them.
    pub fn rotate(&self, id: &str, value: &str) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let previous = values.get(id).map(|(current, _)| current.clone());
        values.insert(id.to_string(), (value.to_string(), previous));
    }

    /// Makes every read fail (`true`) or succeed again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Reads made so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretSource for MemorySecrets {
    async fn fetch(&self, id: &str, stage: Stage) -> Result<Option<String>, SecretError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(SecretError::Unavailable {
                id: id.to_string(),
                reason: "unreachable".into(),
            });
        }
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let Some((current, previous)) = values.get(id) else {
            return match stage {
                Stage::Current => Err(SecretError::NotFound { id: id.to_string() }),
                Stage::Previous => Ok(None),
            };
        };
        Ok(match stage {
            Stage::Current => Some(current.clone()),
            Stage::Previous => previous.clone(),
        })
    }
}

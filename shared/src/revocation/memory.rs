//! An in-memory [`SessionStore`] for unit tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{SessionState, SessionStore, state};
use crate::ratelimit::StoreError;
use crate::session::Claims;

/// Accounts and the instant their sessions are valid after.
#[derive(Debug, Default)]
pub struct MemorySessions {
    accounts: Mutex<HashMap<String, u64>>,
}

impl MemorySessions {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an account whose sessions are valid after `valid_after_s`.
    pub fn set(&self, user_id: &str, valid_after_s: u64) {
        self.lock().insert(user_id.to_string(), valid_after_s);
    }

    /// Removes an account (erasure).
    pub fn remove(&self, user_id: &str) {
        self.lock().remove(user_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn check(&self, claims: &Claims) -> Result<SessionState, StoreError> {
        Ok(state(self.lock().get(&claims.sub).copied(), claims.iat))
    }
}

//! An in-memory [`UserStore`] for unit tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Attempt, Failures, UserRecord, UserStore, failure_key};
use crate::ratelimit::StoreError;

/// Accounts in a `HashMap`.
#[derive(Debug, Default)]
pub struct MemoryUserStore {
    users: Mutex<HashMap<String, UserRecord>>,
    failures: Mutex<HashMap<String, Failures>>,
}

impl MemoryUserStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl UserStore for MemoryUserStore {
    async fn create(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.contains_key(&user.email) {
            return Ok(false);
        }
        users.insert(user.email.clone(), user.clone());
        Ok(true)
    }

    async fn lookup(&self, email: &str) -> Result<(Option<UserRecord>, Failures), StoreError> {
        let user = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(email)
            .cloned();
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&failure_key(email))
            .copied()
            .unwrap_or_default();
        Ok((user, failures))
    }

    async fn reserve_attempt(
        &self,
        email: &str,
        now_s: u64,
        max: u32,
        window_s: u64,
    ) -> Result<Attempt, StoreError> {
        let mut all = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let f = all.entry(failure_key(email)).or_default();
        if f.count == 0 || now_s >= f.since_s + window_s {
            *f = Failures {
                count: 1,
                since_s: now_s,
            };
        } else if f.count >= max {
            return Ok(Attempt::Throttled {
                retry_after: f.since_s + window_s - now_s,
            });
        } else {
            f.count += 1;
        }
        Ok(Attempt::Admitted(*f))
    }

    async fn clear_failures(&self, email: &str) -> Result<(), StoreError> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&failure_key(email));
        Ok(())
    }

    async fn update_hash(&self, email: &str, password_hash: &str) -> Result<(), StoreError> {
        if let Some(u) = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(email)
        {
            u.password_hash = password_hash.to_string();
        }
        Ok(())
    }

    async fn erase(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let email = users
            .values()
            .find(|u| u.user_id == user_id)
            .map(|u| u.email.clone());
        let Some(email) = email else { return Ok(false) };
        users.remove(&email);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&failure_key(&email));
        Ok(true)
    }
}

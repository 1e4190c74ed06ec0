//! An in-memory [`SessionStore`] for unit tests and benchmarks, whose state a test sets.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{AccountSessions, SessionState, SessionStore, state};
use crate::ratelimit::StoreError;
use crate::session::Claims;

/// Accounts' session states and ended sessions.
#[derive(Debug, Default)]
pub struct MemorySessions {
    accounts: Mutex<HashMap<String, AccountSessions>>,
    denied: Mutex<HashSet<String>>,
}

impl MemorySessions {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an account at session generation `session_gen`, keeping the session `keep`.
    pub fn set(&self, user_id: &str, session_gen: u64, keep: Option<&str>) {
        self.lock().insert(
            user_id.to_string(),
            AccountSessions {
                session_gen,
                session_keep: keep.map(str::to_string),
            },
        );
    }

    /// Ends the one session `jti` (logout).
    pub fn deny(&self, jti: &str) {
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti.to_string());
    }

    /// Removes an account (erasure).
    pub fn remove(&self, user_id: &str) {
        self.lock().remove(user_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AccountSessions>> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn check(&self, claims: &Claims) -> Result<SessionState, StoreError> {
        let account = self.lock().get(&claims.sub).cloned();
        let denied = self
            .denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&claims.jti);
        Ok(state(account.as_ref(), denied, claims))
    }
}

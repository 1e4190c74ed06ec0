//! An in-memory [`TokenStore`] for unit tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Grant, Purpose, TokenStore, token_hash, well_formed};
use crate::ratelimit::StoreError;

/// Grants in a `HashMap` keyed by token hash.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    grants: Mutex<HashMap<String, (Grant, u64)>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens stored and not consumed (expired ones included, as a TTL would leave them for a
    /// while).
    pub fn len(&self) -> usize {
        self.grants.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no token is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn put(&self, hash: &str, grant: &Grant, expires_at_s: u64) -> Result<(), StoreError> {
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        if grants.contains_key(hash) {
            return Err(StoreError::Unavailable("token hash already stored".into()));
        }
        grants.insert(hash.to_string(), (grant.clone(), expires_at_s));
        Ok(())
    }

    async fn consume(
        &self,
        token: &str,
        purpose: Purpose,
        now_s: u64,
    ) -> Result<Option<Grant>, StoreError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let hash = token_hash(token);
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        match grants.get(&hash) {
            Some((grant, expires)) if grant.purpose() == purpose && now_s < *expires => {
                Ok(grants.remove(&hash).map(|(g, _)| g))
            }
            _ => Ok(None),
        }
    }
}

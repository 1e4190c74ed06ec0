//! Accounts: normalised emails, the user store, password policy and hashing, and per-account
//! failed-login throttling.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod memory;
pub mod password;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::ratelimit::StoreError;

/// Trims and case-folds an email so that one address has one account.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The key of an email's failed-login counter: a hash, so that addresses of people without
/// an account are not stored.
pub fn failure_key(email: &str) -> String {
    hex::encode(Sha256::digest(normalize_email(email).as_bytes()))
}

/// A stored account.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user id (`sub` of access tokens).
    pub user_id: String,
    /// The normalised email.
    pub email: String,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// The display name, if given.
    pub name: Option<String>,
    /// Epoch seconds of registration.
    pub created_at: u64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Failed logins of one email within the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    /// Failures counted.
    pub count: u32,
    /// Epoch second of the first failure of the window.
    pub since_s: u64,
}

impl Failures {
    /// Seconds the account stays throttled at `now_s`, if `max` failures within `window_s`
    /// have been reached.
    pub fn throttled_for(&self, now_s: u64, max: u32, window_s: u64) -> Option<u64> {
        let ends = self.since_s + window_s;
        (self.count >= max && now_s < ends).then(|| ends - now_s)
    }
}

/// Where accounts live. Every method is one request to the backing service.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the account unless the email is taken (atomically); `Ok(false)` when taken.
    async fn create(&self, user: &UserRecord) -> Result<bool, StoreError>;

    /// The account of `email` (normalised) and its failed-login state, in one read.
    async fn lookup(&self, email: &str) -> Result<(Option<UserRecord>, Failures), StoreError>;

    /// Counts a failed login of `email` at `now_s`; a window older than `window_s` restarts.
    async fn record_failure(
        &self,
        email: &str,
        now_s: u64,
        window_s: u64,
    ) -> Result<Failures, StoreError>;

    /// Clears the failed-login state of `email` after a successful login.
    async fn clear_failures(&self, email: &str) -> Result<(), StoreError>;

    /// Replaces the password hash of `email` (rehash on login).
    async fn update_hash(&self, email: &str, password_hash: &str) -> Result<(), StoreError>;

    /// Erases the account of `user_id` and every item keyed to it; `Ok(false)` if there was
    /// none.
    async fn erase(&self, user_id: &str) -> Result<bool, StoreError>;
}

//! An in-memory [`UserStore`] for unit tests and benchmarks. It is also a [`SessionStore`], so
//! a test's pipeline sees the sessions its handlers end.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Attempt, EndSessions, Failures, UserRecord, UserStore, failure_key};
use crate::ratelimit::StoreError;
use crate::revocation::{AccountSessions, SessionState, SessionStore, state};
use crate::session::Claims;

#[derive(Debug, Clone)]
struct Account {
    user: UserRecord,
    keep: Option<String>,
}

/// Accounts in a `HashMap`.
#[derive(Debug, Default)]
pub struct MemoryUserStore {
    users: Mutex<HashMap<String, Account>>,
    failures: Mutex<HashMap<String, Failures>>,
    denied: Mutex<HashMap<String, u64>>,
}

impl MemoryUserStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, Account>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn by_id<'a>(
        users: &'a mut HashMap<String, Account>,
        user_id: &str,
    ) -> Option<&'a mut Account> {
        users.values_mut().find(|a| a.user.user_id == user_id)
    }
}

#[async_trait]
impl UserStore for MemoryUserStore {
    async fn create(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let mut users = self.users();
        if users.contains_key(&user.email) || users.values().any(|a| a.user.user_id == user.user_id)
        {
            return Ok(false);
        }
        users.insert(
            user.email.clone(),
            Account {
                user: user.clone(),
                keep: None,
            },
        );
        Ok(true)
    }

    async fn lookup(&self, email: &str) -> Result<(Option<UserRecord>, Failures), StoreError> {
        let user = self.users().get(email).map(|a| a.user.clone());
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&failure_key(email))
            .copied()
            .unwrap_or_default();
        Ok((user, failures))
    }

    async fn find(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(Self::by_id(&mut self.users(), user_id).map(|a| a.user.clone()))
    }

    async fn set_password(
        &self,
        user_id: &str,
        email: &str,
        password_hash: &str,
        end: EndSessions,
    ) -> Result<bool, StoreError> {
        let mut users = self.users();
        let Some(account) = users.get_mut(email).filter(|a| a.user.user_id == user_id) else {
            return Ok(false);
        };
        if let EndSessions::AllExcept {
            jti,
            generation,
            verified_hash,
        } = &end
        {
            let alive = *generation == account.user.session_gen
                || account.keep.as_deref() == Some(jti.as_str());
            if !alive || account.user.password_hash != *verified_hash {
                return Ok(false);
            }
        }
        account.user.password_hash = password_hash.to_string();
        account.user.session_gen += 1;
        account.keep = match end {
            EndSessions::All => None,
            EndSessions::AllExcept { jti, .. } => Some(jti),
        };
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&failure_key(email));
        Ok(true)
    }

    async fn end_all_sessions(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut users = self.users();
        let Some(account) = Self::by_id(&mut users, user_id) else {
            return Ok(false);
        };
        account.user.session_gen += 1;
        account.keep = None;
        Ok(true)
    }

    async fn end_session(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti.to_string(), exp);
        Ok(())
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

    async fn update_hash(
        &self,
        email: &str,
        old_hash: &str,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        if let Some(a) = self.users().get_mut(email)
            && a.user.password_hash == old_hash
        {
            a.user.password_hash = password_hash.to_string();
        }
        Ok(())
    }

    async fn erase(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut users = self.users();
        let email = Self::by_id(&mut users, user_id).map(|a| a.user.email.clone());
        let Some(email) = email else { return Ok(false) };
        users.remove(&email);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&failure_key(&email));
        Ok(true)
    }
}

#[async_trait]
impl SessionStore for MemoryUserStore {
    async fn check(&self, claims: &Claims) -> Result<SessionState, StoreError> {
        let account = Self::by_id(&mut self.users(), &claims.sub).map(|a| AccountSessions {
            session_gen: a.user.session_gen,
            session_keep: a.keep.clone(),
        });
        let denied = self
            .denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&claims.jti);
        Ok(state(account.as_ref(), denied, claims))
    }
}

//! Daily token budgets: a spend cap per account and for the whole service, per UTC day.
//!
//! Before a costly call (an AI completion), [`Budget::reserve`] charges its worst case (the
//! prompt's estimate plus the reply's `max_tokens`) to both the account's and the service's
//! counter for the day in one atomic step: either both counters take it, or neither does and the
//! call is refused. A counter already at or past its limit refuses; so every admitted call
//! started inside the budget, and the overshoot is bounded by the calls in flight. After the
//! call, [`Budget::settle`] corrects both counters to what was really used (the provider's
//! `usage`, or the estimate when it sends none), or refunds the reservation when nothing was
//! used. Counters live in the store until two days after their day ends.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Clock;
use crate::ratelimit::StoreError;

const DAY_SECS: u64 = 86_400;

/// The daily limits, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Tokens one account may use per UTC day.
    pub per_account: u64,
    /// Tokens the whole service may use per UTC day.
    pub service: u64,
    /// Tokens all accounts behind one client network (an IPv4 address, an IPv6 /64) may use per
    /// UTC day, so accounts registered in bulk from one place share one budget.
    pub per_network: u64,
}

/// Which budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's own daily budget.
    Account,
    /// The whole service's daily budget.
    Service,
    /// The daily budget of the caller's network.
    Network,
}

impl Scope {
    /// The scope's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Service => "service",
            Self::Network => "network",
        }
    }
}

/// What a store did with a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every counter took the amount.
    Reserved,
    /// The counter at this index of the request's keys was at or past its limit; no counter
    /// changed.
    Refused(usize),
}

/// Where the daily counters live.
#[async_trait]
pub trait BudgetStore: Send + Sync + std::fmt::Debug {
    /// Adds `amount` to every counter of `counters` (key and limit), all or none: none when any
    /// counter already holds its limit or more. Counters expire at `expires_at_s`.
    async fn reserve(
        &self,
        counters: &[(String, u64)],
        amount: u64,
        expires_at_s: u64,
    ) -> Result<ReserveOutcome, StoreError>;

    /// Adds `delta` (negative to refund) to every counter of `keys`, unconditionally.
    async fn adjust(
        &self,
        keys: &[String],
        delta: i64,
        expires_at_s: u64,
    ) -> Result<(), StoreError>;

    /// Requests made to the store so far, for tests and benchmarks.
    fn requests(&self) -> u64;
}

/// A refused reservation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    /// The budget of `scope` is spent until the next UTC day.
    #[error("{} budget spent", scope.as_str())]
    Exhausted {
        /// Which budget.
        scope: Scope,
        /// Seconds until the next UTC day.
        retry_after: u64,
    },
    /// The store failed: without it spend cannot be bounded, so the call is refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tokens charged to an account and the service for one call, until settled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "settle the reservation once the call has finished"]
pub struct Reservation {
    keys: Vec<String>,
    tokens: u64,
    expires_at_s: u64,
}

impl Reservation {
    /// The tokens reserved.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// The network a client address belongs to for budgets: the address itself for IPv4, its /64
/// for IPv6 (one subscriber's allocation), and `unknown` for anything else.
pub fn network_of(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => "unknown".into(),
    }
}

/// Daily token budgets on a store.
#[derive(Debug, Clone)]
pub struct Budget {
    store: Arc<dyn BudgetStore>,
    clock: Arc<dyn Clock>,
    policy: BudgetPolicy,
}

impl Budget {
    /// Budgets of `policy` on `store`.
    pub fn new(store: Arc<dyn BudgetStore>, clock: Arc<dyn Clock>, policy: BudgetPolicy) -> Self {
        Self {
            store,
            clock,
            policy,
        }
    }

    /// The policy.
    pub fn policy(&self) -> BudgetPolicy {
        self.policy
    }

    /// Seconds until the next UTC day.
    pub fn seconds_to_next_day(&self) -> u64 {
        DAY_SECS - self.clock.now_s() % DAY_SECS
    }

    /// Charges `tokens` to `account`, to the network of `client_ip` and to the service for
    /// today, or refuses.
    pub async fn reserve(
        &self,
        account: &str,
        client_ip: &str,
        tokens: u64,
    ) -> Result<Reservation, BudgetError> {
        let now = self.clock.now_s();
        let day = now / DAY_SECS;
        let expires_at_s = (day + 3) * DAY_SECS;
        let counters = [
            (format!("budget#service#{day}"), self.policy.service),
            (
                format!("budget#account#{day}#{account}"),
                self.policy.per_account,
            ),
            (
                format!("budget#net#{day}#{}", network_of(client_ip)),
                self.policy.per_network,
            ),
        ];
        match self.store.reserve(&counters, tokens, expires_at_s).await? {
            ReserveOutcome::Reserved => Ok(Reservation {
                keys: counters.into_iter().map(|(k, _)| k).collect(),
                tokens,
                expires_at_s,
            }),
            ReserveOutcome::Refused(i) => Err(BudgetError::Exhausted {
                scope: match i {
                    0 => Scope::Service,
                    1 => Scope::Account,
                    _ => Scope::Network,
                },
                retry_after: DAY_SECS - now % DAY_SECS,
            }),
        }
    }

    /// Replaces the reservation with the `used` tokens: refunds the difference, or charges the
    /// excess when the call used more than reserved. No request when they are equal.
    pub async fn settle(&self, reservation: Reservation, used: u64) -> Result<(), StoreError> {
        let delta = used as i128 - reservation.tokens as i128;
        if delta == 0 {
            return Ok(());
        }
        let delta = delta.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        self.store
            .adjust(&reservation.keys, delta, reservation.expires_at_s)
            .await
    }
}

#[cfg(test)]
mod tests;

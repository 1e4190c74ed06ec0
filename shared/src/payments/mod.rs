//! Payments: Stripe webhook signatures, the exactly-once event ledger, the payment state
//! machine ([`state`]), erasure of payment records and the server-owned Stripe customer of
//! each account ([`customers`]).

pub mod customers;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod memory;
pub mod signature;
pub mod state;
#[cfg(feature = "stripe")]
pub mod stripe;

use async_trait::async_trait;

use crate::ratelimit::StoreError;
pub use state::{PaymentStatus, Transition};

/// What a webhook delivery found when it claimed its event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This delivery processes the event (first time, or a crashed attempt's lease ran out).
    Acquired,
    /// The event was processed before.
    Completed,
    /// Another delivery is processing it now; try again after this many seconds.
    InProgress {
        /// Seconds until that delivery's lease ends.
        retry_after: u64,
    },
}

/// The facts of a payment that every event reporting them reports alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// What one webhook event says about a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentUpdate {
    /// The payment intent id (`pi_…`).
    pub intent_id: String,
    /// The user id from the intent's metadata, if the event carries it.
    pub user_id: Option<String>,
    /// Amount and currency, if the event carries the intent's or the charge's.
    pub facts: Option<PaymentFacts>,
    /// The status the event reports and what orders it.
    pub transition: Transition,
    /// The event that reported it.
    pub event_id: String,
}

/// A stored payment record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentRecord {
    /// The payment intent id.
    pub intent_id: String,
    /// The paying user; `None` once the user's account is erased.
    pub user_id: Option<String>,
    /// Amount in minor units, once an event reported it.
    pub amount: Option<i64>,
    /// ISO currency code, once an event reported it.
    pub currency: Option<String>,
    /// The status of the highest-ranked event applied.
    pub status: String,
    /// That event's rank ([`Transition::rank`]).
    pub rank: u64,
    /// The highest refunded amount reported.
    pub refunded_amount: i64,
    /// The highest-ranked event applied.
    pub last_event_id: String,
    /// Its `created` time.
    pub last_event_created: u64,
    /// When the user's account was erased (epoch seconds), if it was.
    pub erased_at: Option<u64>,
    /// How many events changed the status.
    pub updates: u64,
}

/// Where webhook events, payment records and pending Stripe deletions live.
#[async_trait]
pub trait EventLedger: Send + Sync {
    /// Claims `event_id` for processing with a lease of `lease_s` seconds; the claim is kept
    /// for `keep_s` seconds (the table's TTL) so repeats are recognised for that long.
    async fn claim(
        &self,
        event_id: &str,
        now_s: u64,
        lease_s: u64,
        keep_s: u64,
    ) -> Result<Claim, StoreError>;

    /// Applies a payment update: the facts and the user always (they never differ between
    /// events), the status only if its rank is higher than the record's, the refunded amount
    /// only if it is higher. Returns whether the status changed.
    async fn apply_payment(&self, update: &PaymentUpdate) -> Result<bool, StoreError>;

    /// Links intent `intent_id` to its paying user when the intent is created, before any
    /// event: a record that exists when the account is erased is pseudonymised, so a late
    /// event (a retry, a slow payment method, a payment confirmed after the erasure) can never
    /// link the user again. Keeps a user already linked (or `erased`).
    async fn record_owner(&self, intent_id: &str, user_id: &str) -> Result<(), StoreError>;

    /// Marks `event_id` processed.
    async fn complete(&self, event_id: &str, now_s: u64) -> Result<(), StoreError>;

    /// The payment record of an intent.
    async fn payment(&self, intent_id: &str) -> Result<Option<PaymentRecord>, StoreError>;

    /// Pseudonymises every payment record of `user_id` (drops the user id, keeps amount,
    /// currency, status and dates, records `erased_at`); returns how many it changed.
    async fn pseudonymise_user(&self, user_id: &str, now_s: u64) -> Result<u64, StoreError>;

    /// Records that Stripe customer `customer_id` still has to be deleted.
    async fn add_pending_deletion(&self, customer_id: &str, now_s: u64) -> Result<(), StoreError>;

    /// Up to `limit` Stripe customers still to be deleted.
    async fn pending_deletions(&self, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Forgets a pending deletion once Stripe confirmed it.
    async fn remove_pending_deletion(&self, customer_id: &str) -> Result<(), StoreError>;
}

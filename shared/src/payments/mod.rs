//! Payments: Stripe webhook signatures and the exactly-once event ledger.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod memory;
pub mod signature;

use async_trait::async_trait;

use crate::ratelimit::StoreError;

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

/// A payment intent's state as a webhook event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentUpdate {
    /// The payment intent id (`pi_…`).
    pub intent_id: String,
    /// The user id from the intent's metadata, if present.
    pub user_id: Option<String>,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
    /// The intent's status (`succeeded`, `requires_payment_method`, `canceled`…).
    pub status: String,
    /// The event that reported it.
    pub event_id: String,
    /// The event's `created` time, so that an older event never overwrites a newer one.
    pub event_created: u64,
}

/// A stored payment record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// The latest state.
    pub update: PaymentUpdate,
    /// How many events changed the record.
    pub updates: u64,
}

/// Where webhook events and payment records live.
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

    /// Applies a payment update unless this event was applied already or a newer event was;
    /// returns whether it changed the record.
    async fn apply_payment(&self, update: &PaymentUpdate) -> Result<bool, StoreError>;

    /// Marks `event_id` processed.
    async fn complete(&self, event_id: &str, now_s: u64) -> Result<(), StoreError>;

    /// The payment record of an intent.
    async fn payment(&self, intent_id: &str) -> Result<Option<PaymentRecord>, StoreError>;
}

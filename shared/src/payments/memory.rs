//! An in-memory [`EventLedger`] for unit tests and benchmarks, with the DynamoDB ledger's
//! semantics.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Claim, EventLedger, PaymentRecord, PaymentUpdate};
use crate::ratelimit::StoreError;

#[derive(Debug, Clone, Copy)]
enum State {
    Processing { lease_until: u64 },
    Completed,
}

/// Events, payments and pending deletions in maps.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    events: Mutex<HashMap<String, State>>,
    payments: Mutex<HashMap<String, PaymentRecord>>,
    pending: Mutex<BTreeMap<String, u64>>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventLedger for MemoryLedger {
    async fn claim(
        &self,
        event_id: &str,
        now_s: u64,
        lease_s: u64,
        _keep_s: u64,
    ) -> Result<Claim, StoreError> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        match events.get(event_id) {
            Some(State::Completed) => Ok(Claim::Completed),
            // As in DynamoDB: the lease holds through its last second.
            Some(State::Processing { lease_until }) if *lease_until >= now_s => {
                Ok(Claim::InProgress {
                    retry_after: (lease_until - now_s).max(1),
                })
            }
            _ => {
                events.insert(
                    event_id.to_string(),
                    State::Processing {
                        lease_until: now_s + lease_s,
                    },
                );
                Ok(Claim::Acquired)
            }
        }
    }

    async fn apply_payment(&self, u: &PaymentUpdate) -> Result<bool, StoreError> {
        let mut payments = self.payments.lock().unwrap_or_else(|p| p.into_inner());
        let r = payments
            .entry(u.intent_id.clone())
            .or_insert_with(|| PaymentRecord {
                intent_id: u.intent_id.clone(),
                ..PaymentRecord::default()
            });
        if let Some(f) = &u.facts {
            r.amount = Some(f.amount);
            r.currency = Some(f.currency.clone());
        }
        if r.user_id.is_none()
            && r.erased_at.is_none()
            && let Some(user) = &u.user_id
        {
            r.user_id = Some(user.clone());
        }
        let advanced = u.transition.advances((r.updates > 0).then_some(r.rank));
        if advanced {
            r.status = u.transition.status.as_str().to_string();
            r.rank = u.transition.rank();
            r.last_event_id = u.event_id.clone();
            r.last_event_created = u.transition.event_created;
            r.updates += 1;
        }
        r.refunded_amount = r.refunded_amount.max(u.transition.refunded_amount);
        Ok(advanced)
    }

    async fn record_owner(&self, intent_id: &str, user_id: &str) -> Result<(), StoreError> {
        let mut payments = self.payments.lock().unwrap_or_else(|p| p.into_inner());
        let r = payments
            .entry(intent_id.to_string())
            .or_insert_with(|| PaymentRecord {
                intent_id: intent_id.to_string(),
                ..PaymentRecord::default()
            });
        if r.user_id.is_none() && r.erased_at.is_none() {
            r.user_id = Some(user_id.to_string());
        }
        Ok(())
    }

    async fn complete(&self, event_id: &str, _now_s: u64) -> Result<(), StoreError> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(event_id.to_string(), State::Completed);
        Ok(())
    }

    async fn payment(&self, intent_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        Ok(self
            .payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(intent_id)
            .cloned())
    }

    async fn pseudonymise_user(&self, user_id: &str, now_s: u64) -> Result<u64, StoreError> {
        let mut changed = 0;
        for r in self
            .payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            if r.user_id.as_deref() == Some(user_id) {
                r.user_id = None;
                r.erased_at = Some(now_s);
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn add_pending_deletion(&self, customer_id: &str, now_s: u64) -> Result<(), StoreError> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(customer_id.to_string())
            .or_insert(now_s);
        Ok(())
    }

    async fn pending_deletions(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn remove_pending_deletion(&self, customer_id: &str) -> Result<(), StoreError> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(customer_id);
        Ok(())
    }
}

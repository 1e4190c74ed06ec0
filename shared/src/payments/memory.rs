//! An in-memory [`EventLedger`] for unit tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Claim, EventLedger, PaymentRecord, PaymentUpdate};
use crate::ratelimit::StoreError;

#[derive(Debug, Clone, Copy)]
enum State {
    Processing { lease_until: u64 },
    Completed,
}

/// Events and payments in `HashMap`s.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    events: Mutex<HashMap<String, State>>,
    payments: Mutex<HashMap<String, PaymentRecord>>,
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
            Some(State::Processing { lease_until }) if *lease_until > now_s => {
                Ok(Claim::InProgress {
                    retry_after: lease_until - now_s,
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

    async fn apply_payment(&self, update: &PaymentUpdate) -> Result<bool, StoreError> {
        let mut payments = self.payments.lock().unwrap_or_else(|p| p.into_inner());
        match payments.get_mut(&update.intent_id) {
            Some(r)
                if r.update.event_id == update.event_id
                    || r.update.event_created > update.event_created =>
            {
                Ok(false)
            }
            Some(r) => {
                let user_id = update.user_id.clone().or_else(|| r.update.user_id.clone());
                r.update = PaymentUpdate {
                    user_id,
                    ..update.clone()
                };
                r.updates += 1;
                Ok(true)
            }
            None => {
                payments.insert(
                    update.intent_id.clone(),
                    PaymentRecord {
                        update: update.clone(),
                        updates: 1,
                    },
                );
                Ok(true)
            }
        }
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
}

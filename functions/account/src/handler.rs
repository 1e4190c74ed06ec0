use flowbotz_security::Event;
use std::sync::Arc;

use flowbotz_security::accounts::UserStore;
use flowbotz_security::clock::Clock;
use flowbotz_security::payments::EventLedger;
use flowbotz_security::payments::customers::CustomerStore;
use flowbotz_security::{ApiError, Ctx, Endpoint, EndpointId, Handler, HandlerResult, log};
use http::StatusCode;
use lambda_http::{Body, Request, Response};

use crate::stripe_customers::CustomerDeletion;

pub(crate) const ENDPOINT: Endpoint = EndpointId::Account.endpoint();

/// Pending Stripe deletions of earlier erasures retried per invocation.
const SWEEP_LIMIT: usize = 5;

/// Failed deletions after which a sweep stops: one failure (that customer's request failed)
/// does not hold back the others, a second suggests Stripe is unreachable, and each failure can
/// cost a whole Stripe timeout.
const SWEEP_MAX_FAILURES: usize = 2;

pub(crate) struct Account {
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) owners: Arc<dyn CustomerStore>,
    pub(crate) payments: Arc<dyn EventLedger>,
    pub(crate) stripe: Option<Arc<dyn CustomerDeletion>>,
    pub(crate) clock: Arc<dyn Clock>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::ServiceUnavailable {
        reason: format!("{what}: {e}"),
        retry_after: 1,
    }
}

impl Account {
    /// Deletes `customer` at Stripe and forgets its pending deletion; `false` if Stripe could
    /// not be reached (the deletion stays pending).
    async fn delete_at_stripe(&self, customer: &str, request_id: &str) -> bool {
        let Some(stripe) = &self.stripe else {
            return false;
        };
        match stripe.delete_customer(customer).await {
            Ok(()) => {
                if let Err(e) = self.payments.remove_pending_deletion(customer).await {
                    // Deleting again later is harmless: Stripe's 404 counts as deleted.
                    tracing::error!(request_id, event = Event::ErasurePendingCleanupFailed.as_str(), cause = %e, "pending deletion not removed");
                }
                tracing::info!(
                    request_id,
                    event = Event::ErasureStripeCustomerDeleted.as_str(),
                    "stripe customer deleted"
                );
                true
            }
            Err(cause) => {
                tracing::warn!(request_id, event = Event::ErasureStripePending.as_str(), %cause, "stripe customer deletion pending");
                false
            }
        }
    }

    /// Retries the Stripe deletions earlier erasures left pending.
    async fn sweep(&self, request_id: &str) {
        let pending = match self.payments.pending_deletions(SWEEP_LIMIT).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(request_id, event = Event::ErasureSweepFailed.as_str(), cause = %e, "pending deletions not read");
                return;
            }
        };
        let mut failures = 0;
        for customer in pending {
            if !self.delete_at_stripe(&customer, request_id).await {
                failures += 1;
                if failures >= SWEEP_MAX_FAILURES {
                    return;
                }
            }
        }
    }
}

impl Handler for Account {
    async fn handle(&self, _req: Request, ctx: &mut Ctx) -> HandlerResult {
        let user = ctx
            .user_id
            .clone()
            .ok_or(ApiError::Unauthorized("no user"))?;
        let now = self.clock.now_s();
        // Durable steps first, in an order a retry can repeat: the pending Stripe deletion is
        // recorded before the account (which names the customer) is erased. Marking the account
        // `erasing` reads its customer and, in the same step, stops a racing first payment from
        // storing one: that payment deletes the customer it created itself.
        let customer = self
            .owners
            .mark_erasing(&user)
            .await
            .map_err(|e| unavailable("user store", e))?;
        if let Some(c) = &customer {
            self.payments
                .add_pending_deletion(c, now)
                .await
                .map_err(|e| unavailable("payments store", e))?;
        }
        let pseudonymised = self
            .payments
            .pseudonymise_user(&user, now)
            .await
            .map_err(|e| unavailable("payments store", e))?;
        let erased = self
            .users
            .erase(&user)
            .await
            .map_err(|e| unavailable("user store", e))?;
        if erased {
            ctx.event = Some(Event::AccountErased);
            log::security_event(
                Event::AccountErased,
                &ctx.request_id,
                &ctx.client_ip,
                ENDPOINT.route,
                &format!("user_id={user} payments_pseudonymised={pseudonymised}"),
            );
        }
        let reachable = match &customer {
            Some(c) => self.delete_at_stripe(c, &ctx.request_id).await,
            None => true,
        };
        if reachable {
            self.sweep(&ctx.request_id).await;
        }
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use flowbotz_security::accounts::UserRecord;
    use flowbotz_security::accounts::memory::MemoryUserStore;
    use flowbotz_security::clock::ManualClock;
    use flowbotz_security::payments::customers::MemoryCustomers;
    use flowbotz_security::payments::memory::MemoryLedger;
    use flowbotz_security::payments::{PaymentFacts, PaymentStatus, PaymentUpdate, Transition};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct FakeStripe {
        down: AtomicBool,
        down_for: Mutex<Vec<String>>,
        deleted: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl CustomerDeletion for FakeStripe {
        async fn delete_customer(&self, id: &str) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst)
                || self.down_for.lock().expect("lock").iter().any(|c| c == id)
            {
                return Err("network error reaching stripe".into());
            }
            self.deleted.lock().expect("lock").push(id.to_string());
            Ok(())
        }
    }

    struct Setup {
        account: Account,
        users: Arc<MemoryUserStore>,
        owners: Arc<MemoryCustomers>,
        ledger: Arc<MemoryLedger>,
        stripe: Arc<FakeStripe>,
    }

    fn setup() -> Setup {
        let users = Arc::new(MemoryUserStore::new());
        let owners = Arc::new(MemoryCustomers::new());
        let ledger = Arc::new(MemoryLedger::new());
        let stripe = Arc::new(FakeStripe::default());
        Setup {
            account: Account {
                users: users.clone(),
                owners: owners.clone(),
                payments: ledger.clone(),
                stripe: Some(stripe.clone()),
                clock: Arc::new(ManualClock::at_ms(1_800_000_000_000)),
            },
            users,
            owners,
            ledger,
            stripe,
        }
    }

    async fn add_user(s: &Setup, id: &str, customer: &str) {
        let email = format!("{id}@example.com");
        s.users
            .create(&UserRecord {
                user_id: id.into(),
                email: email.clone(),
                password_hash: "x".into(),
                name: None,
                created_at: 1,
                email_verified_at: 1,
                session_gen: 0,
            })
            .await
            .expect("create");
        s.owners.insert(id, &email);
        s.owners.set_customer(id, customer).await.expect("set");
        s.ledger
            .apply_payment(&PaymentUpdate {
                intent_id: format!("pi_{id}"),
                user_id: Some(id.into()),
                facts: Some(PaymentFacts {
                    amount: 2000,
                    currency: "usd".into(),
                }),
                transition: Transition {
                    status: PaymentStatus::Succeeded,
                    event_created: 1_700_000_000,
                    refunded_amount: 0,
                },
                event_id: format!("evt_{id}"),
            })
            .await
            .expect("payment");
    }

    async fn erase(s: &Setup, id: &str) -> u16 {
        let mut ctx = Ctx {
            request_id: "r".into(),
            client_ip: "192.0.2.1".into(),
            user_id: Some(id.into()),
            session: None,
            event: None,
        };
        let req = lambda_http::Request::default();
        match s.account.handle(req, &mut ctx).await {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        }
    }

    #[tokio::test]
    async fn given_an_account_with_payments_when_erased_then_records_pseudonymised_and_customer_deleted()
     {
        let s = setup();
        add_user(&s, "u-1", "cus_one").await;
        add_user(&s, "u-2", "cus_two").await;
        assert_eq!(erase(&s, "u-1").await, 204);
        let record = s
            .ledger
            .payment("pi_u-1")
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(record.user_id, None);
        assert_eq!(record.erased_at, Some(1_800_000_000));
        assert_eq!(
            (record.amount, record.status.as_str()),
            (Some(2000), "succeeded")
        );
        let other = s
            .ledger
            .payment("pi_u-2")
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(
            other.user_id.as_deref(),
            Some("u-2"),
            "other users untouched"
        );
        assert_eq!(
            *s.stripe.deleted.lock().expect("lock"),
            vec!["cus_one".to_string()]
        );
        assert!(
            s.ledger
                .pending_deletions(10)
                .await
                .expect("read")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn given_stripe_down_when_erasing_then_erasure_completes_and_the_deletion_is_retried_later()
     {
        let s = setup();
        add_user(&s, "u-1", "cus_one").await;
        add_user(&s, "u-2", "cus_two").await;
        s.stripe.down.store(true, Ordering::SeqCst);
        assert_eq!(erase(&s, "u-1").await, 204, "local erasure completes");
        assert_eq!(
            s.ledger
                .payment("pi_u-1")
                .await
                .expect("read")
                .expect("kept")
                .user_id,
            None
        );
        assert_eq!(
            s.ledger.pending_deletions(10).await.expect("read"),
            vec!["cus_one".to_string()]
        );
        // Stripe is back: the next invocation deletes its own customer and the pending one.
        s.stripe.down.store(false, Ordering::SeqCst);
        assert_eq!(erase(&s, "u-2").await, 204);
        let mut deleted = s.stripe.deleted.lock().expect("lock").clone();
        deleted.sort();
        assert_eq!(deleted, vec!["cus_one".to_string(), "cus_two".to_string()]);
        assert!(
            s.ledger
                .pending_deletions(10)
                .await
                .expect("read")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn given_one_pending_deletion_failing_when_sweeping_then_the_others_are_still_deleted() {
        let s = setup();
        add_user(&s, "u-1", "cus_a_failing").await;
        add_user(&s, "u-2", "cus_b_pending").await;
        add_user(&s, "u-3", "cus_c_own").await;
        s.stripe.down.store(true, Ordering::SeqCst);
        assert_eq!(erase(&s, "u-1").await, 204);
        assert_eq!(erase(&s, "u-2").await, 204);
        assert_eq!(
            s.ledger.pending_deletions(10).await.expect("read"),
            vec!["cus_a_failing".to_string(), "cus_b_pending".to_string()]
        );
        // Stripe is back, but the first pending customer's deletion still fails.
        s.stripe.down.store(false, Ordering::SeqCst);
        s.stripe
            .down_for
            .lock()
            .expect("lock")
            .push("cus_a_failing".into());
        assert_eq!(erase(&s, "u-3").await, 204);
        let mut deleted = s.stripe.deleted.lock().expect("lock").clone();
        deleted.sort();
        assert_eq!(
            deleted,
            vec!["cus_b_pending".to_string(), "cus_c_own".to_string()]
        );
        assert_eq!(
            s.ledger.pending_deletions(10).await.expect("read"),
            vec!["cus_a_failing".to_string()],
            "the failing one stays pending for a later sweep"
        );
    }

    #[tokio::test]
    async fn given_an_erasure_when_it_begins_then_a_racing_payment_can_no_longer_store_a_customer()
    {
        let s = setup();
        add_user(&s, "u-1", "cus_one").await;
        s.users
            .create(&UserRecord {
                user_id: "u-2".into(),
                email: "u-2@example.com".into(),
                password_hash: "x".into(),
                name: None,
                created_at: 1,
                email_verified_at: 1,
                session_gen: 0,
            })
            .await
            .expect("create");
        s.owners.insert("u-2", "u-2@example.com");
        assert_eq!(erase(&s, "u-2").await, 204);
        assert_eq!(
            s.owners.set_customer("u-2", "cus_late").await.expect("set"),
            flowbotz_security::payments::customers::SetCustomer::NoAccount,
            "the payment that created cus_late deletes it itself"
        );
        assert!(s.stripe.deleted.lock().expect("lock").is_empty());
    }
}

use std::sync::Arc;

use super::memory::MemoryBudgetStore;
use super::*;
use crate::clock::ManualClock;

const DAY: u64 = 86_400;
// 2027-01-15 23:59:00 UTC.
const T0: u64 = (20_833 * DAY + DAY - 60) * 1000;

const IP: &str = "198.51.100.7";

fn budget(per_account: u64, service: u64) -> (Budget, Arc<MemoryBudgetStore>, ManualClock) {
    let store = Arc::new(MemoryBudgetStore::new());
    let clock = ManualClock::at_ms(T0);
    (
        Budget::new(
            store.clone(),
            Arc::new(clock.clone()),
            BudgetPolicy {
                per_account,
                service,
                per_network: service,
            },
        ),
        store,
        clock,
    )
}

#[tokio::test]
async fn given_an_account_under_its_budget_when_reserving_then_both_counters_take_the_worst_case() {
    let (b, store, _) = budget(1000, 10_000);
    let r = b.reserve("alice", IP, 600).await.expect("reserved");
    assert_eq!(r.tokens(), 600);
    let day = T0 / 1000 / DAY;
    assert_eq!(store.used(&format!("budget#account#{day}#alice")), 600);
    assert_eq!(store.used(&format!("budget#service#{day}")), 600);
    b.settle(r, 250).await.expect("settled");
    assert_eq!(store.used(&format!("budget#account#{day}#alice")), 250);
    assert_eq!(store.used(&format!("budget#service#{day}")), 250);
}

#[tokio::test]
async fn given_a_spent_account_budget_when_reserving_then_429_until_the_next_utc_day_and_nothing_is_charged()
 {
    let (b, store, clock) = budget(1000, 10_000);
    let r = b
        .reserve("alice", IP, 1000)
        .await
        .expect("the first call starts inside");
    b.settle(r, 1000).await.expect("settled");
    let err = b.reserve("alice", IP, 1).await.unwrap_err();
    assert_eq!(
        err,
        BudgetError::Exhausted {
            scope: Scope::Account,
            retry_after: 60
        }
    );
    let day = T0 / 1000 / DAY;
    assert_eq!(
        store.used(&format!("budget#service#{day}")),
        1000,
        "no partial charge"
    );
    assert!(
        b.reserve("bob", IP, 10).await.is_ok(),
        "another account is apart"
    );
    clock.advance_ms(60_000);
    assert!(b.reserve("alice", IP, 10).await.is_ok(), "a new UTC day");
}

#[tokio::test]
async fn given_a_spent_service_budget_when_any_account_reserves_then_refused_as_service() {
    let (b, _, _) = budget(1_000_000, 5000);
    for user in ["a", "b", "c", "d", "e"] {
        let r = b.reserve(user, IP, 1000).await.expect("inside");
        b.settle(r, 1000).await.expect("settled");
    }
    assert!(matches!(
        b.reserve("f", IP, 1).await,
        Err(BudgetError::Exhausted {
            scope: Scope::Service,
            ..
        })
    ));
}

#[tokio::test]
async fn given_a_call_that_used_nothing_or_exactly_the_reservation_when_settling_then_refund_or_no_request()
 {
    let (b, store, _) = budget(1000, 10_000);
    let r = b.reserve("alice", IP, 700).await.expect("reserved");
    let before = store.requests();
    b.settle(r, 700).await.expect("settled");
    assert_eq!(store.requests(), before, "nothing to correct");
    let r = b.reserve("alice", IP, 200).await.expect("reserved");
    b.settle(r, 0).await.expect("refunded");
    let day = T0 / 1000 / DAY;
    assert_eq!(store.used(&format!("budget#account#{day}#alice")), 700);
}

#[tokio::test]
async fn given_a_failing_store_when_reserving_then_a_store_error_not_an_admission() {
    let (b, store, _) = budget(1000, 10_000);
    store.set_failing(true);
    assert!(matches!(
        b.reserve("alice", IP, 1).await,
        Err(BudgetError::Store(_))
    ));
}

#[tokio::test]
async fn given_many_accounts_behind_one_network_when_reserving_then_they_share_its_budget() {
    let store = Arc::new(MemoryBudgetStore::new());
    let b = Budget::new(
        store,
        Arc::new(ManualClock::at_ms(T0)),
        BudgetPolicy {
            per_account: 1000,
            service: 1_000_000,
            per_network: 2500,
        },
    );
    for (i, user) in ["a", "b", "c"].iter().enumerate() {
        let ip = format!("2001:db8:1:2::{i}");
        let r = b.reserve(user, &ip, 1000).await.expect("inside");
        b.settle(r, 1000).await.expect("settled");
    }
    assert!(matches!(
        b.reserve("d", "2001:db8:1:2:ffff::9", 1).await,
        Err(BudgetError::Exhausted {
            scope: Scope::Network,
            ..
        })
    ));
    assert!(
        b.reserve("d", "2001:db8:1:3::1", 1).await.is_ok(),
        "another /64"
    );
    assert_eq!(network_of("2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64");
    assert_eq!(network_of("198.51.100.7"), "198.51.100.7");
    assert_eq!(network_of("unknown"), "unknown");
}

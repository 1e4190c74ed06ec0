//! One conformance suite for every rate-limit store and every payment ledger: the in-memory
//! ones always, the DynamoDB ones against moto_server when the `e2e` feature is on (`make
//! test` starts moto).

use std::sync::Arc;
use std::time::Duration;

use flowbotz_security::clock::ManualClock;
use flowbotz_security::config::{BlockPolicy, RateLimit};
use flowbotz_security::payments::customers::{CustomerStore, SetCustomer};
use flowbotz_security::payments::memory::MemoryLedger;
use flowbotz_security::payments::{
    Claim, EventLedger, PaymentFacts, PaymentStatus, PaymentUpdate, Transition,
};
use flowbotz_security::ratelimit::memory::MemoryStore;
use flowbotz_security::ratelimit::window::{CounterUpdate, Step, Window};
use flowbotz_security::ratelimit::{RateLimitStore, RateLimiter, Subject, UpdateOutcome, Verdict};

const T0: u64 = 1_800_000_000_000;

fn unique_key(label: &str) -> String {
    format!(
        "conformance#{label}#{}",
        flowbotz_tests::events::unique_ip()
    )
}

fn update(step: Step, now_s: u64) -> CounterUpdate {
    CounterUpdate {
        steps: [Some(step), None],
        now_s,
        expires_at_s: now_s + 120,
    }
}

async fn conditional_writes_follow_their_conditions(store: &dyn RateLimitStore) {
    let key = unique_key("conditions");
    let start = update(
        Step::Start {
            before: 99,
            index: 100,
        },
        6000,
    );
    let UpdateOutcome::Applied(item) = store.apply(&key, &start).await.expect("apply") else {
        panic!("a start on a missing item applies");
    };
    assert_eq!(
        item.windows[0],
        Some(Window {
            index: 100,
            current: 1,
            previous: 0
        })
    );
    // A second start fails and returns the stored item (no second read needed).
    let UpdateOutcome::ConditionFailed(Some(old)) = store.apply(&key, &start).await.expect("apply")
    else {
        panic!("a start on an existing current window fails with the old item");
    };
    assert_eq!(old.windows[0], item.windows[0]);
    let inc = update(
        Step::Increment {
            index: 100,
            previous: 0,
            below: 2,
        },
        6000,
    );
    assert!(
        matches!(store.apply(&key, &inc).await.expect("apply"), UpdateOutcome::Applied(i) if i.windows[0].is_some_and(|w| w.current == 2))
    );
    assert!(
        matches!(
            store.apply(&key, &inc).await.expect("apply"),
            UpdateOutcome::ConditionFailed(Some(_))
        ),
        "current < below must hold"
    );
    let wrong_prev = update(
        Step::Increment {
            index: 100,
            previous: 7,
            below: 9,
        },
        6000,
    );
    assert!(matches!(
        store.apply(&key, &wrong_prev).await.expect("apply"),
        UpdateOutcome::ConditionFailed(_)
    ));
    let roll = update(
        Step::Roll {
            from: 100,
            index: 101,
            max_current: 5,
        },
        6060,
    );
    let UpdateOutcome::Applied(rolled) = store.apply(&key, &roll).await.expect("apply") else {
        panic!("roll applies");
    };
    assert_eq!(
        rolled.windows[0],
        Some(Window {
            index: 101,
            current: 1,
            previous: 2
        })
    );
    let two_slots = CounterUpdate {
        steps: [
            Some(Step::Increment {
                index: 101,
                previous: 2,
                below: 10,
            }),
            Some(Step::Start {
                before: 605,
                index: 606,
            }),
        ],
        now_s: 6060,
        expires_at_s: 6200,
    };
    let UpdateOutcome::Applied(both) = store.apply(&key, &two_slots).await.expect("apply") else {
        panic!("both windows in one write");
    };
    assert_eq!(both.windows[0].map(|w| w.current), Some(2));
    assert_eq!(
        both.windows[1],
        Some(Window {
            index: 606,
            current: 1,
            previous: 0
        })
    );
}

async fn blocks_refuse_updates_until_they_end(store: &dyn RateLimitStore) {
    let key = unique_key("block");
    store
        .block(std::slice::from_ref(&key), 5000, 5100)
        .await
        .expect("block");
    let start = update(
        Step::Start {
            before: 0,
            index: 1,
        },
        4999,
    );
    let UpdateOutcome::ConditionFailed(Some(item)) =
        store.apply(&key, &start).await.expect("apply")
    else {
        panic!("a blocked key refuses updates");
    };
    assert_eq!(item.blocked_until_s, Some(5000));
    let later = update(
        Step::Start {
            before: 0,
            index: 1,
        },
        5000,
    );
    assert!(matches!(
        store.apply(&key, &later).await.expect("apply"),
        UpdateOutcome::Applied(_)
    ));
}

/// Eight instances (each with its own cache) race 25 checks each on one key with limit 5.
async fn racing_instances_admit_exactly_the_limit(store: Arc<dyn RateLimitStore>) {
    let clock = ManualClock::at_ms(T0 + 30_000);
    let block = BlockPolicy {
        violations: 10,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(900),
    };
    let limits = RateLimit {
        per_minute: 5,
        burst: None,
    };
    let ip = flowbotz_tests::events::unique_ip();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let limiter = RateLimiter::new(
            store.clone(),
            Arc::new(clock.clone()),
            block,
            ["race"],
            Duration::from_secs(5),
        );
        let ip = ip.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for _ in 0..25 {
                if limiter
                    .check("race", Subject::Ip(&ip), limits)
                    .await
                    .expect("check")
                    .verdict
                    == Verdict::Admitted
                {
                    admitted += 1;
                }
            }
            admitted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert_eq!(total, 5, "exactly the limit is admitted across instances");
}

/// Steady state: one store request per check; a cold instance or a roll-over costs two.
async fn steady_state_costs_one_request(store: Arc<dyn RateLimitStore>) {
    let clock = ManualClock::at_ms(T0);
    let block = BlockPolicy {
        violations: 10,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(900),
    };
    let limits = RateLimit {
        per_minute: 1000,
        burst: Some(1000),
    };
    let ip = flowbotz_tests::events::unique_ip();
    let a = RateLimiter::new(
        store.clone(),
        Arc::new(clock.clone()),
        block,
        ["cost"],
        Duration::from_secs(5),
    );
    let b = RateLimiter::new(
        store.clone(),
        Arc::new(clock.clone()),
        block,
        ["cost"],
        Duration::from_secs(5),
    );
    a.check("cost", Subject::Ip(&ip), limits)
        .await
        .expect("check");
    let before = store.requests();
    for _ in 0..20 {
        clock.advance_ms(50);
        a.check("cost", Subject::Ip(&ip), limits)
            .await
            .expect("check");
    }
    let per_check = (store.requests() - before) as f64 / 20.0;
    println!("store requests per check, steady state: {per_check}");
    assert_eq!(per_check, 1.0);
    let before = store.requests();
    b.check("cost", Subject::Ip(&ip), limits)
        .await
        .expect("check");
    println!(
        "store requests for a cold instance's first check: {}",
        store.requests() - before
    );
    assert!(store.requests() - before <= 2);
    clock.advance_ms(60_000);
    let before = store.requests();
    a.check("cost", Subject::Ip(&ip), limits)
        .await
        .expect("check");
    b.check("cost", Subject::Ip(&ip), limits)
        .await
        .expect("check");
    println!(
        "store requests for two instances after a roll-over: {}",
        store.requests() - before
    );
    assert!(store.requests() - before <= 4);
}

async fn suite(store: Arc<dyn RateLimitStore>) {
    conditional_writes_follow_their_conditions(store.as_ref()).await;
    blocks_refuse_updates_until_they_end(store.as_ref()).await;
    racing_instances_admit_exactly_the_limit(store.clone()).await;
    steady_state_costs_one_request(store).await;
}

fn payment(
    intent: &str,
    event: &str,
    status: PaymentStatus,
    at: u64,
    refunded: i64,
    facts: bool,
) -> PaymentUpdate {
    PaymentUpdate {
        intent_id: intent.to_string(),
        user_id: facts.then(|| "conformance-user".to_string()),
        facts: facts.then(|| PaymentFacts {
            amount: 2000,
            currency: "eur".into(),
        }),
        transition: Transition {
            status,
            event_created: at,
            refunded_amount: refunded,
        },
        event_id: event.to_string(),
    }
}

fn orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in orders(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

/// Every delivery order of four events (with a repeat) ends in the same record; erasure
/// pseudonymises one user's records only; pending deletions are kept until removed.
async fn ledger_suite(ledger: &dyn EventLedger) {
    let run = flowbotz_tests::events::unique_ip().replace([':', '.'], "");
    let sequence = |intent: &str| {
        vec![
            payment(
                intent,
                "evt_fail",
                PaymentStatus::Failed,
                1_800_000_000,
                0,
                true,
            ),
            payment(
                intent,
                "evt_ok",
                PaymentStatus::Succeeded,
                1_800_000_000,
                0,
                true,
            ),
            payment(
                intent,
                "evt_ref",
                PaymentStatus::PartiallyRefunded,
                1_800_000_050,
                300,
                true,
            ),
            payment(
                intent,
                "evt_dis",
                PaymentStatus::Disputed,
                1_800_000_090,
                0,
                false,
            ),
        ]
    };
    let mut finals = Vec::new();
    for (n, order) in orders(4).into_iter().enumerate() {
        let intent = format!("pi_conf{run}x{n}");
        let events = sequence(&intent);
        for &i in order.iter().chain(std::iter::once(&order[n % 4])) {
            ledger.apply_payment(&events[i]).await.expect("apply");
        }
        let mut r = ledger
            .payment(&intent)
            .await
            .expect("read")
            .expect("record");
        r.intent_id.clear();
        r.updates = 0;
        finals.push(r);
    }
    assert_eq!(finals.len(), 24);
    assert!(finals.windows(2).all(|w| w[0] == w[1]), "{:?}", finals[0]);
    let f = &finals[0];
    assert_eq!(
        (
            f.status.as_str(),
            f.refunded_amount,
            f.amount,
            f.currency.as_deref()
        ),
        ("disputed", 300, Some(2000), Some("eur"))
    );

    // A payment attempt whose failure and the retry's success share the last second: every
    // order ends succeeded, never failed.
    let attempt = |intent: &str| {
        vec![
            payment(
                intent,
                "evt_new",
                PaymentStatus::RequiresPaymentMethod,
                1_800_000_000,
                0,
                true,
            ),
            payment(
                intent,
                "evt_proc",
                PaymentStatus::Processing,
                1_800_000_003,
                0,
                true,
            ),
            payment(
                intent,
                "evt_failed",
                PaymentStatus::Failed,
                1_800_000_005,
                0,
                true,
            ),
            payment(
                intent,
                "evt_paid",
                PaymentStatus::Succeeded,
                1_800_000_005,
                0,
                true,
            ),
        ]
    };
    for (n, order) in orders(4).into_iter().enumerate() {
        let intent = format!("pi_att{run}x{n}");
        let events = attempt(&intent);
        for &i in order.iter().chain(std::iter::once(&order[(n + 1) % 4])) {
            ledger.apply_payment(&events[i]).await.expect("apply");
        }
        let r = ledger
            .payment(&intent)
            .await
            .expect("read")
            .expect("record");
        assert_eq!(
            (r.status.as_str(), r.last_event_id.as_str()),
            ("succeeded", "evt_paid"),
            "order {order:?}"
        );
    }
    assert_eq!(f.user_id.as_deref(), Some("conformance-user"));

    let mine = format!("conf-user-{run}");
    let theirs = format!("conf-other-{run}");
    for (intent, user) in [("a", &mine), ("b", &mine), ("c", &theirs)] {
        let mut u = payment(
            &format!("pi_{intent}{run}"),
            "evt_1",
            PaymentStatus::Succeeded,
            1_800_000_000,
            0,
            true,
        );
        u.user_id = Some(user.clone());
        ledger.apply_payment(&u).await.expect("apply");
    }
    assert_eq!(
        ledger
            .pseudonymise_user(&mine, 1_800_000_500)
            .await
            .expect("erase"),
        2
    );
    let a = ledger
        .payment(&format!("pi_a{run}"))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        (a.user_id, a.erased_at, a.amount),
        (None, Some(1_800_000_500), Some(2000))
    );
    assert_eq!(a.status, "succeeded");
    let mut late = payment(
        &format!("pi_a{run}"),
        "evt_2",
        PaymentStatus::Refunded,
        1_800_000_600,
        2000,
        true,
    );
    late.user_id = Some(mine.clone());
    ledger.apply_payment(&late).await.expect("apply");
    let a = ledger
        .payment(&format!("pi_a{run}"))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        (a.user_id, a.status.as_str()),
        (None, "refunded"),
        "a late event does not re-link the user"
    );
    let c = ledger
        .payment(&format!("pi_c{run}"))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(c.user_id.as_deref(), Some(theirs.as_str()));
    assert_eq!(
        ledger
            .pseudonymise_user(&mine, 1_800_000_700)
            .await
            .expect("again"),
        0
    );

    let customer = format!("cus_conf{run}");
    ledger
        .add_pending_deletion(&customer, 1_800_000_000)
        .await
        .expect("add");
    ledger
        .add_pending_deletion(&customer, 1_800_000_001)
        .await
        .expect("add twice");
    let pending = ledger.pending_deletions(1000).await.expect("list");
    assert_eq!(pending.iter().filter(|c| **c == customer).count(), 1);
    ledger
        .remove_pending_deletion(&customer)
        .await
        .expect("remove");
    assert!(
        !ledger
            .pending_deletions(1000)
            .await
            .expect("list")
            .contains(&customer)
    );
}

/// An event's claim: a lease that holds through its last second and is then taken over (a
/// crashed delivery's retry), and a completed event that stays completed whatever the time.
/// Returns the event id, claimed first at [`CLAIM_AT`] with [`LEASE`] and [`KEEP`].
async fn claim_suite(ledger: &dyn EventLedger) -> String {
    let id = format!(
        "evt_conf{}",
        flowbotz_tests::events::unique_ip().replace([':', '.'], "")
    );
    let claim = async |now: u64| ledger.claim(&id, now, LEASE, KEEP).await.expect("claim");
    assert_eq!(claim(CLAIM_AT).await, Claim::Acquired);
    assert_eq!(
        claim(CLAIM_AT + 1).await,
        Claim::InProgress { retry_after: 59 }
    );
    assert_eq!(
        claim(CLAIM_AT + LEASE).await,
        Claim::InProgress { retry_after: 1 },
        "the lease holds through its last second"
    );
    assert_eq!(
        claim(CLAIM_AT + LEASE + 1).await,
        Claim::Acquired,
        "an expired lease is taken over"
    );
    assert_eq!(
        claim(CLAIM_AT + LEASE + 2).await,
        Claim::InProgress { retry_after: 59 },
        "the new holder's lease"
    );
    ledger
        .complete(&id, CLAIM_AT + LEASE + 3)
        .await
        .expect("complete");
    for later in [
        CLAIM_AT + LEASE + 4,
        CLAIM_AT + 10 * LEASE,
        CLAIM_AT + KEEP - 1,
    ] {
        assert_eq!(claim(later).await, Claim::Completed, "at {later}");
    }
    id
}

/// The first claim's time, lease and keep (the webhook's: 60 s and 30 days).
const CLAIM_AT: u64 = 1_800_000_000;
const LEASE: u64 = 60;
const KEEP: u64 = 30 * 24 * 3600;

/// The first customer stored on an account wins; an erased account takes none. `create` and
/// `erase` are the user store's registration and erasure (the user item's put and delete).
async fn customer_suite(
    store: &dyn CustomerStore,
    create: impl AsyncFn(&str, &str),
    erase: impl AsyncFn(&str) -> bool,
) {
    let run = flowbotz_tests::events::unique_ip().replace([':', '.'], "");
    let user = format!("conf-customer-{run}");
    let email = format!("{user}@example.com");
    create(&user, &email).await;
    let owner = store.owner(&user).await.expect("read").expect("owner");
    assert_eq!(
        (owner.email.as_str(), owner.customer_id),
        (email.as_str(), None)
    );
    assert_eq!(
        store.set_customer(&user, "cus_A").await.expect("set"),
        SetCustomer::Stored
    );
    assert_eq!(
        store.set_customer(&user, "cus_A").await.expect("again"),
        SetCustomer::Stored
    );
    assert_eq!(
        store.set_customer(&user, "cus_B").await.expect("race"),
        SetCustomer::Existing("cus_A".into())
    );
    let owner = store.owner(&user).await.expect("read").expect("owner");
    assert_eq!(owner.customer_id.as_deref(), Some("cus_A"));
    assert!(erase(&user).await);
    assert_eq!(store.owner(&user).await.expect("read"), None);
    assert_eq!(
        store.set_customer(&user, "cus_C").await.expect("gone"),
        SetCustomer::NoAccount
    );
    assert_eq!(store.mark_erasing(&user).await.expect("gone"), None);
}

/// An erasure marks the account before deleting it: the mark returns the customer stored at
/// that moment, and from then on no customer is stored and no owner is found, so a first
/// payment racing the erasure can never leave a customer the erasure did not see.
async fn erasing_suite(
    store: &dyn CustomerStore,
    create: impl AsyncFn(&str, &str),
    erase: impl AsyncFn(&str) -> bool,
) {
    let run = flowbotz_tests::events::unique_ip().replace([':', '.'], "");
    // The payment read the owner (no customer yet), then the erasure began.
    let racing = format!("conf-erasing-{run}");
    create(&racing, &format!("{racing}@example.com")).await;
    assert!(store.owner(&racing).await.expect("read").is_some());
    assert_eq!(store.mark_erasing(&racing).await.expect("mark"), None);
    assert_eq!(
        store.set_customer(&racing, "cus_R").await.expect("refused"),
        SetCustomer::NoAccount,
        "an account being erased takes no customer"
    );
    assert_eq!(store.owner(&racing).await.expect("read"), None);
    assert_eq!(
        store.mark_erasing(&racing).await.expect("again"),
        None,
        "nothing was stored"
    );
    assert!(erase(&racing).await);
    // The customer was stored first: the erasure gets it, and a retried erasure gets it again.
    let paid = format!("conf-erasing-paid-{run}");
    create(&paid, &format!("{paid}@example.com")).await;
    assert_eq!(
        store.set_customer(&paid, "cus_P").await.expect("set"),
        SetCustomer::Stored
    );
    assert_eq!(
        store.mark_erasing(&paid).await.expect("mark").as_deref(),
        Some("cus_P")
    );
    assert_eq!(
        store.mark_erasing(&paid).await.expect("retry").as_deref(),
        Some("cus_P")
    );
    assert_eq!(
        store.set_customer(&paid, "cus_P").await.expect("refused"),
        SetCustomer::NoAccount
    );
    assert!(erase(&paid).await);
}

#[tokio::test]
async fn memory_customers_conform() {
    let store = flowbotz_security::payments::customers::MemoryCustomers::new();
    let create = async |user: &str, email: &str| store.insert(user, email);
    let erase = async |user: &str| store.remove(user);
    customer_suite(&store, &create, &erase).await;
    erasing_suite(&store, &create, &erase).await;
}

#[tokio::test]
async fn memory_ledger_conforms() {
    ledger_suite(&MemoryLedger::new()).await;
    claim_suite(&MemoryLedger::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    suite(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "e2e")]
mod dynamodb {
    use super::*;
    use flowbotz_security::ratelimit::StoreError;
    use flowbotz_security::store::dynamodb::{DynamoRateLimitStore, client};

    fn table() -> String {
        std::env::var("RATE_LIMIT_TABLE").unwrap_or_else(|_| "flowbotz-rate-limits".into())
    }

    #[tokio::test]
    async fn dynamodb_customers_conform_against_moto() {
        let table = std::env::var("USERS_TABLE").unwrap_or_else(|_| "flowbotz-users".into());
        let c = client(Duration::from_secs(3)).await;
        let store = flowbotz_security::payments::customers::dynamodb::DynamoCustomers::new(
            c.clone(),
            table.clone(),
        );
        use flowbotz_security::accounts::UserStore;
        let users = flowbotz_security::accounts::dynamodb::DynamoUserStore::new(c, table);
        let create = async |user: &str, email: &str| {
            let created = users
                .create(&flowbotz_security::accounts::UserRecord {
                    user_id: user.into(),
                    email: email.into(),
                    password_hash: "x".into(),
                    name: None,
                    created_at: 1,
                    email_verified_at: 1,
                    session_gen: 0,
                })
                .await
                .expect("create");
            assert!(created);
        };
        let erase = async |user: &str| users.erase(user).await.expect("erase");
        customer_suite(&store, &create, &erase).await;
        erasing_suite(&store, &create, &erase).await;
    }

    #[tokio::test]
    async fn dynamodb_ledger_conforms_against_moto() {
        let table = std::env::var("PAYMENTS_TABLE").unwrap_or_else(|_| "flowbotz-payments".into());
        let c = client(Duration::from_secs(3)).await;
        let ledger = flowbotz_security::payments::dynamodb::DynamoLedger::new(c.clone(), &table);
        ledger_suite(&ledger).await;
        // The event item expires through the table's TTL attribute: the last claim's time plus
        // the keep (30 days from the takeover at CLAIM_AT + LEASE + 1).
        let id = claim_suite(&ledger).await;
        let item = c
            .get_item()
            .table_name(&table)
            .key(
                flowbotz_security::store::dynamodb::PK,
                aws_sdk_dynamodb::types::AttributeValue::S(format!("event#{id}")),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("get")
            .item
            .expect("the event item");
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u64>().ok())
        };
        assert_eq!(
            number(flowbotz_security::store::dynamodb::TTL_ATTRIBUTE),
            Some(CLAIM_AT + LEASE + 1 + KEEP),
            "{item:?}"
        );
        assert_eq!(
            item.get("state")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str),
            Some("completed")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dynamodb_store_conforms_against_moto() {
        let c = client(Duration::from_secs(3)).await;
        suite(Arc::new(DynamoRateLimitStore::new(c, table()))).await;
    }

    #[tokio::test]
    async fn given_a_silent_endpoint_when_checking_then_fails_within_the_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let store = {
            let cfg = aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .endpoint_url(format!("http://{addr}"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    "local", "local", None, None, "tests",
                ))
                .timeout_config(
                    aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                        .operation_timeout(Duration::from_millis(600))
                        .build(),
                )
                .build();
            DynamoRateLimitStore::new(aws_sdk_dynamodb::Client::from_conf(cfg), table())
        };
        let limiter = RateLimiter::new(
            Arc::new(store),
            Arc::new(ManualClock::at_ms(T0)),
            BlockPolicy {
                violations: 10,
                window: Duration::from_secs(600),
                duration: Duration::from_secs(900),
            },
            ["x"],
            Duration::from_millis(1500),
        );
        let started = std::time::Instant::now();
        let err = limiter
            .check(
                "x",
                Subject::Ip("2001:db8::1"),
                RateLimit {
                    per_minute: 5,
                    burst: None,
                },
            )
            .await
            .expect_err("a silent store fails");
        assert!(
            matches!(err, StoreError::Timeout | StoreError::Unavailable(_)),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded, never a hang"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Budget stores
// ------------------------------------------------------------------------------------------

mod budget {
    use std::sync::Arc;

    use flowbotz_security::budget::memory::MemoryBudgetStore;
    use flowbotz_security::budget::{BudgetStore, ReserveOutcome};

    fn key(label: &str) -> String {
        format!(
            "conformance#budget#{label}#{}",
            flowbotz_tests::events::unique_ip()
        )
    }

    pub(super) async fn suite(store: Arc<dyn BudgetStore>) {
        let (a, s) = (key("account"), key("service"));
        let counters = [(s.clone(), 10_000), (a.clone(), 1000)];
        assert_eq!(
            store.reserve(&counters, 1000, 9).await.expect("reserve"),
            ReserveOutcome::Reserved,
            "an empty counter takes any amount"
        );
        assert_eq!(
            store.reserve(&counters, 1, 9).await.expect("reserve"),
            ReserveOutcome::Refused(1),
            "the account counter holds its limit"
        );
        store
            .adjust(&[s.clone(), a.clone()], -1, 9)
            .await
            .expect("adjust");
        assert_eq!(
            store.reserve(&counters, 500, 9).await.expect("reserve"),
            ReserveOutcome::Reserved,
            "one below the limit still starts"
        );
        let tight = [(s.clone(), 1499), (key("other"), 1000)];
        assert_eq!(
            store.reserve(&tight, 1, 9).await.expect("reserve"),
            ReserveOutcome::Refused(0),
            "the service counter refuses first"
        );
        let other = key("other-account");
        assert_eq!(
            store
                .reserve(&[(s.clone(), 1500), (other.clone(), 1000)], 1, 9)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved,
            "nothing of the refused reservation was charged"
        );
        assert_eq!(
            store
                .reserve(&[(s.clone(), 1500), (other, 1000)], 1, 9)
                .await
                .expect("reserve"),
            ReserveOutcome::Refused(0)
        );

        // Many instances racing one account: admissions stop once the counter holds the limit.
        let racing = key("race");
        let service = key("race-service");
        // A generous client bound: under load a timed-out attempt would be retried by the SDK
        // and counted twice, which is not what this checks.
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = Arc::clone(&store);
                let counters = [(service.clone(), 1_000_000), (racing.clone(), 500)];
                tokio::spawn(async move { store.reserve(&counters, 100, 9).await })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            if t.await.expect("task").expect("reserve") == ReserveOutcome::Reserved {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5, "500 tokens in 100-token reservations");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_budget_store_conforms() {
        suite(Arc::new(MemoryBudgetStore::new())).await;
    }

    #[cfg(feature = "e2e")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dynamodb_budget_store_conforms_against_moto() {
        use flowbotz_security::budget::dynamodb::DynamoBudgetStore;
        let c =
            flowbotz_security::store::dynamodb::client(std::time::Duration::from_secs(10)).await;
        let table =
            std::env::var("RATE_LIMIT_TABLE").unwrap_or_else(|_| "flowbotz-rate-limits".into());
        suite(Arc::new(DynamoBudgetStore::new(c, table))).await;
    }
}

// ------------------------------------------------------------------------------------------
// Login attempts
// ------------------------------------------------------------------------------------------

mod attempts {
    use std::sync::Arc;

    use flowbotz_security::accounts::memory::MemoryUserStore;
    use flowbotz_security::accounts::{Attempt, UserStore};

    const NOW: u64 = 1_900_000_000;
    const WINDOW: u64 = 900;

    fn email(label: &str) -> String {
        format!(
            "{label}-{}@example.com",
            flowbotz_tests::events::unique_ip().replace(':', "")
        )
    }

    pub(super) async fn suite(store: Arc<dyn UserStore>) {
        let e = email("window");
        for i in 1..=5u32 {
            let Attempt::Admitted(f) = store
                .reserve_attempt(&e, NOW + u64::from(i), 5, WINDOW)
                .await
                .expect("reserve")
            else {
                panic!("attempt {i} is admitted");
            };
            assert_eq!((f.count, f.since_s), (i, NOW + 1));
        }
        assert_eq!(
            store
                .reserve_attempt(&e, NOW + 10, 5, WINDOW)
                .await
                .expect("reserve"),
            Attempt::Throttled {
                retry_after: WINDOW - 9
            },
            "the sixth waits for the window, counted from its first attempt"
        );
        let Attempt::Admitted(f) = store
            .reserve_attempt(&e, NOW + 1 + WINDOW, 5, WINDOW)
            .await
            .expect("reserve")
        else {
            panic!("a passed window restarts");
        };
        assert_eq!((f.count, f.since_s), (1, NOW + 1 + WINDOW));
        store.clear_failures(&e).await.expect("clear");
        assert!(matches!(
            store.reserve_attempt(&e, NOW + 2 + WINDOW, 5, WINDOW).await.expect("reserve"),
            Attempt::Admitted(f) if f.count == 1
        ));
    }

    /// Many instances racing wrong passwords on one account: at most `max` attempts admitted.
    pub(super) async fn race(stores: Vec<Arc<dyn UserStore>>) {
        let e = email("race");
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let store = Arc::clone(&stores[i % stores.len()]);
                let e = e.clone();
                tokio::spawn(async move { store.reserve_attempt(&e, NOW, 5, WINDOW).await })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            if let Attempt::Admitted(_) = t.await.expect("task").expect("reserve") {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5, "60 racing attempts, 5 admitted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_user_store_reserves_attempts_atomically() {
        let store: Arc<dyn UserStore> = Arc::new(MemoryUserStore::default());
        suite(store.clone()).await;
        race(vec![store]).await;
    }

    #[cfg(feature = "e2e")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dynamodb_user_store_reserves_attempts_atomically_across_instances() {
        use flowbotz_security::accounts::dynamodb::DynamoUserStore;
        let table = std::env::var("USERS_TABLE").unwrap_or_else(|_| "flowbotz-users".into());
        let mut stores: Vec<Arc<dyn UserStore>> = Vec::new();
        // Twelve instances, each with its own client and connections.
        for _ in 0..12 {
            let c = flowbotz_security::store::dynamodb::client(std::time::Duration::from_secs(10))
                .await;
            stores.push(Arc::new(DynamoUserStore::new(c, table.clone())));
        }
        suite(stores[0].clone()).await;
        race(stores).await;
    }
}

// ------------------------------------------------------------------------------------------
// Session liveness
// ------------------------------------------------------------------------------------------

mod sessions {
    use std::sync::Arc;

    use flowbotz_security::accounts::memory::MemoryUserStore;
    use flowbotz_security::accounts::{Attempt, EndSessions, UserRecord, UserStore};
    use flowbotz_security::revocation::{SessionState, SessionStore};
    use flowbotz_security::session::Claims;

    pub(super) fn claims(user: &str, generation: u64, jti: &str) -> Claims {
        Claims {
            sub: user.into(),
            iat: 100,
            nbf: 100,
            exp: 1000,
            iss: "i".into(),
            aud: "a".into(),
            jti: format!("{jti}-{user}"),
            generation,
        }
    }

    pub(super) fn account(label: &str) -> UserRecord {
        let id = format!(
            "u-{label}-{}",
            flowbotz_tests::events::unique_ip().replace([':', '.'], "")
        );
        UserRecord {
            email: format!("{id}@example.com"),
            user_id: id,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            name: Some("Ada".into()),
            created_at: 1,
            email_verified_at: 2,
            session_gen: 0,
        }
    }

    async fn state(s: &dyn SessionStore, c: &Claims) -> SessionState {
        s.check(c).await.expect("check")
    }

    /// Session generations, keepers, denials and erasure, through the user store's writes and
    /// the session store's one read.
    pub(super) async fn suite(users: Arc<dyn UserStore>, sessions: Arc<dyn SessionStore>) {
        use SessionState::{Active, Ended};
        let user = account("gen");
        let id = user.user_id.clone();
        assert_eq!(
            state(&*sessions, &claims(&id, 0, "a")).await,
            Ended,
            "no account"
        );
        assert!(users.create(&user).await.expect("create"));
        assert!(
            !users.create(&user).await.expect("create"),
            "taken: false, not an error"
        );
        let (found, _) = users.lookup(&user.email).await.expect("lookup");
        assert_eq!(found.as_ref(), Some(&user));
        assert_eq!(users.find(&id).await.expect("find"), Some(user.clone()));
        assert_eq!(users.find("u-nobody").await.expect("find"), None);

        let a = claims(&id, 0, "a");
        let b = claims(&id, 0, "b");
        assert_eq!(state(&*sessions, &a).await, Active);

        // Logout ends one session.
        users.end_session(&a.jti, a.exp).await.expect("end session");
        assert_eq!(state(&*sessions, &a).await, Ended);
        assert_eq!(state(&*sessions, &b).await, Active);

        // Logout everywhere: generation 1.
        assert!(users.end_all_sessions(&id).await.expect("end all"));
        assert_eq!(state(&*sessions, &b).await, Ended);
        let c = claims(&id, 1, "c");
        let d = claims(&id, 1, "d");
        assert_eq!(state(&*sessions, &c).await, Active);
        let (found, _) = users.lookup(&user.email).await.expect("lookup");
        assert_eq!(
            found.map(|u| u.session_gen),
            Some(1),
            "login reads the generation"
        );

        // A password change keeps the caller's session only, and clears the failure count.
        users
            .reserve_attempt(&user.email, 500, 5, 900)
            .await
            .expect("reserve");
        assert!(
            users
                .set_password(
                    &id,
                    &user.email,
                    "new-hash",
                    EndSessions::AllExcept {
                        jti: c.jti.clone(),
                        generation: 1,
                        verified_hash: user.password_hash.clone(),
                    }
                )
                .await
                .expect("set")
        );
        // A change in flight from a session ended meanwhile, or checked against a hash that a
        // reset replaced meanwhile, writes nothing.
        for (jti, generation, verified) in [
            (b.jti.clone(), 0, "new-hash"),
            (c.jti.clone(), 1, "stale-hash"),
        ] {
            assert!(
                !users
                    .set_password(
                        &id,
                        &user.email,
                        "attackers-hash",
                        EndSessions::AllExcept {
                            jti,
                            generation,
                            verified_hash: verified.into(),
                        }
                    )
                    .await
                    .expect("set"),
                "a stale change must be refused"
            );
        }
        assert_eq!(state(&*sessions, &c).await, Active, "the keeper stands");
        assert_eq!(state(&*sessions, &d).await, Ended);
        let (found, failures) = users.lookup(&user.email).await.expect("lookup");
        let found = found.expect("account");
        assert_eq!(
            (found.password_hash.as_str(), found.session_gen),
            ("new-hash", 2)
        );
        assert_eq!(
            failures.count, 0,
            "a password update clears the failure count"
        );
        assert!(matches!(
            users.reserve_attempt(&user.email, 501, 5, 900).await.expect("reserve"),
            Attempt::Admitted(f) if f.count == 1
        ));
        let e = claims(&id, 2, "e");
        assert_eq!(state(&*sessions, &e).await, Active);

        // A reset ends every session, the keeper's too.
        assert!(
            users
                .set_password(&id, &user.email, "reset-hash", EndSessions::All)
                .await
                .expect("set")
        );
        assert_eq!(state(&*sessions, &c).await, Ended);
        assert_eq!(state(&*sessions, &e).await, Ended);
        assert_eq!(state(&*sessions, &claims(&id, 3, "f")).await, Active);

        // The email bound to another id is never written.
        assert!(
            !users
                .set_password("u-other", &user.email, "x", EndSessions::All)
                .await
                .expect("set")
        );

        // Erasure ends every session, and nothing writes the account back.
        assert!(users.erase(&id).await.expect("erase"));
        assert_eq!(state(&*sessions, &claims(&id, 3, "f")).await, Ended);
        assert!(
            !users
                .set_password(&id, &user.email, "late", EndSessions::All)
                .await
                .expect("set")
        );
        assert!(!users.end_all_sessions(&id).await.expect("end all"));
        assert_eq!(users.lookup(&user.email).await.expect("lookup").0, None);
        assert_eq!(users.find(&id).await.expect("find"), None);
        assert_eq!(
            state(&*sessions, &claims(&id, 4, "g")).await,
            Ended,
            "no item was resurrected"
        );
    }

    #[tokio::test]
    async fn memory_user_store_ends_sessions_as_the_session_store_reads_them() {
        let store = Arc::new(MemoryUserStore::new());
        suite(store.clone(), store).await;
    }

    #[cfg(feature = "e2e")]
    #[tokio::test]
    async fn dynamodb_stores_end_sessions_in_one_read_against_moto() {
        use flowbotz_security::accounts::dynamodb::DynamoUserStore;
        use flowbotz_security::revocation::dynamodb::DynamoSessionStore;
        let table = std::env::var("USERS_TABLE").unwrap_or_else(|_| "flowbotz-users".into());
        let c =
            flowbotz_security::store::dynamodb::client(std::time::Duration::from_secs(10)).await;
        suite(
            Arc::new(DynamoUserStore::new(c.clone(), table.clone())),
            Arc::new(DynamoSessionStore::new(c, table)),
        )
        .await;
    }

    /// An account item written without `email_verified_at` (an unverified or legacy item) is
    /// absent to login and to `find`.
    #[cfg(feature = "e2e")]
    #[tokio::test]
    async fn dynamodb_user_store_ignores_unverified_account_items() {
        use aws_sdk_dynamodb::types::AttributeValue::{N, S};
        use flowbotz_security::accounts::dynamodb::DynamoUserStore;
        let table = std::env::var("USERS_TABLE").unwrap_or_else(|_| "flowbotz-users".into());
        let c =
            flowbotz_security::store::dynamodb::client(std::time::Duration::from_secs(10)).await;
        let users = DynamoUserStore::new(c.clone(), table.clone());
        let user = account("unverified");
        for (pk, extra) in [
            (
                format!("email#{}", user.email),
                ("user_id", user.user_id.clone()),
            ),
            (
                format!("user#{}", user.user_id),
                ("email", user.email.clone()),
            ),
        ] {
            c.put_item()
                .table_name(&table)
                .item("pk", S(pk))
                .item(extra.0, S(extra.1))
                .item("email", S(user.email.clone()))
                .item("password_hash", S(user.password_hash.clone()))
                .item("created_at", N("1".into()))
                .send()
                .await
                .expect("put");
        }
        assert_eq!(users.lookup(&user.email).await.expect("lookup").0, None);
        assert_eq!(users.find(&user.user_id).await.expect("find"), None);
    }
}

// ------------------------------------------------------------------------------------------
// One-time tokens
// ------------------------------------------------------------------------------------------

mod tokens {
    use std::sync::Arc;

    use flowbotz_security::accounts::tokens::memory::MemoryTokenStore;
    use flowbotz_security::accounts::tokens::{
        self, Grant, OneTimeToken, PendingRegistration, Purpose, ResetGrant, TokenStore,
    };

    const NOW: u64 = 1_900_000_000;

    fn pending(label: &str) -> Grant {
        Grant::Verify(PendingRegistration {
            email: format!("{label}@example.com"),
            name: Some("Ada".into()),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        })
    }

    fn reset(label: &str) -> Grant {
        Grant::Reset(ResetGrant {
            user_id: format!("u-{label}"),
            email: format!("{label}@example.com"),
        })
    }

    pub(super) async fn suite(store: Arc<dyn TokenStore>) {
        let s = &*store;
        // Verify: single use, its purpose only, and every pending registration of one email
        // stands on its own.
        let v1 = tokens::issue(s, &pending("ada"), NOW).await.expect("issue");
        let v2 = tokens::issue(s, &pending("ada"), NOW).await.expect("issue");
        assert_ne!(v1, v2);
        assert_eq!(
            s.consume(v1.expose(), Purpose::Reset, NOW)
                .await
                .expect("c"),
            None
        );
        assert_eq!(
            s.consume(v1.expose(), Purpose::Verify, NOW + 1)
                .await
                .expect("c"),
            Some(pending("ada")),
            "a refused purpose leaves the token usable for its own"
        );
        assert_eq!(
            s.consume(v1.expose(), Purpose::Verify, NOW + 2)
                .await
                .expect("c"),
            None
        );
        assert_eq!(
            s.consume(v2.expose(), Purpose::Verify, NOW + 3)
                .await
                .expect("c"),
            Some(pending("ada"))
        );

        // Reset: a reset token never verifies, and expires after an hour.
        let r = tokens::issue(s, &reset("bob"), NOW).await.expect("issue");
        assert_eq!(
            s.consume(r.expose(), Purpose::Verify, NOW)
                .await
                .expect("c"),
            None
        );
        assert_eq!(
            s.consume(r.expose(), Purpose::Reset, NOW + 3600)
                .await
                .expect("c"),
            None,
            "expired"
        );
        let r = tokens::issue(s, &reset("bob"), NOW).await.expect("issue");
        assert_eq!(
            s.consume(r.expose(), Purpose::Reset, NOW + 3599)
                .await
                .expect("c"),
            Some(reset("bob"))
        );
        let v = tokens::issue(s, &pending("late"), NOW)
            .await
            .expect("issue");
        assert_eq!(
            s.consume(v.expose(), Purpose::Verify, NOW + 86_400)
                .await
                .expect("c"),
            None,
            "a verification token lasts 24 hours"
        );

        // Unknown, malformed, and a token's hash presented as a token: nothing.
        let unknown = OneTimeToken::generate().expect("token");
        for t in [
            unknown.expose(),
            "",
            "short",
            &"x".repeat(4096),
            &unknown.hash(),
        ] {
            assert_eq!(s.consume(t, Purpose::Verify, NOW).await.expect("c"), None);
        }
        // The hash is the key: storing one twice is refused, never overwritten.
        let h = OneTimeToken::generate().expect("token").hash();
        s.put(&h, &reset("x"), NOW + 60).await.expect("put");
        assert!(s.put(&h, &pending("y"), NOW + 60).await.is_err());
    }

    /// Many consumers racing one token: exactly one gets the grant.
    pub(super) async fn race(stores: Vec<Arc<dyn TokenStore>>) {
        let token = tokens::issue(&*stores[0], &reset("race"), NOW)
            .await
            .expect("issue");
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let store = Arc::clone(&stores[i % stores.len()]);
                let t = token.expose().to_string();
                tokio::spawn(async move { store.consume(&t, Purpose::Reset, NOW + 1).await })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            if t.await.expect("task").expect("consume").is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "24 racing consumers, one winner");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_token_store_conforms() {
        let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new());
        suite(store.clone()).await;
        race(vec![store]).await;
    }

    #[cfg(feature = "e2e")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dynamodb_token_store_conforms_against_moto_across_instances() {
        use flowbotz_security::accounts::tokens::dynamodb::DynamoTokenStore;
        let table = std::env::var("USERS_TABLE").unwrap_or_else(|_| "flowbotz-users".into());
        let mut stores: Vec<Arc<dyn TokenStore>> = Vec::new();
        for _ in 0..8 {
            let c = flowbotz_security::store::dynamodb::client(std::time::Duration::from_secs(10))
                .await;
            stores.push(Arc::new(DynamoTokenStore::new(c, table.clone())));
        }
        suite(stores[0].clone()).await;
        race(stores.clone()).await;
        // Stored only as a hash, with the TTL attribute at the expiry.
        let token = tokens::issue(&*stores[0], &reset("stored"), NOW)
            .await
            .expect("issue");
        let c =
            flowbotz_security::store::dynamodb::client(std::time::Duration::from_secs(10)).await;
        let item = c
            .get_item()
            .table_name(&table)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("token#{}", token.hash())),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("get")
            .item
            .expect("stored under its hash");
        assert_eq!(
            item.get("expires_at")
                .and_then(|v| v.as_n().ok())
                .map(String::as_str),
            Some("1900003600")
        );
        assert!(
            item.values()
                .all(|v| v.as_s().map_or(true, |s| !s.contains(token.expose())))
        );
    }
}

// ------------------------------------------------------------------------------------------
// Mail through the SES v2 SDK to the local SES
// ------------------------------------------------------------------------------------------

#[cfg(feature = "e2e")]
mod mail {
    use std::time::Duration;

    use flowbotz_security::accounts::tokens::OneTimeToken;
    use flowbotz_security::mail::ses::{SesMailer, client};
    use flowbotz_security::mail::{self, Links, Mailer};
    use flowbotz_tests::mailbox::wait_for_mail;

    #[tokio::test]
    async fn ses_mailer_sends_through_the_sdk_and_the_local_mailbox_shows_it() {
        let from = std::env::var("MAIL_FROM").unwrap_or_else(|_| "no-reply@flowbotz.test".into());
        let c = client(Duration::from_secs(5)).await;
        let to = format!(
            "mail-{}@example.com",
            flowbotz_tests::events::unique_ip().replace([':', '.'], "")
        );
        let links = Links::new("http://localhost:5173");
        let token = OneTimeToken::generate().expect("token");
        SesMailer::new(c.clone(), from.clone())
            .send(&mail::verification(&to, &links, token.expose()))
            .await
            .expect("sent through SES v2");
        let mails = wait_for_mail(&to, 1, Duration::from_secs(5)).await;
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].from, from);
        assert_eq!(mails[0].subject, mail::VERIFY_SUBJECT);
        assert_eq!(
            mails[0].link_token("verify").as_deref(),
            Some(token.expose())
        );
        assert!(
            mails[0]
                .text
                .contains(&format!("http://localhost:5173/#verify={}", token.expose()))
        );

        // A sender identity that SES has not verified is refused, and nothing is kept.
        let refused = SesMailer::new(c, "someone@unverified.example")
            .send(&mail::no_account(&to))
            .await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(flowbotz_tests::mailbox::mailbox(&to).await.len(), 1);
    }
}

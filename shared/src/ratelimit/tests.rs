use std::sync::Arc;
use std::time::Duration;

use super::memory::MemoryStore;
use super::*;
use crate::clock::ManualClock;

const T0: u64 = 1_700_000_040_000; // a whole minute
const LOGIN: RateLimit = RateLimit {
    per_minute: 5,
    burst: Some(3),
};

fn limiter() -> (RateLimiter, ManualClock, Arc<MemoryStore>) {
    let clock = ManualClock::at_ms(T0);
    let store = Arc::new(MemoryStore::new());
    let block = BlockPolicy {
        violations: 10,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(900),
    };
    let l = RateLimiter::new(
        store.clone(),
        Arc::new(clock.clone()),
        block,
        ["login", "health"],
        Duration::from_secs(1),
    );
    (l, clock, store)
}

async fn verdicts(l: &RateLimiter, n: usize, limits: RateLimit) -> Vec<Verdict> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            l.check("login", Subject::Ip("1.2.3.4"), limits)
                .await
                .expect("check")
                .verdict,
        );
    }
    out
}

#[tokio::test]
async fn given_burst_3_per_10s_when_4_requests_at_once_then_4th_is_limited() {
    let (l, _, _) = limiter();
    let v = verdicts(&l, 4, LOGIN).await;
    assert_eq!(
        v,
        [
            Verdict::Admitted,
            Verdict::Admitted,
            Verdict::Admitted,
            Verdict::Limited
        ]
    );
}

#[tokio::test]
async fn given_burst_window_rolls_when_minute_is_full_then_6th_is_limited() {
    let (l, clock, _) = limiter();
    assert_eq!(verdicts(&l, 3, LOGIN).await, [Verdict::Admitted; 3]);
    clock.advance_ms(20_000);
    assert_eq!(verdicts(&l, 2, LOGIN).await, [Verdict::Admitted; 2]);
    clock.advance_ms(20_000);
    let d = l
        .check("login", Subject::Ip("1.2.3.4"), LOGIN)
        .await
        .expect("check");
    assert_eq!(d.verdict, Verdict::Limited);
    assert!(
        d.retry_after_secs >= 1 && d.retry_after_secs <= 120,
        "{}",
        d.retry_after_secs
    );
    clock.advance_ms(d.retry_after_secs * 1000);
    assert_eq!(verdicts(&l, 1, LOGIN).await, [Verdict::Admitted]);
}

#[tokio::test]
async fn given_other_ip_or_user_when_checking_then_counts_are_separate() {
    let (l, _, _) = limiter();
    let limits = RateLimit {
        per_minute: 1,
        burst: None,
    };
    assert_eq!(
        l.check("login", Subject::Ip("1.1.1.1"), limits)
            .await
            .expect("c")
            .verdict,
        Verdict::Admitted
    );
    assert_eq!(
        l.check("login", Subject::Ip("1.1.1.1"), limits)
            .await
            .expect("c")
            .verdict,
        Verdict::Limited
    );
    assert_eq!(
        l.check("login", Subject::Ip("2.2.2.2"), limits)
            .await
            .expect("c")
            .verdict,
        Verdict::Admitted
    );
    assert_eq!(
        l.check("login", Subject::User("1.1.1.1"), limits)
            .await
            .expect("c")
            .verdict,
        Verdict::Admitted
    );
}

#[tokio::test]
async fn given_ten_violations_when_checking_then_ip_is_blocked_everywhere_until_it_ends() {
    let (l, clock, _) = limiter();
    let limits = RateLimit {
        per_minute: 1,
        burst: None,
    };
    l.check("login", Subject::Ip("6.6.6.6"), limits)
        .await
        .expect("c");
    let mut blocked_at = None;
    for i in 1..=10 {
        let d = l
            .check("login", Subject::Ip("6.6.6.6"), limits)
            .await
            .expect("c");
        assert_eq!(d.verdict, Verdict::Limited);
        if let Some(secs) = l.record_violation("6.6.6.6").await.expect("v") {
            blocked_at = Some((i, secs));
        }
    }
    assert_eq!(blocked_at, Some((10, 900)));
    let d = l
        .check("health", Subject::Ip("6.6.6.6"), limits)
        .await
        .expect("c");
    assert_eq!(d.verdict, Verdict::Blocked);
    assert_eq!(d.retry_after_secs, 900);
    clock.advance_ms(901_000);
    let d = l
        .check("health", Subject::Ip("6.6.6.6"), limits)
        .await
        .expect("c");
    assert_eq!(d.verdict, Verdict::Admitted);
}

#[tokio::test]
async fn given_a_block_written_by_another_instance_when_checking_then_refused() {
    let (a, clock, store) = limiter();
    let block = BlockPolicy {
        violations: 1,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(60),
    };
    let b = RateLimiter::new(
        store.clone(),
        Arc::new(clock.clone()),
        block,
        ["login", "health"],
        Duration::from_secs(1),
    );
    let limits = RateLimit {
        per_minute: 100,
        burst: None,
    };
    assert_eq!(
        a.check("health", Subject::Ip("7.7.7.7"), limits)
            .await
            .expect("c")
            .verdict,
        Verdict::Admitted
    );
    assert_eq!(b.record_violation("7.7.7.7").await.expect("v"), Some(60));
    let d = a
        .check("health", Subject::Ip("7.7.7.7"), limits)
        .await
        .expect("c");
    assert_eq!(d.verdict, Verdict::Blocked);
    assert_eq!(d.retry_after_secs, 60);
}

#[tokio::test]
async fn given_steady_state_when_checking_then_one_store_request_per_check() {
    let (l, clock, store) = limiter();
    let limits = RateLimit {
        per_minute: 1000,
        burst: Some(1000),
    };
    l.check("health", Subject::Ip("9.9.9.9"), limits)
        .await
        .expect("c");
    let before = store.requests();
    for _ in 0..5 {
        clock.advance_ms(100);
        l.check("health", Subject::Ip("9.9.9.9"), limits)
            .await
            .expect("c");
    }
    assert_eq!(store.requests() - before, 5);
}

#[tokio::test]
async fn given_two_instances_when_racing_then_the_total_admitted_is_the_limit() {
    let (a, clock, store) = limiter();
    let b = RateLimiter::new(
        store.clone(),
        Arc::new(clock.clone()),
        a.block,
        ["login"],
        Duration::from_secs(1),
    );
    let limits = RateLimit {
        per_minute: 5,
        burst: None,
    };
    let mut admitted = 0;
    for i in 0..20 {
        let l = if i % 2 == 0 { &a } else { &b };
        if l.check("login", Subject::Ip("5.5.5.5"), limits)
            .await
            .expect("c")
            .verdict
            == Verdict::Admitted
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
}

#[test]
fn given_a_decision_when_writing_headers_then_draft_syntax_is_used() {
    let d = Decision {
        verdict: Verdict::Admitted,
        windows: vec![
            WindowStatus {
                name: "minute",
                limit: 5,
                window_secs: 60,
                remaining: 2,
                reset_secs: 41,
            },
            WindowStatus {
                name: "burst",
                limit: 3,
                window_secs: 10,
                remaining: 1,
                reset_secs: 7,
            },
        ],
        retry_after_secs: 0,
    };
    let mut h = HeaderMap::new();
    d.write_headers(&mut h);
    assert_eq!(
        h["ratelimit-policy"],
        "\"minute\";q=5;w=60, \"burst\";q=3;w=10"
    );
    assert_eq!(h["ratelimit"], "\"minute\";r=2;t=41, \"burst\";r=1;t=7");
    assert_eq!(h["x-ratelimit-limit"], "5");
    assert_eq!(h["x-ratelimit-remaining"], "1");
    assert_eq!(h["x-ratelimit-reset"], "7");
}

fn decision(verdict: Verdict, remaining: u32, reset_secs: u64) -> Decision {
    Decision {
        verdict,
        windows: vec![WindowStatus {
            name: "minute",
            limit: 10,
            window_secs: 60,
            remaining,
            reset_secs,
        }],
        retry_after_secs: 0,
    }
}

#[test]
fn given_two_decisions_when_combined_then_the_stricter_one_wins_in_either_order() {
    let admitted = decision(Verdict::Admitted, 5, 30);
    let tight = decision(Verdict::Admitted, 1, 30);
    let limited = decision(Verdict::Limited, 0, 30);
    let blocked = decision(Verdict::Blocked, 0, 30);
    for (a, b, want) in [
        (&admitted, &tight, &tight),
        (&admitted, &limited, &limited),
        (&limited, &blocked, &blocked),
        (&admitted, &blocked, &blocked),
    ] {
        assert_eq!(&a.clone().stricter(b.clone()), want);
        assert_eq!(&b.clone().stricter(a.clone()), want);
    }
    // A tie keeps the first (the per-IP decision), whatever the second's other fields.
    let other = decision(Verdict::Admitted, 5, 12);
    assert_eq!(admitted.clone().stricter(other.clone()), admitted);
    assert_eq!(other.clone().stricter(admitted), other);
}

#[test]
fn given_a_limiter_when_debug_formatted_then_it_names_itself_and_its_block_policy_only() {
    let (l, _, _) = limiter();
    let debug = format!("{l:?}");
    assert!(debug.starts_with("RateLimiter"), "{debug}");
    assert!(debug.contains("violations: 10"), "{debug}");
    assert!(!debug.contains("store"), "{debug}");
}

/// A [`MemoryStore`] that also keeps the TTL each update would write.
#[derive(Default)]
struct TtlStore {
    inner: MemoryStore,
    expires: std::sync::Mutex<Vec<(String, u64)>>,
}

#[async_trait::async_trait]
impl RateLimitStore for TtlStore {
    async fn apply(
        &self,
        key: &str,
        update: &window::CounterUpdate,
    ) -> Result<UpdateOutcome, StoreError> {
        self.expires
            .lock()
            .expect("lock")
            .push((key.to_string(), update.expires_at_s));
        self.inner.apply(key, update).await
    }

    async fn block(
        &self,
        keys: &[String],
        until_s: u64,
        expires_at_s: u64,
    ) -> Result<(), StoreError> {
        for key in keys {
            self.expires
                .lock()
                .expect("lock")
                .push((format!("block {key}"), expires_at_s));
        }
        self.inner.block(keys, until_s, expires_at_s).await
    }

    fn requests(&self) -> u64 {
        self.inner.requests()
    }
}

#[tokio::test]
async fn given_a_check_or_violation_when_written_then_items_expire_two_windows_later() {
    let clock = ManualClock::at_ms(T0 + 500);
    let store = Arc::new(TtlStore::default());
    let block = BlockPolicy {
        violations: 10,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(900),
    };
    let l = RateLimiter::new(
        store.clone(),
        Arc::new(clock.clone()),
        block,
        ["login"],
        Duration::from_secs(1),
    );
    l.check("login", Subject::Ip("1.2.3.4"), LOGIN)
        .await
        .expect("c");
    l.record_violation("1.2.3.4").await.expect("v");
    let t0_s = T0 / 1000;
    assert_eq!(
        *store.expires.lock().expect("lock"),
        [
            ("ip#1.2.3.4#login".to_string(), t0_s + 120 + 1),
            ("violations#1.2.3.4".to_string(), t0_s + 1200 + 1),
        ],
        "the longest window twice, rounded up to the next second"
    );
    assert_eq!(l.store_requests(), 2);
    l.check("login", Subject::Ip("1.2.3.4"), LOGIN)
        .await
        .expect("c");
    assert_eq!(l.store_requests(), 3);
}

#[tokio::test]
async fn given_a_known_block_when_checking_then_no_store_request_until_it_ends_exactly() {
    let (l, clock, store) = limiter();
    let limits = RateLimit {
        per_minute: 1,
        burst: None,
    };
    l.check("login", Subject::Ip("6.6.6.6"), limits)
        .await
        .expect("c");
    for _ in 0..10 {
        l.check("login", Subject::Ip("6.6.6.6"), limits)
            .await
            .expect("c");
        l.record_violation("6.6.6.6").await.expect("v");
    }
    let before = store.requests();
    let d = l
        .check("health", Subject::Ip("6.6.6.6"), limits)
        .await
        .expect("c");
    assert_eq!((d.verdict, d.retry_after_secs), (Verdict::Blocked, 900));
    assert_eq!(
        store.requests(),
        before,
        "a block this instance knows costs no request"
    );
    clock.advance_ms(899_000);
    let d = l
        .check("health", Subject::Ip("6.6.6.6"), limits)
        .await
        .expect("c");
    assert_eq!((d.verdict, d.retry_after_secs), (Verdict::Blocked, 1));
    assert_eq!(store.requests(), before);
    clock.advance_ms(1_000);
    let d = l
        .check("health", Subject::Ip("6.6.6.6"), limits)
        .await
        .expect("c");
    assert_eq!(d.verdict, Verdict::Admitted, "the block ends at its second");
}

#[tokio::test]
async fn given_a_block_that_ended_when_another_instance_meets_it_then_admitted() {
    let (a, clock, store) = limiter();
    let block = BlockPolicy {
        violations: 1,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(5),
    };
    let b = RateLimiter::new(
        store.clone(),
        Arc::new(clock.clone()),
        block,
        ["login", "health"],
        Duration::from_secs(1),
    );
    let limits = RateLimit {
        per_minute: 100,
        burst: None,
    };
    // `a` has a belief about the item from one minute; in the next, `b` rolls the window over
    // and blocks the IP for 5 s.
    a.check("health", Subject::Ip("8.8.4.4"), limits)
        .await
        .expect("c");
    clock.advance_ms(60_000);
    b.check("health", Subject::Ip("8.8.4.4"), limits)
        .await
        .expect("c");
    assert_eq!(b.record_violation("8.8.4.4").await.expect("v"), Some(5));
    // Exactly when the block ends, `a`'s stale belief fails its condition and the item it gets
    // back carries the ended block: admitted, not blocked.
    clock.advance_ms(5_000);
    let d = a
        .check("health", Subject::Ip("8.8.4.4"), limits)
        .await
        .expect("c");
    assert_eq!(d.verdict, Verdict::Admitted);
}

#[tokio::test]
async fn given_two_keys_interleaved_when_checking_then_each_keeps_one_request_per_check() {
    let (l, clock, store) = limiter();
    let limits = RateLimit {
        per_minute: 1000,
        burst: Some(1000),
    };
    for ip in ["9.9.9.1", "9.9.9.2"] {
        l.check("health", Subject::Ip(ip), limits).await.expect("c");
    }
    let before = store.requests();
    for _ in 0..5 {
        clock.advance_ms(100);
        for ip in ["9.9.9.1", "9.9.9.2"] {
            l.check("health", Subject::Ip(ip), limits).await.expect("c");
        }
    }
    assert_eq!(store.requests() - before, 10);
}

#[tokio::test]
async fn given_a_check_when_deciding_then_each_window_reports_limit_length_remaining_and_reset() {
    let (l, clock, _) = limiter();
    clock.advance_ms(2_500);
    let d = l
        .check("login", Subject::Ip("5.5.5.5"), LOGIN)
        .await
        .expect("c");
    let windows: Vec<_> = d
        .windows
        .iter()
        .map(|w| (w.name, w.limit, w.window_secs, w.remaining, w.reset_secs))
        .collect();
    assert_eq!(windows, [("minute", 5, 60, 4, 58), ("burst", 3, 10, 2, 8)]);
    assert_eq!(d.retry_after_secs, 0);
    for _ in 0..10 {
        l.check("login", Subject::Ip("5.5.5.5"), LOGIN)
            .await
            .expect("c");
        l.record_violation("5.5.5.5").await.expect("v");
    }
    let d = l
        .check("login", Subject::Ip("5.5.5.5"), LOGIN)
        .await
        .expect("c");
    assert_eq!(d.verdict, Verdict::Blocked);
    assert!(d.windows.iter().all(|w| w.remaining == 0), "{d:?}");
}

#[tokio::test]
async fn given_a_block_when_written_then_its_items_expire_a_minute_after_it_ends() {
    let clock = ManualClock::at_ms(T0 + 500);
    let store = Arc::new(TtlStore::default());
    let block = BlockPolicy {
        violations: 1,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(900),
    };
    let l = RateLimiter::new(
        store.clone(),
        Arc::new(clock.clone()),
        block,
        ["login", "health"],
        Duration::from_secs(1),
    );
    assert_eq!(l.record_violation("1.2.3.4").await.expect("v"), Some(900));
    let expires = store.expires.lock().expect("lock").clone();
    let t0_s = T0 / 1000;
    assert_eq!(
        expires[1..],
        [
            ("block ip#1.2.3.4#login".to_string(), t0_s + 900 + 60),
            ("block ip#1.2.3.4#health".to_string(), t0_s + 900 + 60),
        ]
    );
}

#[tokio::test]
async fn given_nine_violations_when_ten_minutes_pass_then_they_age_out_and_a_tenth_blocks_nothing()
{
    // The configuration's default block policy: 10 violations within 10 minutes.
    let config = crate::Config::from_lookup(|k| (k == "ENVIRONMENT").then(|| "development".into()))
        .expect("config");
    assert_eq!(
        (config.block.violations, config.block.window),
        (10, Duration::from_secs(600))
    );
    // The last second of a 10-minute window.
    let start = 1_800_000_000_000 + 599_000;
    let limiter = |clock: &ManualClock| {
        RateLimiter::new(
            Arc::new(MemoryStore::new()),
            Arc::new(clock.clone()),
            config.block,
            ["login"],
            Duration::from_secs(1),
        )
    };
    for (later_ms, blocks) in [(0, true), (600_000, false), (1_200_000, false)] {
        let clock = ManualClock::at_ms(start);
        let l = limiter(&clock);
        for _ in 0..9 {
            assert_eq!(l.record_violation("7.7.7.7").await.expect("v"), None);
        }
        clock.advance_ms(later_ms);
        let tenth = l.record_violation("7.7.7.7").await.expect("v");
        assert_eq!(
            tenth.is_some(),
            blocks,
            "a tenth violation {later_ms} ms after nine: {tenth:?}"
        );
    }
}

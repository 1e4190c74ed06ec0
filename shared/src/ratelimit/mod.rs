//! Rate limiting: a per-minute sliding window and a 10-second burst window per key, IP
//! blocking after repeated violations, and the rate-limit response headers.
//!
//! # Algorithm and error bound
//!
//! Each window is a sliding-window counter (see [`window`]): the estimate of requests in the
//! last `W` is `current + ceil(previous * (W - e) / W)` and a request is admitted while the
//! estimate is below the limit `L`. The estimate assumes the previous fixed window's requests
//! were spread evenly; when they were, or when they came early in it, no interval of length `W`
//! holds more than `L` admitted requests. The exact error bound, for the worst case where all
//! of the previous window's `p <= L` requests came at its very end: an interval of length `W`
//! ending `e` into the current window holds at most `L + p - ceil(p * (W - e) / W)`
//! `= L + floor(p * e / W) < 2L` admitted requests. The 10-second burst window caps how many of
//! those can arrive together.
//!
//! # Exactness across instances
//!
//! Admission is decided by the store in one conditional write whose conditions compare
//! attributes with constants ([`window::CounterUpdate`]); a failed condition returns the stored
//! item, from which the limiter either refuses or retries with the true state. The count of
//! admitted requests is therefore exactly what the algorithm allows, however many instances
//! check one key at once.
//!
//! # Cost
//!
//! Each instance remembers the last item it saw per key. When the remembered window is the
//! current one, a check is one `UpdateItem`; when a window has rolled over and another instance
//! rolled it first, or on the first check of a key in a new instance, it is two. Refusals that
//! the remembered state already proves cost nothing. Blocks live in the same items, so checking
//! them costs nothing either.

pub mod memory;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::Clock;
use crate::config::{BlockPolicy, RateLimit};
use window::{CounterItem, CounterUpdate, SLOTS, WindowSpec};

/// Most conditional writes one check makes before refusing under contention.
const MAX_ATTEMPTS: usize = 4;
/// Most keys whose last state an instance remembers.
const CACHE_CAPACITY: usize = 10_000;

/// A failure of the counter store.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The store answered with an error or could not be reached; the text is for logs only.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within the bound.
    #[error("store timed out")]
    Timeout,
}

/// The result of one conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The conditions held; the item as written.
    Applied(CounterItem),
    /// A condition failed; the item as stored (`None` if there is none).
    ConditionFailed(Option<CounterItem>),
}

/// Where counters live: one atomic conditional write per call.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Applies `update` to the item `key` if all its conditions hold, atomically.
    async fn apply(&self, key: &str, update: &CounterUpdate) -> Result<UpdateOutcome, StoreError>;

    /// Marks every item in `keys` blocked until `until_s` (epoch seconds), creating missing
    /// ones; the items may expire at `expires_at_s`.
    async fn block(
        &self,
        keys: &[String],
        until_s: u64,
        expires_at_s: u64,
    ) -> Result<(), StoreError>;

    /// Requests sent to the backing service so far (for benchmarks and tests).
    fn requests(&self) -> u64;
}

/// Who a check counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A client IP.
    Ip(&'a str),
    /// An authenticated user id.
    User(&'a str),
    /// A client IP on an endpoint that is never IP-blocked (the Stripe webhook, authenticated
    /// by its signature): counted in its own items, which blocks never mark, and unaffected by
    /// blocks of the IP elsewhere.
    UnblockableIp(&'a str),
}

/// The state of one window after a check, for headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowStatus {
    /// `minute` or `burst`.
    pub name: &'static str,
    /// The limit.
    pub limit: u32,
    /// The window's length in seconds.
    pub window_secs: u64,
    /// Requests left.
    pub remaining: u32,
    /// Seconds until the current fixed window ends.
    pub reset_secs: u64,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted.
    Admitted,
    /// Refused: a window is full.
    Limited,
    /// Refused: the IP is blocked.
    Blocked,
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The outcome of a check with what the headers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Admitted or why not.
    pub verdict: Verdict,
    /// Each window's state.
    pub windows: Vec<WindowStatus>,
    /// Seconds until a request would be admitted (0 when admitted).
    pub retry_after_secs: u64,
}

impl Decision {
    fn smallest_remaining(&self) -> Option<&WindowStatus> {
        self.windows
            .iter()
            .min_by_key(|w| (w.remaining, std::cmp::Reverse(w.reset_secs)))
    }

    /// Of two decisions (per IP and per user), the one a client should heed.
    pub fn stricter(self, other: Decision) -> Decision {
        let rank = |d: &Decision| match d.verdict {
            Verdict::Blocked => 2,
            Verdict::Limited => 1,
            Verdict::Admitted => 0,
        };
        let rem = |d: &Decision| d.smallest_remaining().map_or(u32::MAX, |w| w.remaining);
        if (rank(&other), std::cmp::Reverse(rem(&other)))
            > (rank(&self), std::cmp::Reverse(rem(&self)))
        {
            other
        } else {
            self
        }
    }

    /// Writes `RateLimit-Policy`, `RateLimit` (IETF httpapi draft syntax) and the
    /// `X-RateLimit-*` headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let policy = self
            .windows
            .iter()
            .map(|w| format!("\"{}\";q={};w={}", w.name, w.limit, w.window_secs))
            .collect::<Vec<_>>()
            .join(", ");
        let state = self
            .windows
            .iter()
            .map(|w| format!("\"{}\";r={};t={}", w.name, w.remaining, w.reset_secs))
            .collect::<Vec<_>>()
            .join(", ");
        for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        if let Some(main) = self.windows.first() {
            headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(main.limit));
        }
        if let Some(tight) = self.smallest_remaining() {
            headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(tight.remaining));
            headers.insert(X_RATELIMIT_RESET, HeaderValue::from(tight.reset_secs));
        }
    }
}

/// The rate limiter shared by a function's requests.
pub struct RateLimiter {
    store: Arc<dyn RateLimitStore>,
    clock: Arc<dyn Clock>,
    block: BlockPolicy,
    policies: Vec<String>,
    timeout: Duration,
    seen: Mutex<HashMap<String, CounterItem>>,
    blocked: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

/// Why a check could not decide.
pub type CheckError = StoreError;

fn specs(limits: RateLimit) -> [Option<(&'static str, WindowSpec)>; SLOTS] {
    [
        Some((
            "minute",
            WindowSpec {
                limit: limits.per_minute,
                window_ms: 60_000,
            },
        )),
        limits.burst.map(|b| {
            (
                "burst",
                WindowSpec {
                    limit: b,
                    window_ms: 10_000,
                },
            )
        }),
    ]
}

impl RateLimiter {
    /// A limiter over `store`. `policies` names every policy, so a block can cover every
    /// endpoint; `timeout` bounds each store call.
    pub fn new(
        store: Arc<dyn RateLimitStore>,
        clock: Arc<dyn Clock>,
        block: BlockPolicy,
        policies: impl IntoIterator<Item = impl Into<String>>,
        timeout: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            block,
            policies: policies.into_iter().map(Into::into).collect(),
            timeout,
            seen: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// The store's request count.
    pub fn store_requests(&self) -> u64 {
        self.store.requests()
    }

    fn key(policy: &str, subject: Subject<'_>) -> String {
        match subject {
            Subject::Ip(ip) => format!("ip#{ip}#{policy}"),
            Subject::User(id) => format!("user#{id}#{policy}"),
            Subject::UnblockableIp(ip) => format!("source#{ip}#{policy}"),
        }
    }

    /// Seconds left on a block of `ip` this instance knows about.
    pub fn known_block(&self, ip: &str) -> Option<u64> {
        let now = self.clock.now_s();
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(ip) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                blocked.remove(ip);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: &str, item: CounterItem) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= CACHE_CAPACITY {
            seen.clear();
        }
        seen.insert(key.to_string(), item);
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    /// Counts one request of `subject` against `policy`'s `limits`.
    pub async fn check(
        &self,
        policy: &str,
        subject: Subject<'_>,
        limits: RateLimit,
    ) -> Result<Decision, CheckError> {
        if let Subject::Ip(ip) = subject
            && let Some(left) = self.known_block(ip)
        {
            return Ok(self.decision(Verdict::Blocked, None, limits, left));
        }
        let key = Self::key(policy, subject);
        let specs = specs(limits);
        let mut belief = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let longest = specs
            .iter()
            .flatten()
            .map(|(_, s)| s.window_ms)
            .max()
            .unwrap_or(60_000);
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now_ms();
            let mut steps = [None; SLOTS];
            let mut refused = false;
            for (slot, spec) in specs.iter().enumerate() {
                if let Some((_, spec)) = spec {
                    match window::plan(belief.and_then(|b| b.windows[slot]), *spec, now) {
                        Some(step) => steps[slot] = Some(step),
                        None => refused = true,
                    }
                }
            }
            if refused {
                return Ok(self.decision(Verdict::Limited, belief, limits, 0));
            }
            let update = CounterUpdate {
                steps,
                now_s: now / 1000,
                expires_at_s: (now + 2 * longest) / 1000 + 1,
            };
            match self.call(self.store.apply(&key, &update)).await? {
                UpdateOutcome::Applied(item) => {
                    self.remember(&key, item);
                    return Ok(self.decision(Verdict::Admitted, Some(item), limits, 0));
                }
                UpdateOutcome::ConditionFailed(item) => {
                    if let (Subject::Ip(ip), Some(until)) =
                        (subject, item.and_then(|i| i.blocked_until_s))
                        && until > now / 1000
                    {
                        self.blocked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(ip.to_string(), until);
                        return Ok(self.decision(
                            Verdict::Blocked,
                            item,
                            limits,
                            until - now / 1000,
                        ));
                    }
                    belief = item;
                    if let Some(i) = item {
                        self.remember(&key, i);
                    }
                }
            }
        }
        Ok(self.decision(Verdict::Limited, belief, limits, 0))
    }

    fn decision(
        &self,
        verdict: Verdict,
        item: Option<CounterItem>,
        limits: RateLimit,
        block_secs: u64,
    ) -> Decision {
        let now = self.clock.now_ms();
        let mut windows = Vec::new();
        let mut wait = 0;
        for (slot, spec) in specs(limits).iter().enumerate() {
            let Some((name, spec)) = spec else { continue };
            let stored = item.and_then(|i| i.windows[slot]);
            let index_end = (now / spec.window_ms + 1) * spec.window_ms;
            windows.push(WindowStatus {
                name,
                limit: spec.limit,
                window_secs: spec.window_ms / 1000,
                remaining: if verdict == Verdict::Blocked {
                    0
                } else {
                    window::remaining(stored, *spec, now)
                },
                reset_secs: (index_end - now).div_ceil(1000),
            });
            if verdict == Verdict::Limited {
                wait = wait.max(window::wait_ms(stored, *spec, now));
            }
        }
        let retry_after_secs = match verdict {
            Verdict::Admitted => 0,
            Verdict::Limited => wait.div_ceil(1000).max(1),
            Verdict::Blocked => block_secs.max(1),
        };
        Decision {
            verdict,
            windows,
            retry_after_secs,
        }
    }

    /// Records a rate-limit violation by `ip`; when it is the one that reaches the block
    /// policy's count within its window, blocks the IP on every policy and returns the block's
    /// length in seconds.
    pub async fn record_violation(&self, ip: &str) -> Result<Option<u64>, CheckError> {
        let spec = WindowSpec {
            limit: self.block.violations,
            window_ms: self.block.window.as_millis() as u64,
        };
        let key = format!("violations#{ip}");
        let mut belief = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let mut reached = true;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now_ms();
            let Some(step) = window::plan(belief.and_then(|b| b.windows[0]), spec, now) else {
                break;
            };
            let update = CounterUpdate {
                steps: [Some(step), None],
                now_s: now / 1000,
                expires_at_s: (now + 2 * spec.window_ms) / 1000 + 1,
            };
            match self.call(self.store.apply(&key, &update)).await? {
                UpdateOutcome::Applied(item) => {
                    self.remember(&key, item);
                    reached = window::remaining(item.windows[0], spec, now) == 0;
                    break;
                }
                UpdateOutcome::ConditionFailed(item) => belief = item,
            }
        }
        if !reached {
            return Ok(None);
        }
        let now = self.clock.now_s();
        let secs = self.block.duration.as_secs();
        let until = now + secs;
        let keys: Vec<String> = self
            .policies
            .iter()
            .map(|p| Self::key(p, Subject::Ip(ip)))
            .collect();
        self.call(self.store.block(&keys, until, until + 60))
            .await?;
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ip.to_string(), until);
        Ok(Some(secs))
    }
}

#[cfg(test)]
mod tests;

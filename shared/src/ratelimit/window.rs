//! The sliding-window-counter algorithm, as pure functions over a counter item.
//!
//! Each window of length `W` keeps the count of the current fixed window (`current`, for the
//! window with number `index = now / W`) and the final count of the one before (`previous`).
//! At `e` milliseconds into the current window, the estimate of requests in the sliding window
//! `(now - W, now]` is `current + ceil(previous * (W - e) / W)`; a request is admitted when
//! the estimate is below the limit. Rounding up keeps a just-full window closed until a whole
//! request's share of it has slid out.
//!
//! A store applies a [`CounterUpdate`] atomically: each window's [`Step`] is a condition on the
//! stored item plus a change. Conditions compare attributes with constants only, so DynamoDB
//! can evaluate them in a conditional `UpdateItem`, and no admission ever depends on a value
//! read earlier: the limiter never admits more than the algorithm allows, however many
//! instances race on one key.

/// One window of a policy: at most `limit` requests per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Requests allowed per window.
    pub limit: u32,
    /// The window's length in milliseconds.
    pub window_ms: u64,
}

/// The stored state of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// The number of the fixed window `current` counts (`time / window_ms`).
    pub index: u64,
    /// Requests admitted in that fixed window.
    pub current: u32,
    /// Requests admitted in the fixed window before it.
    pub previous: u32,
}

/// The number of windows a counter item holds (a policy's main and burst windows).
pub const SLOTS: usize = 2;

/// A stored counter item: up to [`SLOTS`] windows and an optional block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterItem {
    /// The windows, by slot.
    pub windows: [Option<Window>; SLOTS],
    /// Epoch second until which the key is blocked.
    pub blocked_until_s: Option<u64>,
}

/// The conditional change to one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The stored window is `index` with `previous`, and `current < below`: add one.
    Increment {
        /// Expected window number.
        index: u64,
        /// Expected previous count.
        previous: u32,
        /// `current` must be below this.
        below: u32,
    },
    /// The stored window is `from` and `current <= max_current`: roll to `index`, moving the
    /// count to `previous` and starting `current` at one.
    Roll {
        /// Expected window number (`index - 1`).
        from: u64,
        /// The new window number.
        index: u64,
        /// The largest stored count that still admits this request after the roll.
        max_current: u32,
    },
    /// No window is stored, or it is older than `before`: start `index` at one.
    Start {
        /// The stored window number must be below this (`index - 1`).
        before: u64,
        /// The new window number.
        index: u64,
    },
}

/// An atomic update of one counter item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterUpdate {
    /// The change per slot; `None` leaves that slot alone.
    pub steps: [Option<Step>; SLOTS],
    /// The current time in seconds; the update requires no block lasting beyond it.
    pub now_s: u64,
    /// Epoch second after which the item may be deleted (the table's TTL attribute).
    pub expires_at_s: u64,
}

impl Step {
    /// Whether the stored window satisfies this step's condition.
    pub fn holds(&self, stored: Option<Window>) -> bool {
        match (*self, stored) {
            (
                Self::Increment {
                    index,
                    previous,
                    below,
                },
                Some(w),
            ) => w.index == index && w.previous == previous && w.current < below,
            (
                Self::Roll {
                    from, max_current, ..
                },
                Some(w),
            ) => w.index == from && w.current <= max_current,
            (Self::Start { .. }, None) => true,
            (Self::Start { before, .. }, Some(w)) => w.index < before,
            _ => false,
        }
    }

    /// The window after this step.
    pub fn apply(&self, stored: Option<Window>) -> Window {
        match *self {
            Self::Increment { .. } => {
                let w = stored.unwrap_or_default();
                Window {
                    current: w.current + 1,
                    ..w
                }
            }
            Self::Roll { index, .. } => Window {
                index,
                current: 1,
                previous: stored.map_or(0, |w| w.current),
            },
            Self::Start { index, .. } => Window {
                index,
                current: 1,
                previous: 0,
            },
        }
    }
}

impl CounterUpdate {
    /// Whether `item` satisfies every condition of the update.
    pub fn holds(&self, item: Option<&CounterItem>) -> bool {
        let blocked = item
            .and_then(|i| i.blocked_until_s)
            .is_some_and(|until| until > self.now_s);
        !blocked
            && self.steps.iter().enumerate().all(|(slot, step)| {
                step.is_none_or(|s| s.holds(item.and_then(|i| i.windows[slot])))
            })
    }

    /// The item after the update (call only when [`CounterUpdate::holds`]).
    pub fn apply(&self, item: Option<&CounterItem>) -> CounterItem {
        let mut next = item.copied().unwrap_or_default();
        for (slot, step) in self.steps.iter().enumerate() {
            if let Some(step) = step {
                next.windows[slot] = Some(step.apply(next.windows[slot]));
            }
        }
        next
    }
}

fn weighted(previous: u32, spec: WindowSpec, elapsed_ms: u64) -> u64 {
    (u64::from(previous) * (spec.window_ms - elapsed_ms)).div_ceil(spec.window_ms)
}

/// The window as it stands at `now_ms`: rolled forward if its fixed window has passed.
pub fn at(stored: Option<Window>, spec: WindowSpec, now_ms: u64) -> Window {
    let index = now_ms / spec.window_ms;
    match stored {
        Some(w) if w.index >= index => w,
        Some(w) if w.index + 1 == index => Window {
            index,
            current: 0,
            previous: w.current,
        },
        _ => Window {
            index,
            current: 0,
            previous: 0,
        },
    }
}

/// The sliding-window estimate of admitted requests at `now_ms`.
pub fn estimate(stored: Option<Window>, spec: WindowSpec, now_ms: u64) -> u64 {
    let w = at(stored, spec, now_ms);
    // `at` returns the window of `now_ms` or a later one, so this is below `window_ms`.
    let elapsed = now_ms.saturating_sub(w.index * spec.window_ms);
    u64::from(w.current) + weighted(w.previous, spec, elapsed)
}

/// Whether one more request would be admitted at `now_ms`.
pub fn admits(stored: Option<Window>, spec: WindowSpec, now_ms: u64) -> bool {
    estimate(stored, spec, now_ms) < u64::from(spec.limit)
}

/// Requests left in the window at `now_ms`.
pub fn remaining(stored: Option<Window>, spec: WindowSpec, now_ms: u64) -> u32 {
    u64::from(spec.limit).saturating_sub(estimate(stored, spec, now_ms)) as u32
}

/// Milliseconds from `now_ms` until one more request would be admitted (0 if it would be
/// now). Counts in whole seconds; at most two windows.
pub fn wait_ms(stored: Option<Window>, spec: WindowSpec, now_ms: u64) -> u64 {
    let mut t = now_ms;
    let end = now_ms + 2 * spec.window_ms;
    while t <= end {
        if admits(stored, spec, t) {
            return t - now_ms;
        }
        t = (t / 1000 + 1) * 1000;
    }
    2 * spec.window_ms
}

/// The step that admits one request given the believed stored window, or `None` when the
/// belief already proves the request must be refused.
///
/// Refusing on a belief is sound: within a fixed window `current` only grows and `previous`
/// never changes, so the stored estimate is at least the believed one.
pub fn plan(belief: Option<Window>, spec: WindowSpec, now_ms: u64) -> Option<Step> {
    if spec.limit == 0 {
        return None;
    }
    let mut index = now_ms / spec.window_ms;
    let mut elapsed = now_ms % spec.window_ms;
    if let Some(w) = belief
        && w.index > index
    {
        // Another instance's clock is slightly ahead: join its window.
        index = w.index;
        elapsed = 0;
    }
    match belief {
        Some(w) if w.index == index => {
            let below = u64::from(spec.limit).saturating_sub(weighted(w.previous, spec, elapsed));
            (u64::from(w.current) < below).then_some(Step::Increment {
                index,
                previous: w.previous,
                below: below as u32,
            })
        }
        Some(w) if w.index + 1 == index => {
            // The largest stored count c with ceil(c * (W - e) / W) <= limit - 1.
            let max_current =
                (u64::from(spec.limit) - 1) * spec.window_ms / (spec.window_ms - elapsed);
            let max_current = u32::try_from(max_current).unwrap_or(u32::MAX);
            (w.current <= max_current).then_some(Step::Roll {
                from: w.index,
                index,
                max_current,
            })
        }
        _ => Some(Step::Start {
            before: index.saturating_sub(1),
            index,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: WindowSpec = WindowSpec {
        limit: 5,
        window_ms: 60_000,
    };
    const T0: u64 = 1_000 * 60_000;

    fn run(item: &mut Option<CounterItem>, now: u64) -> bool {
        let belief = item.and_then(|i| i.windows[0]);
        let Some(step) = plan(belief, MIN, now) else {
            return false;
        };
        let update = CounterUpdate {
            steps: [Some(step), None],
            now_s: now / 1000,
            expires_at_s: 0,
        };
        assert!(
            update.holds(item.as_ref()),
            "a plan from the true state must hold"
        );
        *item = Some(update.apply(item.as_ref()));
        true
    }

    #[test]
    fn given_a_full_window_when_more_requests_arrive_then_refused_until_weight_decays() {
        let mut item = None;
        let admitted = (0..10).filter(|_| run(&mut item, T0)).count();
        assert_eq!(admitted, 5);
        // 30 s into the next window, half of the previous 5 still count: ceil(2.5) = 3.
        let admitted = (0..10).filter(|_| run(&mut item, T0 + 90_000)).count();
        assert_eq!(admitted, 2);
        // Two windows later nothing remains.
        let admitted = (0..10).filter(|_| run(&mut item, T0 + 240_000)).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn given_any_belief_when_planning_then_plan_never_admits_past_the_estimate() {
        for prev in 0..8u32 {
            for cur in 0..8u32 {
                for elapsed in [0u64, 1, 15_000, 59_999] {
                    let stored = Window {
                        index: 1000,
                        current: cur,
                        previous: prev,
                    };
                    let now = 1000 * 60_000 + elapsed;
                    let should = admits(Some(stored), MIN, now);
                    let step = plan(Some(stored), MIN, now);
                    assert_eq!(
                        step.is_some() && step.is_some_and(|s| s.holds(Some(stored))),
                        should
                    );
                    // Rolling from the previous window.
                    let old = Window {
                        index: 999,
                        current: cur,
                        previous: prev,
                    };
                    let should = admits(Some(old), MIN, now);
                    let step = plan(Some(old), MIN, now);
                    assert_eq!(
                        step.is_some_and(|s| s.holds(Some(old))),
                        should,
                        "roll {cur} {elapsed}"
                    );
                }
            }
        }
    }

    #[test]
    fn given_a_stale_belief_when_applying_then_condition_fails() {
        let stored = Window {
            index: 1000,
            current: 2,
            previous: 4,
        };
        let step = plan(None, MIN, 1000 * 60_000).expect("start");
        assert!(!step.holds(Some(stored)));
        let step = plan(
            Some(Window {
                index: 1000,
                current: 0,
                previous: 0,
            }),
            MIN,
            1000 * 60_000,
        )
        .expect("increment");
        assert!(!step.holds(Some(stored)), "wrong previous must not hold");
    }

    #[test]
    fn given_a_block_when_updating_then_condition_fails_until_it_ends() {
        let item = CounterItem {
            windows: [None, None],
            blocked_until_s: Some(100),
        };
        let update = CounterUpdate {
            steps: [
                Some(Step::Start {
                    before: 0,
                    index: 1,
                }),
                None,
            ],
            now_s: 99,
            expires_at_s: 0,
        };
        assert!(!update.holds(Some(&item)));
        assert!(
            CounterUpdate {
                now_s: 100,
                ..update
            }
            .holds(Some(&item))
        );
    }

    #[test]
    fn given_a_full_window_when_asking_wait_then_it_is_the_first_admitting_second() {
        let stored = Some(Window {
            index: 1000,
            current: 5,
            previous: 0,
        });
        let now = 1000 * 60_000 + 10_000;
        let wait = wait_ms(stored, MIN, now);
        assert!(admits(stored, MIN, now + wait));
        assert!(!admits(stored, MIN, now + wait - 1000));
    }

    #[test]
    fn given_a_roll_when_checking_its_condition_then_window_and_count_must_both_match() {
        let roll = Step::Roll {
            from: 7,
            index: 8,
            max_current: 3,
        };
        let w = |index, current| {
            Some(Window {
                index,
                current,
                previous: 0,
            })
        };
        assert!(roll.holds(w(7, 3)));
        assert!(!roll.holds(w(7, 4)), "too many in the window rolled from");
        assert!(!roll.holds(w(6, 0)), "another window");
        assert!(!roll.holds(w(8, 1)), "already rolled by another instance");
        assert!(!roll.holds(None));
    }

    #[test]
    fn given_a_window_two_or_more_windows_old_when_read_then_nothing_of_it_counts() {
        let old = Some(Window {
            index: T0 / MIN.window_ms,
            current: 5,
            previous: 5,
        });
        assert_eq!(
            estimate(old, MIN, T0 + 30_000),
            8,
            "same window: 5 and half of 5"
        );
        assert_eq!(
            estimate(old, MIN, T0 + 90_000),
            3,
            "next window: half of 5, rounded up"
        );
        assert_eq!(estimate(old, MIN, T0 + 120_000), 0, "two windows later");
        assert_eq!(at(old, MIN, T0 + 150_000).previous, 0);
    }

    #[test]
    fn given_a_full_window_when_asking_how_long_to_wait_then_whole_seconds_until_admitted() {
        let full = Some(Window {
            index: T0 / MIN.window_ms,
            current: 5,
            previous: 0,
        });
        // In the next window 5 * (60 s - e) / 60 s, rounded up, drops below 5 after 12 s.
        assert_eq!(wait_ms(full, MIN, T0 + 500), 72_000 - 500);
        assert_eq!(wait_ms(full, MIN, T0 + 72_000), 0);
        assert_eq!(wait_ms(None, MIN, T0), 0);
    }

    #[test]
    fn given_a_zero_limit_when_asking_how_long_to_wait_then_two_windows() {
        let closed = WindowSpec {
            limit: 0,
            window_ms: 60_000,
        };
        assert_eq!(wait_ms(None, closed, T0), 120_000);
        assert_eq!(plan(None, closed, T0), None);
    }

    #[test]
    fn given_the_next_window_when_planning_then_the_roll_bounds_the_stored_count() {
        let index = T0 / MIN.window_ms;
        let believed = Some(Window {
            index,
            current: 0,
            previous: 0,
        });
        // 30 s into the next window a stored count c rolls while ceil(c / 2) <= 4: c <= 8.
        assert_eq!(
            plan(believed, MIN, T0 + 90_000),
            Some(Step::Roll {
                from: index,
                index: index + 1,
                max_current: 8,
            })
        );
    }

    #[test]
    fn given_a_start_when_checking_its_condition_then_only_older_windows_are_replaced() {
        let start = Step::Start {
            before: 7,
            index: 8,
        };
        let w = |index| {
            Some(Window {
                index,
                current: 5,
                previous: 5,
            })
        };
        assert!(start.holds(None));
        assert!(start.holds(w(6)), "two windows old: nothing of it counts");
        assert!(
            !start.holds(w(7)),
            "the previous window must roll, keeping its weight"
        );
        assert!(!start.holds(w(8)));
    }
}

//! The payment state machine as a lattice: every status an event can report has a rank, and a
//! record only ever moves to a higher rank. Applying "take the higher rank" is commutative,
//! associative and idempotent, so any delivery order of the same events (repeats included)
//! ends in the same record.
//!
//! Ranks are ordered by tier first:
//!
//! 1. pending (`requires_*`, `processing`, `failed`): ordered by the event's `created` second,
//!    then by the status's place in a payment attempt, so a retry after a failure moves on and
//!    a same-second failure after `processing` wins over it;
//! 2. settled (`succeeded`, `canceled`): never followed by a pending status;
//! 3. refunded (`partially_refunded`, `refunded`): ordered by the refunded amount;
//! 4. `disputed`;
//! 5. dispute closed (`dispute_won`, `dispute_lost`).

/// The span of one tier, above any rank inside a tier (event times of this millennium times
/// 16, refunded amounts in minor units times 2).
const TIER: u64 = 1 << 44;

/// A payment record's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Waiting for a payment method (a new intent, or one whose attempt failed).
    RequiresPaymentMethod,
    /// Waiting for confirmation.
    RequiresConfirmation,
    /// Waiting for the customer (3-D Secure and similar).
    RequiresAction,
    /// Authorised, waiting for capture.
    RequiresCapture,
    /// Being processed.
    Processing,
    /// An attempt failed (`payment_intent.payment_failed`); a retry may still succeed.
    Failed,
    /// Canceled before it succeeded.
    Canceled,
    /// Paid.
    Succeeded,
    /// Part of the amount was refunded.
    PartiallyRefunded,
    /// The whole amount was refunded.
    Refunded,
    /// The cardholder disputed the charge.
    Disputed,
    /// A dispute closed in the merchant's favour.
    DisputeWon,
    /// A dispute closed in the cardholder's favour.
    DisputeLost,
}

impl PaymentStatus {
    /// The name stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresPaymentMethod => "requires_payment_method",
            Self::RequiresConfirmation => "requires_confirmation",
            Self::RequiresAction => "requires_action",
            Self::RequiresCapture => "requires_capture",
            Self::Processing => "processing",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Succeeded => "succeeded",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Disputed => "disputed",
            Self::DisputeWon => "dispute_won",
            Self::DisputeLost => "dispute_lost",
        }
    }

    /// A PaymentIntent's `status` as Stripe names it, if it is one the record keeps.
    pub fn from_intent_status(status: &str) -> Option<Self> {
        Some(match status {
            "requires_payment_method" => Self::RequiresPaymentMethod,
            "requires_confirmation" => Self::RequiresConfirmation,
            "requires_action" => Self::RequiresAction,
            "requires_capture" => Self::RequiresCapture,
            "processing" => Self::Processing,
            "canceled" => Self::Canceled,
            "succeeded" => Self::Succeeded,
            _ => return None,
        })
    }
}

/// What one event says about a payment, reduced to what orders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The status the event reports.
    pub status: PaymentStatus,
    /// The event's `created` time (epoch seconds).
    pub event_created: u64,
    /// The cumulative refunded amount (refund events only).
    pub refunded_amount: i64,
}

impl Transition {
    /// The transition's rank: a record moves to it only if it is higher than the record's.
    pub fn rank(&self) -> u64 {
        use PaymentStatus::*;
        let pending = |step: u64| (self.event_created.min(TIER / 16 - 1)) * 16 + step;
        match self.status {
            RequiresPaymentMethod => pending(1),
            RequiresConfirmation => pending(2),
            RequiresAction => pending(3),
            RequiresCapture => pending(4),
            Processing => pending(5),
            Failed => pending(6),
            Canceled => TIER + 1,
            Succeeded => TIER + 2,
            PartiallyRefunded | Refunded => {
                let amount = self.refunded_amount.clamp(0, (TIER / 4) as i64) as u64;
                2 * TIER + amount * 2 + u64::from(self.status == Refunded)
            }
            Disputed => 3 * TIER,
            DisputeWon => 4 * TIER + 1,
            DisputeLost => 4 * TIER + 2,
        }
    }

    /// Whether a record at `current` rank moves to this transition.
    pub fn advances(&self, current: Option<u64>) -> bool {
        current.is_none_or(|c| self.rank() > c)
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    fn t(status: PaymentStatus, at: u64) -> Transition {
        Transition {
            status,
            event_created: at,
            refunded_amount: 0,
        }
    }

    #[test]
    fn given_a_same_second_failure_after_success_when_ranked_then_success_stays() {
        let ok = t(Succeeded, 1_800_000_000);
        let failed = t(Failed, 1_800_000_000);
        assert!(!failed.advances(Some(ok.rank())));
        assert!(ok.advances(Some(failed.rank())));
    }

    #[test]
    fn given_a_failure_then_a_retry_when_ranked_then_the_retry_moves_on() {
        let failed = t(Failed, 100);
        assert!(t(Processing, 101).advances(Some(failed.rank())));
        assert!(t(Succeeded, 100).advances(Some(failed.rank())));
        assert!(t(Failed, 100).advances(Some(t(Processing, 100).rank())));
        assert!(!t(RequiresPaymentMethod, 99).advances(Some(failed.rank())));
    }

    #[test]
    fn given_settled_refunded_and_disputed_when_ranked_then_tiers_order_them() {
        let at = 1_800_000_000;
        let order = [
            t(Processing, u64::MAX),
            t(Canceled, at),
            t(Succeeded, at),
            Transition {
                status: PartiallyRefunded,
                event_created: at,
                refunded_amount: 500,
            },
            Transition {
                status: PartiallyRefunded,
                event_created: at,
                refunded_amount: 900,
            },
            Transition {
                status: Refunded,
                event_created: at,
                refunded_amount: 900,
            },
            t(Disputed, at),
            t(DisputeWon, at),
            t(DisputeLost, at),
        ];
        for pair in order.windows(2) {
            assert!(pair[0].rank() < pair[1].rank(), "{pair:?}");
        }
        assert!(!t(Succeeded, at).advances(Some(t(Succeeded, at).rank())));
    }

    #[test]
    fn given_intent_statuses_when_parsed_then_known_ones_map() {
        for s in [
            "requires_payment_method",
            "requires_confirmation",
            "requires_action",
            "requires_capture",
            "processing",
            "canceled",
            "succeeded",
        ] {
            assert_eq!(
                PaymentStatus::from_intent_status(s).map(|p| p.as_str()),
                Some(s)
            );
        }
        assert_eq!(PaymentStatus::from_intent_status("weird"), None);
    }
}

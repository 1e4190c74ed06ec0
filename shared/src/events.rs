//! Security events: every `event` a log line names, as one enum, so that a name is written once
//! and the template's metric filters and alarms can be checked against the list.
//!
//! `events.json` (repository root) is this list as data: `UPDATE_EVENTS=1 cargo test -p
//! flowbotz-security events` writes it, a unit test fails when it is stale, and
//! `scripts/test_events.py` checks that every event a metric filter or query of
//! `template.yaml` names is here, and that every event marked [`Event::alarms`] has a filter.

use std::fmt;

/// A named security event of a log line (the `event` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// `request.malformed`: A malformed request was refused (400).
    RequestMalformed,
    /// `request.malicious`: A request holding an attack pattern was refused (400).
    RequestMalicious,
    /// `request.too_large`: A body over the endpoint's limit was refused (413).
    RequestTooLarge,
    /// `request.media_type`: A body that is not JSON was refused (415).
    RequestMediaType,
    /// `validation.failure`: A body failed validation (422).
    ValidationFailure,
    /// `auth.failure`: A bearer token or credentials were refused (401).
    AuthFailure,
    /// `auth.throttled`: Login attempts on one account were throttled (429).
    AuthThrottled,
    /// `auth.link_invalid`: A verification or reset link was refused.
    AuthLinkInvalid,
    /// `auth.account_exists`: A registration named an existing account (409).
    AuthAccountExists,
    /// `auth.email_verified`: An email address was verified.
    AuthEmailVerified,
    /// `auth.logout`: A session was ended.
    AuthLogout,
    /// `auth.logout_all`: Every session of an account was ended.
    AuthLogoutAll,
    /// `auth.password_changed`: A password was changed.
    AuthPasswordChanged,
    /// `auth.password_reset`: A password was reset through a mailed link.
    AuthPasswordReset,
    /// `csrf.failure`: A CSRF token was missing or refused (403).
    CsrfFailure,
    /// `csrf.origin_refused`: A cross-origin request was refused (403).
    CsrfOriginRefused,
    /// `rate_limit.exceeded`: A rate limit refused a request (429).
    RateLimitExceeded,
    /// `rate_limit.store_failure`: The rate-limit store failed or timed out.
    RateLimitStoreFailure,
    /// `ip.blocked`: An IP was blocked after repeated violations, or a blocked IP was refused.
    IpBlocked,
    /// `session.store_failure`: The session check's store read failed (503).
    SessionStoreFailure,
    /// `dependency.unavailable`: A dependency was unavailable (503).
    DependencyUnavailable,
    /// `upstream.failure`: An upstream service failed or timed out (502, 504).
    UpstreamFailure,
    /// `internal.error`: An unexpected error (500).
    InternalError,
    /// `ai.completion`: A chat completion was charged (its tokens feed the AI budget metric).
    AiCompletion,
    /// `ai.quota_exceeded`: An AI token budget was exhausted (429).
    AiQuotaExceeded,
    /// `ai.disabled`: Chat was called while AI is switched off.
    AiDisabled,
    /// `ai.provider`: The AI provider in use, at start-up.
    AiProvider,
    /// `ai.upstream_failure`: The AI provider failed.
    AiUpstreamFailure,
    /// `ai.budget_store_failure`: The AI budget store failed.
    AiBudgetStoreFailure,
    /// `account.erased`: An account was erased.
    AccountErased,
    /// `erasure.stripe_customer_deleted`: An erased account's Stripe customer was deleted.
    ErasureStripeCustomerDeleted,
    /// `erasure.stripe_pending`: An erased account's Stripe customer could not be deleted yet.
    ErasureStripePending,
    /// `erasure.stripe_pending_not_recorded`: A pending Stripe deletion could not be recorded.
    ErasureStripePendingNotRecorded,
    /// `erasure.pending_cleanup_failed`: A pending Stripe deletion could not be cleared.
    ErasurePendingCleanupFailed,
    /// `erasure.sweep_failed`: The sweep of pending Stripe deletions failed.
    ErasureSweepFailed,
    /// `mail.send_failed`: A mail could not be sent.
    MailSendFailed,
    /// `webhook.signature_invalid`: A webhook delivery's signature was refused.
    WebhookSignatureInvalid,
    /// `secrets.refresh_failed`: The function's secrets could not be refreshed.
    SecretsRefreshFailed,
    /// `secrets.rotated`: A key was rotated.
    SecretsRotated,
    /// `secrets.rotation_failed`: A rotation step failed.
    SecretsRotationFailed,
    /// `secrets.rotation_step`: A rotation step ran.
    SecretsRotationStep,
    /// `startup`: A function started.
    Startup,
    /// `startup.failed`: A function could not start.
    StartupFailed,
}

impl Event {
    /// Every event.
    pub const ALL: &'static [Event] = &[
        Event::RequestMalformed,
        Event::RequestMalicious,
        Event::RequestTooLarge,
        Event::RequestMediaType,
        Event::ValidationFailure,
        Event::AuthFailure,
        Event::AuthThrottled,
        Event::AuthLinkInvalid,
        Event::AuthAccountExists,
        Event::AuthEmailVerified,
        Event::AuthLogout,
        Event::AuthLogoutAll,
        Event::AuthPasswordChanged,
        Event::AuthPasswordReset,
        Event::CsrfFailure,
        Event::CsrfOriginRefused,
        Event::RateLimitExceeded,
        Event::RateLimitStoreFailure,
        Event::IpBlocked,
        Event::SessionStoreFailure,
        Event::DependencyUnavailable,
        Event::UpstreamFailure,
        Event::InternalError,
        Event::AiCompletion,
        Event::AiQuotaExceeded,
        Event::AiDisabled,
        Event::AiProvider,
        Event::AiUpstreamFailure,
        Event::AiBudgetStoreFailure,
        Event::AccountErased,
        Event::ErasureStripeCustomerDeleted,
        Event::ErasureStripePending,
        Event::ErasureStripePendingNotRecorded,
        Event::ErasurePendingCleanupFailed,
        Event::ErasureSweepFailed,
        Event::MailSendFailed,
        Event::WebhookSignatureInvalid,
        Event::SecretsRefreshFailed,
        Event::SecretsRotated,
        Event::SecretsRotationFailed,
        Event::SecretsRotationStep,
        Event::Startup,
        Event::StartupFailed,
    ];

    /// The name written in the `event` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Event::RequestMalformed => "request.malformed",
            Event::RequestMalicious => "request.malicious",
            Event::RequestTooLarge => "request.too_large",
            Event::RequestMediaType => "request.media_type",
            Event::ValidationFailure => "validation.failure",
            Event::AuthFailure => "auth.failure",
            Event::AuthThrottled => "auth.throttled",
            Event::AuthLinkInvalid => "auth.link_invalid",
            Event::AuthAccountExists => "auth.account_exists",
            Event::AuthEmailVerified => "auth.email_verified",
            Event::AuthLogout => "auth.logout",
            Event::AuthLogoutAll => "auth.logout_all",
            Event::AuthPasswordChanged => "auth.password_changed",
            Event::AuthPasswordReset => "auth.password_reset",
            Event::CsrfFailure => "csrf.failure",
            Event::CsrfOriginRefused => "csrf.origin_refused",
            Event::RateLimitExceeded => "rate_limit.exceeded",
            Event::RateLimitStoreFailure => "rate_limit.store_failure",
            Event::IpBlocked => "ip.blocked",
            Event::SessionStoreFailure => "session.store_failure",
            Event::DependencyUnavailable => "dependency.unavailable",
            Event::UpstreamFailure => "upstream.failure",
            Event::InternalError => "internal.error",
            Event::AiCompletion => "ai.completion",
            Event::AiQuotaExceeded => "ai.quota_exceeded",
            Event::AiDisabled => "ai.disabled",
            Event::AiProvider => "ai.provider",
            Event::AiUpstreamFailure => "ai.upstream_failure",
            Event::AiBudgetStoreFailure => "ai.budget_store_failure",
            Event::AccountErased => "account.erased",
            Event::ErasureStripeCustomerDeleted => "erasure.stripe_customer_deleted",
            Event::ErasureStripePending => "erasure.stripe_pending",
            Event::ErasureStripePendingNotRecorded => "erasure.stripe_pending_not_recorded",
            Event::ErasurePendingCleanupFailed => "erasure.pending_cleanup_failed",
            Event::ErasureSweepFailed => "erasure.sweep_failed",
            Event::MailSendFailed => "mail.send_failed",
            Event::WebhookSignatureInvalid => "webhook.signature_invalid",
            Event::SecretsRefreshFailed => "secrets.refresh_failed",
            Event::SecretsRotated => "secrets.rotated",
            Event::SecretsRotationFailed => "secrets.rotation_failed",
            Event::SecretsRotationStep => "secrets.rotation_step",
            Event::Startup => "startup",
            Event::StartupFailed => "startup.failed",
        }
    }

    /// Whether the template must count it in a metric filter that feeds an alarm or a
    /// dashboard metric (checked by `scripts/test_events.py`).
    pub const fn alarms(self) -> bool {
        matches!(
            self,
            Event::AuthFailure
                | Event::CsrfFailure
                | Event::CsrfOriginRefused
                | Event::IpBlocked
                | Event::AiCompletion
                | Event::AiQuotaExceeded
                | Event::ErasureStripePending
                | Event::MailSendFailed
                | Event::WebhookSignatureInvalid
        )
    }

    /// The event named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Event> {
        Self::ALL.iter().copied().find(|e| e.as_str() == name)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The list as the JSON document committed as `events.json`.
pub fn to_json() -> serde_json::Value {
    let events: Vec<serde_json::Value> = Event::ALL
        .iter()
        .map(|e| serde_json::json!({"name": e.as_str(), "alarms": e.alarms()}))
        .collect();
    serde_json::json!({
        "$comment": "Generated from shared/src/events.rs: UPDATE_EVENTS=1 cargo test -p flowbotz-security events",
        "events": events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_the_events_then_names_are_unique_dotted_lowercase_and_found_by_name() {
        let mut names: Vec<_> = Event::ALL.iter().map(|e| e.as_str()).collect();
        for (e, name) in Event::ALL.iter().zip(&names) {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{name}"
            );
            assert_eq!(Event::from_name(name), Some(*e));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Event::ALL.len(), "two events share a name");
    }

    /// The committed `events.json` is this list: the template check reads it, so a change here
    /// without regenerating it fails.
    #[test]
    fn given_the_committed_events_json_then_it_is_the_enum() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../events.json");
        let want = format!(
            "{}\n",
            serde_json::to_string_pretty(&to_json()).expect("json")
        );
        if std::env::var_os("UPDATE_EVENTS").is_some() {
            std::fs::write(path, &want).expect("write events.json");
        }
        let got = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            got == want,
            "events.json differs from shared/src/events.rs: regenerate it with \
             `UPDATE_EVENTS=1 cargo test -p flowbotz-security events`"
        );
    }
}

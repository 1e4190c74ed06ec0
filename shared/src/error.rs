//! One error type for every rejection and failure, mapped in one place to an RFC 9457
//! `application/problem+json` response.
//!
//! The client sees a fixed title and a safe detail written by this crate; causes (store errors,
//! upstream replies) are kept in the error for the log line and never serialised.

use crate::events::Event;
use http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's JSON path, such as `messages[0].content`.
    pub field: String,
    /// What is wrong, in words safe to show (never the submitted value).
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a request was refused with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenKind {
    /// The CSRF token is missing, expired, forged or another user's.
    CsrfToken,
    /// A state-changing request from a disallowed origin or a cross-site context.
    CrossOrigin,
}

/// Every way a request can end other than success.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed syntax: invalid JSON, nesting too deep, unknown or duplicate fields.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A malicious pattern in the path, query or headers.
    #[error("malicious input: {0}")]
    MaliciousInput(&'static str),
    /// Missing or invalid credentials; the reason is for the log only.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Login with an unknown email or a wrong password (one answer for both).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A mailed link's token (email verification, password reset) that is unknown, expired,
    /// already used or meant for something else, or a verification whose password does not
    /// match the registration's (one answer for all).
    #[error("invalid link")]
    InvalidLink,
    /// Email verification for an address that meanwhile has a verified account.
    #[error("account exists")]
    AccountExists,
    /// Refused by CSRF or origin protection.
    #[error("forbidden: {0:?}")]
    Forbidden(ForbiddenKind),
    /// The client IP is blocked after repeated rate-limit violations.
    #[error("ip blocked for {retry_after}s")]
    IpBlocked {
        /// Seconds until the block ends.
        retry_after: u64,
    },
    /// No such route.
    #[error("not found")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: String,
    },
    /// The body is larger than the endpoint accepts.
    #[error("payload too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The endpoint's limit in bytes.
        limit: usize,
    },
    /// The body's media type is not the one the endpoint accepts.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// A well-formed body that fails validation.
    #[error("validation failed on {} field(s)", .0.len())]
    Validation(Vec<FieldError>),
    /// Rate limited.
    #[error("rate limited for {retry_after}s")]
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after: u64,
    },
    /// A daily spend budget (AI tokens) is used up until the next UTC day.
    #[error("quota exceeded for {retry_after}s")]
    QuotaExceeded {
        /// Seconds until the budget renews.
        retry_after: u64,
    },
    /// Too many failed logins on one account.
    #[error("account throttled for {retry_after}s")]
    AccountThrottled {
        /// Seconds until the failure window passes.
        retry_after: u64,
    },
    /// An upstream (Stripe, the AI provider) failed or answered something unusable.
    #[error("bad gateway: {0}")]
    BadGateway(String),
    /// A dependency is unavailable, throttled or not configured.
    #[error("service unavailable: {reason}")]
    ServiceUnavailable {
        /// Cause, for the log only.
        reason: String,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// An upstream did not answer in time.
    #[error("gateway timeout: {0}")]
    GatewayTimeout(String),
    /// A bug or unexpected failure; the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A store that failed or timed out: 503 with `Retry-After: 1`; the cause goes to the log
/// line only, never to the client.
impl From<crate::ratelimit::StoreError> for ApiError {
    fn from(e: crate::ratelimit::StoreError) -> Self {
        Self::ServiceUnavailable {
            reason: format!("store: {e}"),
            retry_after: 1,
        }
    }
}

/// The problem+json body.
#[derive(Debug, Serialize)]
pub struct Problem<'a> {
    /// A URI reference naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, fixed summary of the problem type.
    pub title: &'a str,
    /// The HTTP status.
    pub status: u16,
    /// A safe explanation of this occurrence.
    pub detail: String,
    /// The request id, also in the log line and `X-Request-Id`.
    pub request_id: &'a str,
    /// Field errors, for validation failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<&'a [FieldError]>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::MaliciousInput(_) | Self::InvalidLink => {
                StatusCode::BAD_REQUEST
            }
            Self::AccountExists => StatusCode::CONFLICT,
            Self::Unauthorized(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::IpBlocked { .. } => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. }
            | Self::AccountThrottled { .. }
            | Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem type's short name, the last segment of its `type` URI.
    pub fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "malformed-request",
            Self::MaliciousInput(_) => "malicious-input",
            Self::Unauthorized(_) => "unauthorized",
            Self::InvalidCredentials => "invalid-credentials",
            Self::InvalidLink => "invalid-link",
            Self::AccountExists => "account-exists",
            Self::Forbidden(ForbiddenKind::CsrfToken) => "csrf-token-invalid",
            Self::Forbidden(ForbiddenKind::CrossOrigin) => "cross-origin-request",
            Self::IpBlocked { .. } => "ip-blocked",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed { .. } => "method-not-allowed",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Validation(_) => "validation-failed",
            Self::RateLimited { .. } => "rate-limited",
            Self::AccountThrottled { .. } => "account-throttled",
            Self::QuotaExceeded { .. } => "quota-exceeded",
            Self::BadGateway(_) => "bad-gateway",
            Self::ServiceUnavailable { .. } => "service-unavailable",
            Self::GatewayTimeout(_) => "gateway-timeout",
            Self::Internal(_) => "internal-error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "Malformed request",
            Self::MaliciousInput(_) => "Request rejected",
            Self::Unauthorized(_) => "Authentication required",
            Self::InvalidCredentials => "Invalid credentials",
            Self::InvalidLink => "Invalid or expired link",
            Self::AccountExists => "Account exists",
            Self::Forbidden(ForbiddenKind::CsrfToken) => "CSRF token missing or invalid",
            Self::Forbidden(ForbiddenKind::CrossOrigin) => "Cross-origin request refused",
            Self::IpBlocked { .. } => "Client blocked",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Validation(_) => "Validation failed",
            Self::RateLimited { .. } => "Too many requests",
            Self::AccountThrottled { .. } => "Too many failed logins",
            Self::QuotaExceeded { .. } => "Quota exceeded",
            Self::BadGateway(_) => "Upstream service failed",
            Self::ServiceUnavailable { .. } => "Service unavailable",
            Self::GatewayTimeout(_) => "Upstream service timed out",
            Self::Internal(_) => "Internal server error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::BadRequest(d) => d.clone(),
            Self::MaliciousInput(what) => format!("The request contains {what}."),
            Self::Unauthorized(_) => "A valid bearer token is required.".into(),
            Self::InvalidCredentials => "The email or password is incorrect.".into(),
            Self::InvalidLink => {
                "The link is invalid, expired or already used, or the password does not match; \
                 request a new one."
                    .into()
            }
            Self::AccountExists => {
                "This email already has an account: sign in, or reset its password.".into()
            }
            Self::Forbidden(ForbiddenKind::CsrfToken) => {
                "Send the X-CSRF-Token issued for this session.".into()
            }
            Self::Forbidden(ForbiddenKind::CrossOrigin) => {
                "State-changing requests are only accepted from allowed origins.".into()
            }
            Self::IpBlocked { retry_after } => format!(
                "Too many rate-limit violations from this address; retry in {retry_after} s."
            ),
            Self::NotFound => "No such resource.".into(),
            Self::MethodNotAllowed { allow } => format!("Allowed methods: {allow}."),
            Self::PayloadTooLarge { limit } => {
                if *limit == 0 {
                    "This endpoint takes no request body.".into()
                } else {
                    format!("The request body exceeds {limit} bytes.")
                }
            }
            Self::UnsupportedMediaType => "The request body must be application/json.".into(),
            Self::Validation(_) => "The request body failed validation; see errors.".into(),
            Self::RateLimited { retry_after } => format!("Retry in {retry_after} s."),
            Self::QuotaExceeded { retry_after } => {
                format!("The daily usage budget is spent; it renews in {retry_after} s.")
            }
            Self::AccountThrottled { retry_after } => {
                format!("Too many failed logins for this account; retry in {retry_after} s.")
            }
            Self::BadGateway(_) => "An upstream service failed; try again later.".into(),
            Self::ServiceUnavailable { .. } => "Try again shortly.".into(),
            Self::GatewayTimeout(_) => "An upstream service did not answer in time.".into(),
            Self::Internal(_) => "An unexpected error occurred.".into(),
        }
    }

    /// The security event this error represents, for the log line.
    pub fn event(&self) -> Option<Event> {
        Some(match self {
            Self::BadRequest(_) => Event::RequestMalformed,
            Self::MaliciousInput(_) => Event::RequestMalicious,
            Self::Unauthorized(_) | Self::InvalidCredentials => Event::AuthFailure,
            Self::InvalidLink => Event::AuthLinkInvalid,
            Self::AccountExists => Event::AuthAccountExists,
            Self::Forbidden(ForbiddenKind::CsrfToken) => Event::CsrfFailure,
            Self::Forbidden(ForbiddenKind::CrossOrigin) => Event::CsrfOriginRefused,
            Self::IpBlocked { .. } => Event::IpBlocked,
            Self::PayloadTooLarge { .. } => Event::RequestTooLarge,
            Self::UnsupportedMediaType => Event::RequestMediaType,
            Self::Validation(_) => Event::ValidationFailure,
            Self::RateLimited { .. } => Event::RateLimitExceeded,
            Self::AccountThrottled { .. } => Event::AuthThrottled,
            Self::QuotaExceeded { .. } => Event::AiQuotaExceeded,
            Self::ServiceUnavailable { .. } => Event::DependencyUnavailable,
            Self::BadGateway(_) | Self::GatewayTimeout(_) => Event::UpstreamFailure,
            Self::Internal(_) => Event::InternalError,
            Self::NotFound | Self::MethodNotAllowed { .. } => return None,
        })
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::IpBlocked { retry_after }
            | Self::RateLimited { retry_after }
            | Self::AccountThrottled { retry_after }
            | Self::QuotaExceeded { retry_after }
            | Self::ServiceUnavailable { retry_after, .. } => Some((*retry_after).max(1)),
            _ => None,
        }
    }

    /// The problem+json response for this error.
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let errors = match self {
            Self::Validation(e) => Some(e.as_slice()),
            _ => None,
        };
        let problem = Problem {
            kind: format!("/problems/{}", self.slug()),
            title: self.title(),
            status: self.status().as_u16(),
            detail: self.detail(),
            request_id,
            errors,
        };
        let body = serde_json::to_string(&problem).unwrap_or_else(|_| "{}".into());
        let mut resp = Response::new(Body::Text(body));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::Unauthorized(_) = self {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flowbotz\", error=\"invalid_token\""),
            );
        }
        if let Self::MethodNotAllowed { allow } = self
            && let Ok(v) = HeaderValue::from_str(allow)
        {
            h.insert(header::ALLOW, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(resp: &Response<Body>) -> serde_json::Value {
        match resp.body() {
            Body::Text(t) => serde_json::from_str(t).expect("json"),
            _ => panic!("text body expected"),
        }
    }

    #[test]
    fn given_internal_error_when_rendered_then_cause_is_not_in_body() {
        let err = ApiError::Internal("dynamodb: connection refused at 10.0.0.1".into());
        let resp = err.to_response("req-1");
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let v = body_json(&resp);
        assert!(!v.to_string().contains("10.0.0.1"));
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["type"], "/problems/internal-error");
    }

    #[test]
    fn given_validation_error_when_rendered_then_field_errors_are_listed() {
        let err = ApiError::Validation(vec![FieldError::new("amount", "must be at least 50")]);
        let v = body_json(&err.to_response("r"));
        assert_eq!(v["status"], 422);
        assert_eq!(v["errors"][0]["field"], "amount");
    }

    #[test]
    fn given_rate_limit_when_rendered_then_retry_after_is_set() {
        let resp = ApiError::RateLimited { retry_after: 0 }.to_response("r");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let resp = ApiError::MethodNotAllowed {
            allow: "GET, OPTIONS".into(),
        }
        .to_response("r");
        assert_eq!(resp.headers()[header::ALLOW], "GET, OPTIONS");
    }

    #[test]
    fn given_a_store_failure_when_converted_then_503_retry_after_and_no_cause_in_the_body() {
        let e = ApiError::from(crate::ratelimit::StoreError::Unavailable(
            "dynamodb: secret-ish detail".into(),
        ));
        let resp = e.to_response("r-1");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        let Body::Text(body) = resp.body() else {
            panic!("text body")
        };
        assert!(
            !body.contains("secret-ish") && !body.contains("dynamodb"),
            "{body}"
        );
    }

    #[test]
    fn given_every_error_when_rendered_then_status_title_detail_event_and_retry_after_are_fixed() {
        use ForbiddenKind::{CrossOrigin, CsrfToken};
        type Case = (
            ApiError,
            u16,
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                ApiError::BadRequest("Body is not valid JSON.".into()),
                400,
                "Malformed request",
                "Body is not valid JSON.",
                Some("request.malformed"),
                None,
            ),
            (
                ApiError::MaliciousInput("a path traversal"),
                400,
                "Request rejected",
                "The request contains a path traversal.",
                Some("request.malicious"),
                None,
            ),
            (
                ApiError::Unauthorized("expired"),
                401,
                "Authentication required",
                "A valid bearer token is required.",
                Some("auth.failure"),
                None,
            ),
            (
                ApiError::InvalidCredentials,
                401,
                "Invalid credentials",
                "The email or password is incorrect.",
                Some("auth.failure"),
                None,
            ),
            (
                ApiError::InvalidLink,
                400,
                "Invalid or expired link",
                "The link is invalid, expired or already used, or the password does not match; request a new one.",
                Some("auth.link_invalid"),
                None,
            ),
            (
                ApiError::AccountExists,
                409,
                "Account exists",
                "This email already has an account: sign in, or reset its password.",
                Some("auth.account_exists"),
                None,
            ),
            (
                ApiError::Forbidden(CsrfToken),
                403,
                "CSRF token missing or invalid",
                "Send the X-CSRF-Token issued for this session.",
                Some("csrf.failure"),
                None,
            ),
            (
                ApiError::Forbidden(CrossOrigin),
                403,
                "Cross-origin request refused",
                "State-changing requests are only accepted from allowed origins.",
                Some("csrf.origin_refused"),
                None,
            ),
            (
                ApiError::IpBlocked { retry_after: 900 },
                403,
                "Client blocked",
                "Too many rate-limit violations from this address; retry in 900 s.",
                Some("ip.blocked"),
                Some("900"),
            ),
            (
                ApiError::NotFound,
                404,
                "Not found",
                "No such resource.",
                None,
                None,
            ),
            (
                ApiError::MethodNotAllowed {
                    allow: "GET, OPTIONS".into(),
                },
                405,
                "Method not allowed",
                "Allowed methods: GET, OPTIONS.",
                None,
                None,
            ),
            (
                ApiError::PayloadTooLarge { limit: 0 },
                413,
                "Payload too large",
                "This endpoint takes no request body.",
                Some("request.too_large"),
                None,
            ),
            (
                ApiError::PayloadTooLarge { limit: 4096 },
                413,
                "Payload too large",
                "The request body exceeds 4096 bytes.",
                Some("request.too_large"),
                None,
            ),
            (
                ApiError::UnsupportedMediaType,
                415,
                "Unsupported media type",
                "The request body must be application/json.",
                Some("request.media_type"),
                None,
            ),
            (
                ApiError::Validation(vec![FieldError::new("email", "is not an email")]),
                422,
                "Validation failed",
                "The request body failed validation; see errors.",
                Some("validation.failure"),
                None,
            ),
            (
                ApiError::RateLimited { retry_after: 7 },
                429,
                "Too many requests",
                "Retry in 7 s.",
                Some("rate_limit.exceeded"),
                Some("7"),
            ),
            (
                ApiError::AccountThrottled { retry_after: 600 },
                429,
                "Too many failed logins",
                "Too many failed logins for this account; retry in 600 s.",
                Some("auth.throttled"),
                Some("600"),
            ),
            (
                ApiError::QuotaExceeded { retry_after: 3600 },
                429,
                "Quota exceeded",
                "The daily usage budget is spent; it renews in 3600 s.",
                Some("ai.quota_exceeded"),
                Some("3600"),
            ),
            (
                ApiError::BadGateway("stripe: 500".into()),
                502,
                "Upstream service failed",
                "An upstream service failed; try again later.",
                Some("upstream.failure"),
                None,
            ),
            (
                ApiError::ServiceUnavailable {
                    reason: "table".into(),
                    retry_after: 2,
                },
                503,
                "Service unavailable",
                "Try again shortly.",
                Some("dependency.unavailable"),
                Some("2"),
            ),
            (
                ApiError::GatewayTimeout("ai: 30 s".into()),
                504,
                "Upstream service timed out",
                "An upstream service did not answer in time.",
                Some("upstream.failure"),
                None,
            ),
            (
                ApiError::Internal("bug".into()),
                500,
                "Internal server error",
                "An unexpected error occurred.",
                Some("internal.error"),
                None,
            ),
        ];
        for (err, status, title, detail, event, retry_after) in cases {
            let resp = err.to_response("r");
            let v = body_json(&resp);
            assert_eq!(resp.status(), status, "{err}");
            assert_eq!(v["status"], status, "{err}");
            assert_eq!(v["title"], title, "{err}");
            assert_eq!(v["detail"], detail, "{err}");
            assert_eq!(err.event().map(Event::as_str), event, "{err}");
            assert_eq!(
                resp.headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|h| h.to_str().ok()),
                retry_after,
                "{err}"
            );
        }
    }
}

//! The endpoint catalogue: every endpoint of the API and its whole policy, declared once, as
//! data.
//!
//! Each function hands its [`Endpoint`] (found by its typed [`EndpointId`]) to the pipeline;
//! the configuration's per-endpoint defaults ([`crate::config::Defaults`]) are read from here;
//! the tests, the bench and the attack suite iterate [`ENDPOINTS`]. The committed
//! `endpoints.json` at the repository root is this table written as JSON ([`to_json`]); a unit
//! test fails when the two differ, and the checks of the router, `template.yaml` and
//! `openapi.yaml` read that file instead of the Rust source. To change an endpoint's route,
//! methods, auth, CSRF or limits, change it here and regenerate the JSON
//! (`UPDATE_ENDPOINTS=1 cargo test -p flowbotz-security catalogue`).

use http::Method;

use crate::config::RateLimit;
use crate::guard::BodyKind;
use crate::pipeline::{Endpoint, StoreFailure};

const KIB: usize = 1024;

/// The typed name of every endpoint of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointId {
    /// `POST /api/auth/register`.
    Register,
    /// `POST /api/auth/login`.
    Login,
    /// `GET /api/auth/csrf-token`.
    CsrfToken,
    /// `POST /api/ai/chat`.
    Chat,
    /// `POST /api/payments/create-payment-intent`.
    PaymentIntent,
    /// `POST /api/payments/webhook`.
    Webhook,
    /// `GET /api/health`.
    Health,
    /// `DELETE /api/account`.
    Account,
    /// `POST /api/auth/verify-email`.
    VerifyEmail,
    /// `POST /api/auth/password-reset`.
    PasswordReset,
    /// `POST /api/auth/password-reset/confirm`.
    PasswordResetConfirm,
    /// `POST /api/auth/password`.
    ChangePassword,
    /// `POST /api/auth/logout`.
    Logout,
    /// `POST /api/auth/logout-all`.
    LogoutAll,
}

impl EndpointId {
    /// Every endpoint, in the catalogue's order.
    pub const ALL: [EndpointId; 14] = [
        EndpointId::Register,
        EndpointId::Login,
        EndpointId::CsrfToken,
        EndpointId::Chat,
        EndpointId::PaymentIntent,
        EndpointId::Webhook,
        EndpointId::Health,
        EndpointId::Account,
        EndpointId::VerifyEmail,
        EndpointId::PasswordReset,
        EndpointId::PasswordResetConfirm,
        EndpointId::ChangePassword,
        EndpointId::Logout,
        EndpointId::LogoutAll,
    ];

    /// The endpoint's policy.
    pub const fn endpoint(self) -> Endpoint {
        ENDPOINTS[self as usize]
    }

    /// The endpoint's name: its configuration key and rate-limit policy name.
    pub const fn name(self) -> &'static str {
        ENDPOINTS[self as usize].name
    }
}

/// Every endpoint's policy, indexed by [`EndpointId`].
pub const ENDPOINTS: [Endpoint; 14] = [
    Endpoint {
        id: EndpointId::Register,
        name: "register",
        function: "register",
        route: "/api/auth/register",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: false,
        csrf: false,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(3, Some(2)),
        body_bytes: 4 * KIB,
    },
    Endpoint {
        id: EndpointId::Login,
        name: "login",
        function: "login",
        route: "/api/auth/login",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: false,
        csrf: false,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(5, Some(3)),
        body_bytes: 4 * KIB,
    },
    Endpoint {
        id: EndpointId::CsrfToken,
        name: "csrf-token",
        function: "csrf-token",
        route: "/api/auth/csrf-token",
        methods: &[Method::GET],
        body: BodyKind::None,
        auth: true,
        csrf: false,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(100, None),
        body_bytes: 0,
    },
    Endpoint {
        id: EndpointId::Chat,
        name: "chat",
        function: "chat",
        route: "/api/ai/chat",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: true,
        csrf: true,
        per_user_limit: true,
        // Without the store nothing bounds spend: chat fails closed like the auth endpoints.
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(20, Some(5)),
        body_bytes: 64 * KIB,
    },
    Endpoint {
        id: EndpointId::PaymentIntent,
        name: "payment-intent",
        function: "payment-intent",
        route: "/api/payments/create-payment-intent",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: true,
        csrf: true,
        per_user_limit: true,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(10, Some(5)),
        body_bytes: 8 * KIB,
    },
    Endpoint {
        id: EndpointId::Webhook,
        name: "webhook",
        function: "webhook",
        route: "/api/payments/webhook",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: false,
        csrf: false,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        // Stripe delivers from a few shared addresses and each delivery authenticates itself:
        // a block would drop every delivery.
        ip_block: false,
        rate: RateLimit::new(300, None),
        body_bytes: 256 * KIB,
    },
    Endpoint {
        id: EndpointId::Health,
        name: "health",
        function: "health",
        route: "/api/health",
        methods: &[Method::GET],
        body: BodyKind::None,
        auth: false,
        csrf: false,
        per_user_limit: false,
        store_failure: StoreFailure::Open,
        security_sensitive: false,
        ip_block: true,
        rate: RateLimit::new(100, None),
        body_bytes: 0,
    },
    Endpoint {
        id: EndpointId::Account,
        name: "account",
        function: "account",
        route: "/api/account",
        methods: &[Method::DELETE],
        body: BodyKind::None,
        auth: true,
        csrf: true,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(3, None),
        body_bytes: 0,
    },
    Endpoint {
        id: EndpointId::VerifyEmail,
        name: "verify-email",
        function: "verify-email",
        route: "/api/auth/verify-email",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: false,
        csrf: false,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(10, None),
        body_bytes: 4 * KIB,
    },
    Endpoint {
        id: EndpointId::PasswordReset,
        name: "password-reset",
        function: "reset",
        route: "/api/auth/password-reset",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: false,
        csrf: false,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(3, None),
        body_bytes: 4 * KIB,
    },
    Endpoint {
        id: EndpointId::PasswordResetConfirm,
        name: "password-reset-confirm",
        function: "reset",
        route: "/api/auth/password-reset/confirm",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: false,
        csrf: false,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(5, None),
        body_bytes: 4 * KIB,
    },
    Endpoint {
        id: EndpointId::ChangePassword,
        name: "change-password",
        function: "password",
        route: "/api/auth/password",
        methods: &[Method::POST],
        body: BodyKind::Json,
        auth: true,
        csrf: true,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(5, None),
        body_bytes: 4 * KIB,
    },
    Endpoint {
        id: EndpointId::Logout,
        name: "logout",
        function: "logout",
        route: "/api/auth/logout",
        methods: &[Method::POST],
        body: BodyKind::None,
        auth: true,
        csrf: true,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(20, None),
        body_bytes: 0,
    },
    Endpoint {
        id: EndpointId::LogoutAll,
        name: "logout-all",
        function: "logout",
        route: "/api/auth/logout-all",
        methods: &[Method::POST],
        body: BodyKind::None,
        auth: true,
        csrf: true,
        per_user_limit: false,
        store_failure: StoreFailure::Closed,
        security_sensitive: true,
        ip_block: true,
        rate: RateLimit::new(20, None),
        body_bytes: 0,
    },
];

/// The endpoint serving `route`, if any.
pub fn by_route(route: &str) -> Option<&'static Endpoint> {
    ENDPOINTS.iter().find(|e| e.route == route)
}

/// The catalogue as the JSON document committed as `endpoints.json`, read by the checks of the
/// router, the template and the OpenAPI document.
pub fn to_json() -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = ENDPOINTS
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "function": e.function,
                "route": e.route,
                "methods": e.methods.iter().map(Method::as_str).collect::<Vec<_>>(),
                "body": match e.body {
                    BodyKind::None => "none",
                    BodyKind::Json => "json",
                },
                "body_bytes": e.body_bytes,
                "auth": e.auth,
                "csrf": e.csrf,
                "per_minute": e.rate.per_minute,
                "burst_per_10s": e.rate.burst,
                "per_user": e.per_user_limit,
                "store_failure": match e.store_failure {
                    StoreFailure::Closed => "closed",
                    StoreFailure::Open => "open",
                },
                "security_sensitive": e.security_sensitive,
                "ip_block": e.ip_block,
            })
        })
        .collect();
    serde_json::json!({
        "$comment": "Generated from shared/src/catalogue.rs: UPDATE_ENDPOINTS=1 cargo test -p flowbotz-security catalogue",
        "endpoints": endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_the_catalogue_then_each_id_indexes_its_own_endpoint() {
        for id in EndpointId::ALL {
            assert_eq!(id.endpoint().id, id, "{id:?} is at the wrong index");
        }
        assert_eq!(EndpointId::ALL.len(), ENDPOINTS.len());
    }

    #[test]
    fn given_the_catalogue_then_names_and_routes_are_unique_and_policies_coherent() {
        let mut names: Vec<_> = ENDPOINTS.iter().map(|e| e.name).collect();
        let mut routes: Vec<_> = ENDPOINTS.iter().map(|e| e.route).collect();
        names.sort_unstable();
        names.dedup();
        routes.sort_unstable();
        routes.dedup();
        assert_eq!(names.len(), ENDPOINTS.len(), "two endpoints share a name");
        assert_eq!(routes.len(), ENDPOINTS.len(), "two endpoints share a route");
        for e in ENDPOINTS {
            assert!(
                !e.per_user_limit || e.auth,
                "{}: per-user limit needs auth",
                e.name
            );
            assert_eq!(
                e.body == BodyKind::None,
                e.body_bytes == 0,
                "{}: body kind and body limit disagree",
                e.name
            );
            assert!(e.route.starts_with("/api/"), "{}", e.name);
            assert_eq!(by_route(e.route).map(|f| f.id), Some(e.id));
        }
    }

    /// The committed `endpoints.json` is the catalogue: the router, template and OpenAPI checks
    /// read it, so a change here without regenerating it fails.
    #[test]
    fn given_the_committed_endpoints_json_then_it_is_the_catalogue() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../endpoints.json");
        let want = format!(
            "{}\n",
            serde_json::to_string_pretty(&to_json()).expect("json")
        );
        if std::env::var_os("UPDATE_ENDPOINTS").is_some() {
            std::fs::write(path, &want).expect("write endpoints.json");
        }
        let got = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            got == want,
            "endpoints.json differs from shared/src/catalogue.rs: regenerate it with \
             `UPDATE_ENDPOINTS=1 cargo test -p flowbotz-security catalogue`"
        );
    }
}

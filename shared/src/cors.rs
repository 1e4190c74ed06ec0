//! CORS with an exact origin allow-list.
//!
//! Only listed origins receive `Access-Control-Allow-Origin` (never `*`, never credentials);
//! every response carries `Vary: Origin` so caches keep answers per origin apart.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Response};

/// Request headers a browser may send cross-origin.
pub const ALLOWED_HEADERS: &str = "Authorization, Content-Type, X-CSRF-Token, Idempotency-Key";
/// Response headers a browser script may read.
pub const EXPOSED_HEADERS: &str = "Retry-After, RateLimit, RateLimit-Policy, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-Request-Id";
/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE_SECS: u32 = 600;

/// A CORS policy for one endpoint.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<String>,
    methods: String,
}

impl Cors {
    /// A policy allowing `origins` (exact, lower-case `scheme://host[:port]`) to call `methods`.
    pub fn new(origins: &[String], methods: &[Method]) -> Self {
        let methods = methods
            .iter()
            .map(Method::as_str)
            .chain(std::iter::once("OPTIONS"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            origins: origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
            methods,
        }
    }

    /// Whether `origin` is on the allow-list.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// The `Allow` value: the endpoint's methods and OPTIONS.
    pub fn allow_header(&self) -> &str {
        &self.methods
    }

    /// The answer to an `OPTIONS` request: 204, with the CORS grant only for allowed origins.
    pub fn preflight(&self, request_headers: &HeaderMap) -> Response<Body> {
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.methods) {
            h.insert(header::ALLOW, v);
        }
        if self.allowed_origin(request_headers).is_some() {
            if let Ok(v) = HeaderValue::from_str(&self.methods) {
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
            }
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(MAX_AGE_SECS),
            );
        }
        self.decorate(request_headers, h);
        resp
    }

    /// Adds `Vary: Origin` and, for an allowed origin, `Access-Control-Allow-Origin` and the
    /// exposed headers to a response.
    pub fn decorate(&self, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
        response_headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allowed_origin(request_headers) {
            response_headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            response_headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
        }
    }

    fn allowed_origin<'a>(&self, request_headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = request_headers.get(header::ORIGIN)?;
        self.allows(origin.to_str().ok()?).then_some(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors::new(&["http://localhost:3000".to_string()], &[Method::POST])
    }

    fn with_origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(o).expect("origin"));
        h
    }

    #[test]
    fn given_allowed_origin_when_preflight_then_204_with_grant() {
        let resp = cors().preflight(&with_origin("http://localhost:3000"));
        assert_eq!(resp.status(), 204);
        let h = resp.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "POST, OPTIONS");
        assert!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap_or("")
                .contains("X-CSRF-Token")
        );
        assert_eq!(h[header::VARY], "Origin");
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert_eq!(h[header::ALLOW], "POST, OPTIONS");
        assert_eq!(cors().allow_header(), "POST, OPTIONS");
    }

    #[test]
    fn given_unknown_origin_when_preflight_or_request_then_no_grant() {
        let resp = cors().preflight(&with_origin("https://evil.example"));
        assert_eq!(resp.status(), 204);
        assert!(
            resp.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
        let mut h = HeaderMap::new();
        cors().decorate(&with_origin("http://localhost:3000.evil.example"), &mut h);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(h[header::VARY], "Origin");
    }
}

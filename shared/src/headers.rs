//! The security headers sent on every response, errors and 429s included.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Every security header and its value, as the API contract lists them.
pub const SECURITY_HEADERS: [(&str, &str); 10] = [
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("x-xss-protection", "0"),
    ("referrer-policy", "no-referrer"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=(), interest-cohort=()",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
];

const fn prepared(i: usize) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(SECURITY_HEADERS[i].0),
        HeaderValue::from_static(SECURITY_HEADERS[i].1),
    )
}

/// [`SECURITY_HEADERS`] as header names and values, validated at compile time: parsing the
/// names on every response was a fifth of the pipeline's time (see BENCHMARKS.md).
const PREPARED: [(HeaderName, HeaderValue); SECURITY_HEADERS.len()] = [
    prepared(0),
    prepared(1),
    prepared(2),
    prepared(3),
    prepared(4),
    prepared(5),
    prepared(6),
    prepared(7),
    prepared(8),
    prepared(9),
];

const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Headers a response gets after the handler's: the security headers, CORS, rate limits and
/// the request id. Reserving them at once spares the map its growth steps.
const ADDED_HEADERS: usize = 24;

/// Sets every security header (replacing any value a handler set) and removes headers that
/// reveal the server.
pub fn apply(headers: &mut HeaderMap) {
    headers.reserve(ADDED_HEADERS);
    for (name, value) in PREPARED {
        headers.insert(name, value);
    }
    headers.remove(header::SERVER);
    headers.remove(X_POWERED_BY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_response_with_server_headers_when_applied_then_all_security_headers_and_no_server() {
        let mut h = HeaderMap::new();
        h.insert(header::SERVER, HeaderValue::from_static("x"));
        h.insert("x-powered-by", HeaderValue::from_static("y"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        apply(&mut h);
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(h[name], value);
        }
        assert!(h.get(header::SERVER).is_none());
        assert!(h.get("x-powered-by").is_none());
    }
}

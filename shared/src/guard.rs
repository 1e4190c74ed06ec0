//! The request guard: malicious patterns in the path, query and headers, body size and media
//! type. Each check is a function of the request's parts, testable alone.

use http::{HeaderMap, header};
use percent_encoding::percent_decode;

use crate::error::ApiError;

/// Longest raw query string accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Most query parameters accepted.
pub const MAX_QUERY_PARAMS: usize = 20;
/// Longest single header value accepted, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 8192;
/// Most rounds of percent-decoding applied when looking for hidden patterns.
const DECODE_ROUNDS: usize = 3;

/// What an endpoint accepts as a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: any non-empty body is refused with 413.
    None,
    /// A JSON body (`application/json`) of at most the endpoint's configured size.
    Json,
}

/// Checks the raw (undecoded) path for traversal, NUL, CR/LF, backslashes and injection
/// patterns, in plain, percent- and double-percent-encoded forms.
pub fn check_path(raw_path: &str) -> Result<(), ApiError> {
    if raw_path.contains('\\') {
        return Err(ApiError::MaliciousInput("a backslash in the path"));
    }
    check_value(raw_path, true)
}

/// Checks a raw query string: its length, its parameter count, and every name and value.
pub fn check_query(raw_query: &str) -> Result<(), ApiError> {
    if raw_query.is_empty() {
        return Ok(());
    }
    if raw_query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::MaliciousInput("an over-long query string"));
    }
    let params = raw_query.split('&').filter(|p| !p.is_empty());
    if params.clone().count() > MAX_QUERY_PARAMS {
        return Err(ApiError::MaliciousInput("too many query parameters"));
    }
    for param in params {
        check_value(&param.replace('+', " "), true)?;
    }
    Ok(())
}

/// Checks decoded query parameters (as API Gateway REST events carry them).
pub fn check_query_values<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), ApiError> {
    let mut count = 0;
    for (k, v) in pairs {
        count += 1;
        if count > MAX_QUERY_PARAMS {
            return Err(ApiError::MaliciousInput("too many query parameters"));
        }
        if k.len() + v.len() > MAX_QUERY_BYTES {
            return Err(ApiError::MaliciousInput("an over-long query string"));
        }
        check_value(k, true)?;
        check_value(v, true)?;
    }
    Ok(())
}

/// Checks every header value for encoded CR/LF or NUL and over-long values. (Raw control
/// characters cannot reach here: `http::HeaderValue` refuses them.)
pub fn check_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    for value in headers.values() {
        let bytes = value.as_bytes();
        if bytes.len() > MAX_HEADER_VALUE_BYTES {
            return Err(ApiError::MaliciousInput("an over-long header value"));
        }
        if bytes.contains(&b'%') {
            for decoded in decodings(bytes) {
                if decoded.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
                    return Err(ApiError::MaliciousInput(
                        "encoded control characters in a header",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks the body's size against `limit` (0: no body accepted) and, for JSON endpoints, the
/// `Content-Type`.
pub fn check_body(
    kind: BodyKind,
    limit: usize,
    body_len: usize,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let limit = if kind == BodyKind::None { 0 } else { limit };
    if body_len > limit || declared > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    if kind == BodyKind::Json && !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(())
}

/// Whether `Content-Type` is `application/json`, optionally with a UTF-8 charset.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = ct.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| {
        p.is_empty()
            || p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && matches!(
                        v.trim().trim_matches('"').to_ascii_lowercase().as_str(),
                        "utf-8" | "utf8"
                    )
            })
    })
}

/// The value and up to three rounds of its percent-decoding, stopping when nothing changes.
fn decodings(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![raw.to_vec()];
    for _ in 0..DECODE_ROUNDS {
        let last = out.last().map(Vec::as_slice).unwrap_or_default();
        if !last.contains(&b'%') {
            break;
        }
        let next: Vec<u8> = percent_decode(last).collect();
        if next == last {
            break;
        }
        out.push(next);
    }
    out
}

fn check_value(raw: &str, identifier_like: bool) -> Result<(), ApiError> {
    if raw.to_ascii_lowercase().contains("%u") {
        return Err(ApiError::MaliciousInput("a non-standard %u escape"));
    }
    for (round, bytes) in decodings(raw.as_bytes()).into_iter().enumerate() {
        if bytes.contains(&0) {
            return Err(ApiError::MaliciousInput("a NUL byte"));
        }
        if bytes.contains(&b'\r') || bytes.contains(&b'\n') {
            return Err(ApiError::MaliciousInput("CR or LF characters"));
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(ApiError::MaliciousInput(
                "an invalid or over-long UTF-8 encoding",
            ));
        };
        if round > 0 && text.contains('\\') {
            return Err(ApiError::MaliciousInput("an encoded backslash"));
        }
        if has_traversal(text) {
            return Err(ApiError::MaliciousInput("a path traversal sequence"));
        }
        if identifier_like && let Some(what) = injection(text) {
            return Err(ApiError::MaliciousInput(what));
        }
    }
    Ok(())
}

fn has_traversal(text: &str) -> bool {
    text.split(['/', '\\', '?', '&', '=', ';'])
        .any(|seg| seg.len() >= 2 && seg.bytes().all(|b| b == b'.'))
}

fn injection(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    const SCRIPT: [&str; 5] = ["<script", "javascript:", "onerror=", "onload=", "<iframe"];
    const SQL: [&str; 7] = [
        "' or ",
        "\" or ",
        "union select",
        "union all select",
        ";drop ",
        "; drop ",
        "'--",
    ];
    if SCRIPT.iter().any(|p| lower.contains(p)) {
        return Some("a script injection pattern");
    }
    if SQL.iter().any(|p| lower.contains(p)) || lower.contains("' --") {
        return Some("an SQL injection pattern");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn given_traversal_in_any_encoding_when_checking_path_then_rejected() {
        for p in [
            "/api/health/../../etc/passwd",
            "/api/health/%2e%2e%2fetc",
            "/api/health/%2E%2E/etc",
            "/api/health/%252e%252e%252f",
            "/api/health/..%2f..%2f",
            "/api/health/%c0%ae%c0%ae/",
            "/api/health/%u002e%u002e/",
            "/api/health/..\\..\\",
            "/api/health/%5c..%5c",
            "/api/%00",
            "/api/health%0d%0aSet-Cookie:x",
        ] {
            assert!(check_path(p).is_err(), "{p} passed");
        }
    }

    #[test]
    fn given_clean_paths_when_checking_then_accepted() {
        for p in ["/api/health", "/api/auth/csrf-token", "/api/a.b/c...d"] {
            assert!(check_path(p).is_ok(), "{p} refused");
        }
    }

    #[test]
    fn given_bad_queries_when_checking_then_rejected() {
        assert!(check_query("q=%00").is_err());
        assert!(check_query("file=..%2f..%2fetc%2fpasswd").is_err());
        assert!(check_query("id=1'%20or%201=1").is_err());
        assert!(check_query("x=%3Cscript%3Ealert(1)").is_err());
        assert!(check_query(&"a=1&".repeat(MAX_QUERY_PARAMS + 1)).is_err());
        assert!(check_query(&format!("a={}", "x".repeat(MAX_QUERY_BYTES))).is_err());
        assert!(check_query("page=2&sort=name").is_ok());
        assert!(check_query_values([("f", "../x")].into_iter()).is_err());
        assert!(check_query_values([("f", "x")].into_iter()).is_ok());
    }

    #[test]
    fn given_header_injection_when_checking_headers_then_rejected() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("fine value"));
        assert!(check_headers(&h).is_ok());
        h.insert("x-b", HeaderValue::from_static("a%0d%0aSet-Cookie: x=1"));
        assert!(check_headers(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert("x-c", HeaderValue::from_static("..%00"));
        assert!(check_headers(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(
            "x-d",
            HeaderValue::from_str(&"a".repeat(MAX_HEADER_VALUE_BYTES + 1)).expect("v"),
        );
        assert!(check_headers(&h).is_err());
    }

    #[test]
    fn given_limits_when_checking_queries_then_the_edges_are_exact() {
        let at = |n: usize| {
            (0..n)
                .map(|i| format!("p{i}=1"))
                .collect::<Vec<_>>()
                .join("&")
        };
        assert!(check_query(&at(MAX_QUERY_PARAMS)).is_ok());
        assert!(check_query(&at(MAX_QUERY_PARAMS + 1)).is_err());
        let long = |n: usize| format!("a={}", "x".repeat(n - 2));
        assert!(check_query(&long(MAX_QUERY_BYTES)).is_ok());
        assert!(check_query(&long(MAX_QUERY_BYTES + 1)).is_err());
        let pairs: Vec<(String, String)> = (0..MAX_QUERY_PARAMS)
            .map(|i| (format!("p{i}"), "1".into()))
            .collect();
        assert!(check_query_values(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).is_ok());
        let mut more = pairs.clone();
        more.push(("extra".into(), "1".into()));
        assert!(check_query_values(more.iter().map(|(k, v)| (k.as_str(), v.as_str()))).is_err());
        let v = "x".repeat(MAX_QUERY_BYTES - 1);
        assert!(check_query_values([("k", v.as_str())].into_iter()).is_ok());
        let v = "x".repeat(MAX_QUERY_BYTES);
        assert!(check_query_values([("k", v.as_str())].into_iter()).is_err());
        assert!(check_query("a=b%5cc").is_err(), "an encoded backslash");
        assert!(check_query("a=x%0ay").is_err(), "LF alone");
        assert!(check_path("/api/x%0d").is_err(), "CR alone");
        assert!(
            check_query("a=b\\c").is_ok(),
            "a literal backslash in a query value is data"
        );
        assert!(check_query("a=.x.&b=x..y").is_ok());
        assert!(
            check_query("a=...").is_err(),
            "dots alone are a traversal segment"
        );
    }

    #[test]
    fn given_each_encoded_control_character_when_checking_headers_then_rejected() {
        for bad in ["a%00b", "a%0db", "a%0ab", "a%250d%250ab"] {
            let mut h = HeaderMap::new();
            h.insert("x-a", HeaderValue::from_str(bad).expect("v"));
            assert!(check_headers(&h).is_err(), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("tab\there 100%25 fine"));
        h.insert(
            "x-b",
            HeaderValue::from_str(&"a".repeat(MAX_HEADER_VALUE_BYTES)).expect("v"),
        );
        assert!(check_headers(&h).is_ok());
    }

    #[test]
    fn given_bodies_when_checking_then_size_and_media_type_are_enforced() {
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(check_body(BodyKind::Json, 4096, 100, &json).is_ok());
        assert!(matches!(
            check_body(BodyKind::Json, 4096, 4097, &json),
            Err(ApiError::PayloadTooLarge { limit: 4096 })
        ));
        assert!(matches!(
            check_body(BodyKind::None, 4096, 1, &HeaderMap::new()),
            Err(ApiError::PayloadTooLarge { .. })
        ));
        assert!(check_body(BodyKind::None, 0, 0, &HeaderMap::new()).is_ok());
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(matches!(
            check_body(BodyKind::Json, 4096, 10, &form),
            Err(ApiError::UnsupportedMediaType)
        ));
        assert!(matches!(
            check_body(BodyKind::Json, 4096, 0, &HeaderMap::new()),
            Err(ApiError::UnsupportedMediaType)
        ));
        let mut odd = HeaderMap::new();
        odd.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=latin1"),
        );
        assert!(!is_json(&odd));
    }
}

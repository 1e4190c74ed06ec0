//! Expectations written from the API contract (shared/API.md, "Headers on every response"),
//! independent of the implementation's own tables: a change to any security header or value
//! in `shared/src/headers.rs` fails the tests that use these.

use std::collections::BTreeMap;

/// Every header the contract names with an exact value.
pub const EXACT_HEADERS: [(&str, &str); 9] = [
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
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
];

/// Powerful features the contract's `Permissions-Policy` must deny ("camera, microphone,
/// geolocation and the like").
pub const DENIED_FEATURES: [&str; 8] = [
    "camera",
    "microphone",
    "geolocation",
    "payment",
    "usb",
    "accelerometer",
    "gyroscope",
    "magnetometer",
];

/// Headers that must never be sent.
pub const FORBIDDEN_HEADERS: [&str; 2] = ["server", "x-powered-by"];

/// Checks a response's headers (looked up by lower-case name) against the contract; returns
/// every mismatch.
pub fn header_mismatches(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut wrong = Vec::new();
    for (name, want) in EXACT_HEADERS {
        let got = get(name);
        if got.as_deref() != Some(want) {
            wrong.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    match get("permissions-policy") {
        None => wrong.push("permissions-policy: missing".into()),
        Some(policy) => {
            let directives: BTreeMap<&str, &str> = policy
                .split(',')
                .filter_map(|d| d.trim().split_once('='))
                .collect();
            for feature in DENIED_FEATURES {
                if directives.get(feature) != Some(&"()") {
                    wrong.push(format!(
                        "permissions-policy: {feature} is not denied in {policy:?}"
                    ));
                }
            }
        }
    }
    for name in FORBIDDEN_HEADERS {
        if get(name).is_some() {
            wrong.push(format!("{name}: must not be sent"));
        }
    }
    wrong
}

/// Asserts [`header_mismatches`] finds nothing.
pub fn assert_contract_headers(what: &str, get: impl Fn(&str) -> Option<String>) {
    let wrong = header_mismatches(get);
    assert!(wrong.is_empty(), "{what}: {wrong:#?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> BTreeMap<String, String> {
        let mut h: BTreeMap<String, String> = EXACT_HEADERS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        h.insert(
            "permissions-policy".into(),
            "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()".into(),
        );
        h
    }

    #[test]
    fn given_each_header_changed_or_missing_then_a_mismatch_names_it() {
        assert!(header_mismatches(|n| full().get(n).cloned()).is_empty());
        for (name, _) in EXACT_HEADERS.iter().chain([&("permissions-policy", "")]) {
            let mut h = full();
            h.remove(*name);
            let wrong = header_mismatches(|n| h.get(n).cloned());
            assert!(wrong.iter().any(|w| w.starts_with(name)), "{name} missing");
            let mut h = full();
            h.insert(name.to_string(), "changed".into());
            let wrong = header_mismatches(|n| h.get(n).cloned());
            assert!(wrong.iter().any(|w| w.starts_with(name)), "{name} changed");
        }
        let mut h = full();
        h.insert("server".into(), "x".into());
        assert_eq!(header_mismatches(|n| h.get(n).cloned()).len(), 1);
    }
}

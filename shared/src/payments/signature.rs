//! Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, an
//! HMAC-SHA256 of `"<t>.<raw body>"` with the endpoint's signing secret.
//!
//! The raw body is verified before anything parses it; any `v1` value matching any configured
//! secret passes (Stripe sends one per secret while a secret is being rolled), every
//! comparison is constant-time, and the timestamp must be within the tolerance either way.
//! async-stripe-webhook verifies the same way but only together with its typed event parse,
//! which fails on fields a newer API version adds; this check stands alone.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// Stripe's default tolerance between the signature's timestamp and now, in seconds.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Why a signature was refused (for logs; the client sees one answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    Missing,
    /// The header has no timestamp or no `v1` signature, or a value is not hex.
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("timestamp outside the tolerance")]
    Stale,
    /// No signature matches any secret.
    #[error("no signature matches")]
    Mismatch,
}

/// Verifies `payload` against a `Stripe-Signature` header value at `now_s`.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[Secret],
    now_s: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => timestamp = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if t.abs_diff(now_s) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let t = t.to_string();
    let mut matched = false;
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(payload);
        for sig in &signatures {
            // Every pair is compared, so the time taken does not tell which one matched.
            matched |= mac.clone().verify_slice(sig).is_ok();
        }
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header Stripe would send for `payload` signed with `secret` at `t` (for tests and the
/// local stand-in's counterpart in Rust).
pub fn sign(payload: &[u8], secret: &str, t: u64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn secrets(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|s| Secret::new(*s)).collect()
    }

    #[test]
    fn given_a_valid_signature_when_verifying_then_accepted() {
        let h = sign(BODY, "whsec_a", NOW);
        assert_eq!(
            verify(BODY, Some(&h), &secrets(&["whsec_a"]), NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn given_tampering_or_wrong_secret_when_verifying_then_mismatch() {
        let h = sign(BODY, "whsec_a", NOW);
        let tampered = br#"{"id":"evt_1","type":"payment_intent.succeeded "}"#;
        assert_eq!(
            verify(tampered, Some(&h), &secrets(&["whsec_a"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(BODY, Some(&h), &secrets(&["whsec_b"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let other_t = h.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(
            verify(BODY, Some(&other_t), &secrets(&["whsec_a"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn given_timestamps_at_the_edges_when_verifying_then_301_seconds_either_way_is_stale() {
        let s = secrets(&["whsec_a"]);
        assert_eq!(
            verify(BODY, Some(&sign(BODY, "whsec_a", NOW - 300)), &s, NOW, 300),
            Ok(())
        );
        assert_eq!(
            verify(BODY, Some(&sign(BODY, "whsec_a", NOW + 300)), &s, NOW, 300),
            Ok(())
        );
        assert_eq!(
            verify(BODY, Some(&sign(BODY, "whsec_a", NOW - 301)), &s, NOW, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(BODY, Some(&sign(BODY, "whsec_a", NOW + 301)), &s, NOW, 300),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn given_rotation_when_verifying_then_any_v1_with_any_secret_passes() {
        let good = sign(BODY, "whsec_new", NOW);
        let sig = good.split("v1=").nth(1).unwrap_or_default();
        let first_only = format!("t={NOW},v1={sig},v1={}", "00".repeat(32));
        let second_only = format!("t={NOW},v1={},v1={sig},v0=abc", "00".repeat(32));
        let s = secrets(&["whsec_old", "whsec_new"]);
        assert_eq!(verify(BODY, Some(&first_only), &s, NOW, 300), Ok(()));
        assert_eq!(verify(BODY, Some(&second_only), &s, NOW, 300), Ok(()));
        let old = sign(BODY, "whsec_old", NOW);
        assert_eq!(
            verify(BODY, Some(&old), &s, NOW, 300),
            Ok(()),
            "old secret during rotation"
        );
    }

    #[test]
    fn given_missing_or_malformed_headers_when_verifying_then_refused() {
        let s = secrets(&["whsec_a"]);
        assert_eq!(
            verify(BODY, None, &s, NOW, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(BODY, Some("v1=abcd"), &s, NOW, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(BODY, Some(&format!("t={NOW}")), &s, NOW, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(BODY, Some(&format!("t={NOW},v1=zz")), &s, NOW, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(BODY, Some("t=x,v1=00"), &s, NOW, 300),
            Err(SignatureError::Malformed)
        );
    }
}

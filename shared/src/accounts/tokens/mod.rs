//! One-time tokens for mailed links: email verification and password reset.
//!
//! A token is 256 random bits from the operating system, sent as 43 characters of unpadded
//! base64url in a link's fragment and never stored: the store keys its grant by the token's
//! SHA-256 ([`token_hash`]), so a copy of the table holds nothing that opens a link. Each
//! token has one [`Purpose`] and is bound to what it grants ([`Grant`]): a pending
//! registration (verify, 24 hours) or one account (reset, 1 hour). [`TokenStore::consume`]
//! hands the grant out at most once, atomically, and only for the purpose it was issued for
//! and before it expires: a reset token never verifies a registration, and two racing
//! consumers of one token never both win.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

use crate::ratelimit::StoreError;

/// Random bytes in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// Characters of a token's base64url form.
pub const TOKEN_CHARS: usize = 43;

/// What a token may be used for; a token is consumed only for its own purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Proves a mailbox and turns a pending registration into an account.
    Verify,
    /// Sets a new password for one account.
    Reset,
}

impl Purpose {
    /// The stored name (`verify`, `reset`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
        }
    }

    /// How long a token of this purpose is valid: 24 hours to verify, 1 hour to reset.
    pub fn lifetime(self) -> Duration {
        match self {
            Self::Verify => Duration::from_secs(24 * 3600),
            Self::Reset => Duration::from_secs(3600),
        }
    }
}

/// A one-time token's secret form, for the link only: its `Debug` is redacted and it is never
/// stored (only [`OneTimeToken::hash`] is).
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeToken(String);

impl std::fmt::Debug for OneTimeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneTimeToken([redacted])")
    }
}

impl OneTimeToken {
    /// A new token of 256 bits from the operating system's random source.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the random source fails (never silently weaker).
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| StoreError::Unavailable(format!("random source: {e}")))?;
        Ok(Self(B64.encode(bytes)))
    }

    /// The token as sent in a link.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hex SHA-256 under which its grant is stored.
    pub fn hash(&self) -> String {
        token_hash(&self.0)
    }
}

/// The hex SHA-256 of a token as presented: the only form of a token that is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape of an issued token (43 base64url characters), so a malformed
/// one is refused without a store request.
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A registration waiting for its mailbox to be proven: what the verification creates.
/// Many may exist for one email (an attacker's never blocks the owner's).
#[derive(Clone, PartialEq, Eq)]
pub struct PendingRegistration {
    /// The normalised email.
    pub email: String,
    /// The display name, if given.
    pub name: Option<String>,
    /// The Argon2id PHC string of the password chosen at registration; the verification must
    /// present that password.
    pub password_hash: String,
}

impl std::fmt::Debug for PendingRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRegistration")
            .finish_non_exhaustive()
    }
}

/// The account a reset token may set a password for.
#[derive(Clone, PartialEq, Eq)]
pub struct ResetGrant {
    /// The user id.
    pub user_id: String,
    /// The normalised email of the account when the token was issued.
    pub email: String,
}

impl std::fmt::Debug for ResetGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetGrant")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// What a token grants, and so its purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Verification of a pending registration.
    Verify(PendingRegistration),
    /// A password reset of one account.
    Reset(ResetGrant),
}

impl Grant {
    /// The purpose a token of this grant is consumed for.
    pub fn purpose(&self) -> Purpose {
        match self {
            Self::Verify(_) => Purpose::Verify,
            Self::Reset(_) => Purpose::Reset,
        }
    }
}

/// Where one-time tokens' grants live, keyed by the token's hash.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores `grant` under `hash` until `expires_at_s` (epoch seconds), one write that never
    /// replaces another token's grant.
    async fn put(&self, hash: &str, grant: &Grant, expires_at_s: u64) -> Result<(), StoreError>;

    /// Consumes the token `token` (as presented) for `purpose` at `now_s`: its grant if it
    /// exists, is of that purpose and has not expired, removing it in the same atomic step;
    /// `Ok(None)` otherwise (unknown, used, expired, another purpose or malformed, all alike),
    /// leaving the store unchanged. At most one of many racing consumers gets the grant.
    async fn consume(
        &self,
        token: &str,
        purpose: Purpose,
        now_s: u64,
    ) -> Result<Option<Grant>, StoreError>;
}

/// Issues a token for `grant` at `now_s`: a new random token whose hash is stored with the
/// grant until its purpose's lifetime passes. Returns the token for the mailed link.
pub async fn issue(
    store: &dyn TokenStore,
    grant: &Grant,
    now_s: u64,
) -> Result<OneTimeToken, StoreError> {
    let token = OneTimeToken::generate()?;
    let expires = now_s + grant.purpose().lifetime().as_secs();
    store.put(&token.hash(), grant, expires).await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryTokenStore;
    use super::*;

    fn pending() -> Grant {
        Grant::Verify(PendingRegistration {
            email: "ada@example.com".into(),
            name: Some("Ada".into()),
            password_hash: "$argon2id$secret-hash".into(),
        })
    }

    #[test]
    fn given_new_tokens_when_generated_then_256_bits_base64url_distinct_and_redacted() {
        let a = OneTimeToken::generate().expect("token");
        let b = OneTimeToken::generate().expect("token");
        assert_ne!(a, b);
        assert!(well_formed(a.expose()), "{}", a.expose().len());
        assert_eq!(B64.decode(a.expose()).expect("base64").len(), 32);
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
        let dbg = format!("{:?}", pending());
        assert!(
            !dbg.contains("secret-hash") && !dbg.contains("ada@"),
            "{dbg}"
        );
        assert!(!well_formed("short") && !well_formed(&"a".repeat(42)));
        assert!(!well_formed(&format!("{}=", "a".repeat(42))));
    }

    #[test]
    fn given_purposes_then_verify_lasts_a_day_and_reset_an_hour() {
        assert_eq!(Purpose::Verify.lifetime().as_secs(), 86_400);
        assert_eq!(Purpose::Reset.lifetime().as_secs(), 3_600);
        assert_eq!(pending().purpose(), Purpose::Verify);
    }

    #[tokio::test]
    async fn given_an_issued_token_when_consumed_then_once_for_its_purpose_before_expiry() {
        let store = MemoryTokenStore::new();
        let token = issue(&store, &pending(), 1000).await.expect("issue");
        let t = token.expose();
        assert_eq!(
            store.consume(t, Purpose::Reset, 1001).await.expect("c"),
            None
        );
        assert_eq!(
            store
                .consume(t, Purpose::Verify, 1000 + 86_400)
                .await
                .expect("c"),
            None,
            "expired at its lifetime"
        );
        assert_eq!(
            store.consume(t, Purpose::Verify, 1001).await.expect("c"),
            Some(pending())
        );
        assert_eq!(
            store.consume(t, Purpose::Verify, 1002).await.expect("c"),
            None
        );
    }
}

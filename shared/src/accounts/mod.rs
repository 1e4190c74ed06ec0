//! Accounts: normalised emails, the user store, password policy and hashing, per-account
//! failed-login throttling, one-time tokens for mailed links ([`tokens`]), registrations that
//! become accounts only once their mailbox is proven ([`registration`]), password updates and
//! per-account session generations.
//!
//! # Sessions that end
//!
//! Every account has a *session generation* (`session_gen`, 0 until first bumped). Login puts
//! the account's generation in the access token (`gen` claim, [`crate::session::Claims`]); a
//! token is alive only while its generation is the account's, or while its `jti` is the
//! account's *keeper* (the session that changed the password). [`UserStore::end_all_sessions`]
//! (logout everywhere) and [`UserStore::set_password`] bump the generation, so every token
//! issued before ends on the next request, on every instance; [`UserStore::end_session`] ends
//! one session (logout). [`crate::revocation`] checks all of it in one read.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod memory;
pub mod password;
pub mod registration;
pub mod tokens;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::ratelimit::StoreError;

/// Trims and case-folds an email so that one address has one account.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether `email`'s domain looks deliverable, as a sign-up form should require: ASCII (an
/// internationalised domain in its `xn--` form), at least two dot-separated labels of 1 to 63
/// letters, digits or inner hyphens, at most 253 characters, and a top-level label of two or
/// more letters; internationalised labels below it in their `xn--` form. Special-use names
/// (`.test`, `.invalid`, ...) pass this syntax check: only a mailed link proves a mailbox. Refuses `a@b`, `a@localhost`, `a@b.c0m` and `a@1.2.3.4`;
/// accepts plus-addressing and subdomains, which are the local part's and the labels' business.
pub fn deliverable_domain(email: &str) -> bool {
    let Some((_, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let domain = domain.to_ascii_lowercase();
    if !domain.is_ascii() || domain.is_empty() || domain.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let Some(tld) = labels.last() else {
        return false;
    };
    let tld_ok = tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic());
    labels.len() >= 2 && labels.iter().all(label_ok) && tld_ok
}

/// The key of an email's failed-login counter: a hash, so that addresses of people without
/// an account are not stored.
pub fn failure_key(email: &str) -> String {
    hex::encode(Sha256::digest(normalize_email(email).as_bytes()))
}

/// A stored account.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user id (`sub` of access tokens).
    pub user_id: String,
    /// The normalised email.
    pub email: String,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// The display name, if given.
    pub name: Option<String>,
    /// Epoch seconds of registration.
    pub created_at: u64,
    /// Epoch seconds at which the mailbox was proven (the verification link was used). The
    /// store never returns an account without it: an item lacking it is treated as absent.
    pub email_verified_at: u64,
    /// The account's session generation: tokens carrying another one have ended, unless
    /// theirs is the keeper session (see the module documentation). 0 for a new account.
    pub session_gen: u64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Failed logins of one email within the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    /// Failures counted.
    pub count: u32,
    /// Epoch second of the first failure of the window.
    pub since_s: u64,
}

impl Failures {
    /// Seconds the account stays throttled at `now_s`, if `max` failures within `window_s`
    /// have been reached.
    pub fn throttled_for(&self, now_s: u64, max: u32, window_s: u64) -> Option<u64> {
        let ends = self.since_s + window_s;
        (self.count >= max && now_s < ends).then(|| ends - now_s)
    }
}

/// The verdict on one login attempt, reserved before the password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The attempt is counted; the password may be checked.
    Admitted(Failures),
    /// The account has used its attempts in this window: refuse without checking.
    Throttled {
        /// Seconds until the window passes.
        retry_after: u64,
    },
}

/// The flow a mail belongs to: each has caps of its own ([`UserStore::reserve_mail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// Verification links and "you already have an account" mails (register).
    Registration,
    /// Reset links and "no account here" notices (password reset requests).
    Reset,
}

impl MailKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Registration => "register",
            Self::Reset => "reset",
        }
    }
}

/// Mails of one kind to one address asked for from one client network (an IPv4 address or an
/// IPv6 /64) per [`MAIL_WINDOW_S`]: a stranger's requests spend their own network's share, not
/// the owner's.
pub const MAILS_PER_ADDRESS_AND_NETWORK: u32 = 3;
/// Mails of one kind to one address per [`MAIL_WINDOW_S`] from all networks together, so many
/// networks cannot flood a mailbox either. Past a cap the request answers as always and sends
/// nothing.
pub const MAILS_PER_ADDRESS: u32 = 10;
/// The window of the mail caps: one hour.
pub const MAIL_WINDOW_S: u64 = 3600;

/// Which sessions a password update ends ([`UserStore::set_password`]).
#[derive(Clone, PartialEq, Eq)]
pub enum EndSessions {
    /// Every session of the account (password reset).
    All,
    /// A password change by one of the account's sessions: every session but that one ends.
    /// The change is written only while that session still stands (its `generation` is the
    /// account's, or it is the kept one) and the stored hash is still `verified_hash`, the one
    /// its current password was checked against, so a change in flight can never undo a reset
    /// or a logout everywhere that landed meanwhile.
    AllExcept {
        /// The `jti` of the changing session's access token.
        jti: String,
        /// That token's session generation.
        generation: u64,
        /// The password hash the current password was verified against.
        verified_hash: String,
    },
}

impl std::fmt::Debug for EndSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("All"),
            Self::AllExcept { generation, .. } => f
                .debug_struct("AllExcept")
                .field("generation", generation)
                .finish_non_exhaustive(),
        }
    }
}

/// Where accounts live. Every method is one request to the backing service unless its
/// documentation says otherwise, and each is atomic.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the verified account unless the email already has one (atomically, the email
    /// and the user id both unique); `Ok(false)` when taken: a distinct answer, not an error.
    /// Only the verification of a mailed link ([`registration::verify`]) should call it.
    async fn create(&self, user: &UserRecord) -> Result<bool, StoreError>;

    /// The verified account of `email` (normalised) and its failed-login state, in one read.
    /// An account item without `email_verified_at` is reported as absent.
    async fn lookup(&self, email: &str) -> Result<(Option<UserRecord>, Failures), StoreError>;

    /// The verified account of `user_id` (two consistent reads: the id's item, then the
    /// account), for callers that hold a session rather than an email (change password).
    async fn find(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Replaces the password of the account `user_id` (whose email is `email`), clears its
    /// failed-login count, and ends its sessions as `end` says: the generation is bumped, and
    /// [`EndSessions::AllExcept`] records the kept session. One atomic write, conditioned on
    /// the account existing with this id and email; `Ok(false)` when it does not (an erased
    /// account is never written back).
    async fn set_password(
        &self,
        user_id: &str,
        email: &str,
        password_hash: &str,
        end: EndSessions,
    ) -> Result<bool, StoreError>;

    /// Ends every session of `user_id` (logout everywhere): bumps the generation and drops any
    /// keeper. `Ok(false)` when there is no such account. One read of the id's item, then one
    /// atomic write conditioned on the account existing.
    async fn end_all_sessions(&self, user_id: &str) -> Result<bool, StoreError>;

    /// Ends the one session whose access token has `jti` and expires at `exp` (epoch seconds):
    /// a denial item that lives until the token would have expired (logout).
    async fn end_session(&self, jti: &str, exp: u64) -> Result<(), StoreError>;

    /// Reserves one login attempt on `email` at `now_s` before its password is checked, in one
    /// atomic step: admitted while fewer than `max` attempts were counted in the window of
    /// `window_s` seconds (a passed window restarts), else throttled. Racing instances never
    /// admit more than `max` attempts in a window; a successful login clears the count.
    async fn reserve_attempt(
        &self,
        email: &str,
        now_s: u64,
        max: u32,
        window_s: u64,
    ) -> Result<Attempt, StoreError>;

    /// Clears the failed-login state of `email` after a successful login.
    async fn clear_failures(&self, email: &str) -> Result<(), StoreError>;

    /// Reserves one mail of `kind` to `email`, asked for from the client network `network`, at
    /// `now_s`: admitted while under [`MAILS_PER_ADDRESS_AND_NETWORK`] for the pair and
    /// [`MAILS_PER_ADDRESS`] for the address within [`MAIL_WINDOW_S`]. Counted apart from login
    /// failures (the attempt counters of [`UserStore::reserve_attempt`] under keys no address
    /// can take) and whether or not the address has an account. Two requests.
    async fn reserve_mail(
        &self,
        kind: MailKind,
        email: &str,
        network: &str,
        now_s: u64,
    ) -> Result<Attempt, StoreError> {
        let kind = kind.as_str();
        let pair = self
            .reserve_attempt(
                &format!("mail\u{0}{kind}\u{0}{email}\u{0}{network}"),
                now_s,
                MAILS_PER_ADDRESS_AND_NETWORK,
                MAIL_WINDOW_S,
            )
            .await?;
        if let Attempt::Throttled { .. } = pair {
            return Ok(pair);
        }
        self.reserve_attempt(
            &format!("mail\u{0}{kind}\u{0}{email}"),
            now_s,
            MAILS_PER_ADDRESS,
            MAIL_WINDOW_S,
        )
        .await
    }

    /// Replaces the password hash of `email` (rehash on login) if it is still `old_hash`, the
    /// one just verified: a password changed or reset meanwhile is never overwritten with the
    /// old password. Not replacing it is not an error.
    async fn update_hash(
        &self,
        email: &str,
        old_hash: &str,
        password_hash: &str,
    ) -> Result<(), StoreError>;

    /// Erases the account of `user_id` and every item keyed to it, which ends all of its
    /// sessions; `Ok(false)` if there was none.
    async fn erase(&self, user_id: &str) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::deliverable_domain;

    #[test]
    fn given_addresses_when_checking_the_domain_then_only_deliverable_looking_ones_pass() {
        for ok in [
            "alice@example.com",
            "alice+news@example.com",
            "a.b@mail.eu.example.org",
            "x@xn--bcher-kva.example.com",
            "x@sub-domain.example.io",
            "X@EXAMPLE.COM",
        ] {
            assert!(deliverable_domain(ok), "{ok}");
        }
        for bad in [
            "a@b",
            "a@localhost",
            "a@b.c0m",
            "a@1.2.3.4",
            "a@example.c",
            "a@-example.com",
            "a@example-.com",
            "a@exa_mple.com",
            "a@example..com",
            "a@.example.com",
            "a@example.com.",
            "a@bücher.example",
            "no-at-sign",
            "a@example.xn--p1ai",
        ] {
            assert!(!deliverable_domain(bad), "{bad}");
        }
        let long_label = format!("a@{}.com", "l".repeat(64));
        assert!(!deliverable_domain(&long_label));
        assert!(deliverable_domain(&format!("a@{}.com", "l".repeat(63))));
    }
}

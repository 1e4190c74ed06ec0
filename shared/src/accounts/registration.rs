//! Registrations that become accounts only once their mailbox is proven.
//!
//! Registering never creates an account: [`register`] stores a *pending registration* (the
//! normalised email, optional name and the Argon2id hash of the chosen password) under a
//! one-time verification token, or, when the email already has a verified account, issues a
//! reset token for that account instead, so the caller mails "you already have an account"
//! and answers exactly as for a new email. Many pending registrations of one email coexist, so
//! an attacker's earlier registration never blocks the owner's.
//!
//! [`verify`] consumes the token (atomically, once), then checks the password against the
//! pending registration's hash, and only then creates the account: a person who clicks a link
//! from a registration they did not make, without its password, gets nothing (and the link is
//! spent). Until then the email has no account: login answers exactly as for an unknown email.

use super::tokens::{self, Grant, OneTimeToken, PendingRegistration, Purpose, ResetGrant};
use super::{UserRecord, UserStore, password};
use crate::ratelimit::StoreError;

/// What a registration led to, and so which mail to send (both answer the client alike).
#[derive(Debug)]
pub enum Registration {
    /// A new pending registration: mail the verification link with this token.
    Pending(OneTimeToken),
    /// The email already has a verified account: mail "you already have an account" with a
    /// reset link carrying this token (bound to that account).
    Existing(OneTimeToken),
}

/// Records `pending` at `now_s`: one read of the email's account, then one token write. The
/// caller hashes the password first in either case, so both paths cost the same.
pub async fn register(
    users: &dyn UserStore,
    tokens: &dyn tokens::TokenStore,
    pending: PendingRegistration,
    now_s: u64,
) -> Result<Registration, StoreError> {
    let (existing, _) = users.lookup(&pending.email).await?;
    match existing {
        Some(user) => {
            let grant = Grant::Reset(ResetGrant {
                user_id: user.user_id,
                email: user.email,
            });
            Ok(Registration::Existing(
                tokens::issue(tokens, &grant, now_s).await?,
            ))
        }
        None => Ok(Registration::Pending(
            tokens::issue(tokens, &Grant::Verify(pending), now_s).await?,
        )),
    }
}

/// The outcome of a verification.
#[derive(Debug)]
pub enum Verification {
    /// The mailbox and the password are proven: this account now exists.
    Created(UserRecord),
    /// Token and password were right, but the email already has a verified account (another
    /// registration was verified first); nothing was created.
    AlreadyVerified,
    /// The token is unknown, spent, expired or not a verification token, or the password is
    /// not the registration's: nothing was created.
    Refused,
}

/// Verifies the registration of `token` with `password` at `now_s`, creating the account with
/// the new id `user_id` when both are right. The token is spent whatever the password. Runs
/// one Argon2 verification in every case, so a refused token takes as long as a wrong password.
pub async fn verify(
    users: &dyn UserStore,
    tokens: &dyn tokens::TokenStore,
    token: &str,
    password: &str,
    user_id: String,
    now_s: u64,
) -> Result<Verification, StoreError> {
    let pending = match tokens.consume(token, Purpose::Verify, now_s).await? {
        Some(Grant::Verify(p)) => Some(p),
        _ => None,
    };
    let proven = password::verify(password, pending.as_ref().map(|p| p.password_hash.as_str()));
    let Some(pending) = pending.filter(|_| proven) else {
        return Ok(Verification::Refused);
    };
    let user = UserRecord {
        user_id,
        email: pending.email,
        password_hash: pending.password_hash,
        name: pending.name,
        created_at: now_s,
        email_verified_at: now_s,
        session_gen: 0,
    };
    if users.create(&user).await? {
        Ok(Verification::Created(user))
    } else {
        Ok(Verification::AlreadyVerified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::memory::MemoryUserStore;
    use crate::accounts::tokens::memory::MemoryTokenStore;
    use crate::accounts::tokens::{Grant, TokenStore};

    const OWNER_PW: &str = "violet quasar mangrove tundra 71";
    const ATTACKER_PW: &str = "attacker chosen passphrase 0042";

    fn pending(pw: &str) -> PendingRegistration {
        PendingRegistration {
            email: "ada@example.com".into(),
            name: None,
            password_hash: password::hash(pw).expect("hash"),
        }
    }

    fn token(r: Registration) -> OneTimeToken {
        match r {
            Registration::Pending(t) => t,
            Registration::Existing(_) => panic!("expected a pending registration"),
        }
    }

    #[tokio::test]
    async fn given_an_attackers_pending_registration_when_the_owner_registers_and_verifies_then_the_owner_gets_the_account()
     {
        let users = MemoryUserStore::new();
        let tokens = MemoryTokenStore::new();
        let attacker = token(
            register(&users, &tokens, pending(ATTACKER_PW), 100)
                .await
                .expect("register"),
        );
        let owner = token(
            register(&users, &tokens, pending(OWNER_PW), 101)
                .await
                .expect("register"),
        );
        assert!(
            users
                .lookup("ada@example.com")
                .await
                .expect("lookup")
                .0
                .is_none()
        );

        // The owner clicks the attacker's link without knowing its password: nothing.
        let v = verify(
            &users,
            &tokens,
            attacker.expose(),
            OWNER_PW,
            "u-x".into(),
            102,
        )
        .await;
        assert!(matches!(v, Ok(Verification::Refused)));
        assert!(
            users
                .lookup("ada@example.com")
                .await
                .expect("lookup")
                .0
                .is_none()
        );

        let v = verify(&users, &tokens, owner.expose(), OWNER_PW, "u-1".into(), 103).await;
        let Ok(Verification::Created(user)) = v else {
            panic!("the owner's link with the owner's password creates the account");
        };
        assert_eq!((user.email_verified_at, user.session_gen), (103, 0));
        let (found, _) = users.lookup("ada@example.com").await.expect("lookup");
        assert_eq!(found.map(|u| u.user_id).as_deref(), Some("u-1"));

        // A second use of the same link: refused.
        let again = verify(&users, &tokens, owner.expose(), OWNER_PW, "u-2".into(), 104).await;
        assert!(matches!(again, Ok(Verification::Refused)));
    }

    #[tokio::test]
    async fn given_a_verified_account_when_registering_again_then_a_reset_token_for_it_and_no_second_account()
     {
        let users = MemoryUserStore::new();
        let tokens = MemoryTokenStore::new();
        let first = token(
            register(&users, &tokens, pending(OWNER_PW), 1)
                .await
                .expect("r"),
        );
        let second = token(
            register(&users, &tokens, pending(OWNER_PW), 2)
                .await
                .expect("r"),
        );
        assert!(matches!(
            verify(&users, &tokens, first.expose(), OWNER_PW, "u-1".into(), 3).await,
            Ok(Verification::Created(_))
        ));
        assert!(matches!(
            verify(&users, &tokens, second.expose(), OWNER_PW, "u-2".into(), 4).await,
            Ok(Verification::AlreadyVerified)
        ));
        let Registration::Existing(reset) = register(&users, &tokens, pending(ATTACKER_PW), 5)
            .await
            .expect("register")
        else {
            panic!("a verified email gets the existing-account mail");
        };
        assert_eq!(
            tokens
                .consume(reset.expose(), Purpose::Reset, 6)
                .await
                .expect("consume"),
            Some(Grant::Reset(ResetGrant {
                user_id: "u-1".into(),
                email: "ada@example.com".into()
            }))
        );
    }
}

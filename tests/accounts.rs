//! Account fixtures for the functions' handler tests.

use flowbotz_security::accounts::UserRecord;

/// A verified account (mailbox proven, session generation 0) with an already computed
/// password hash.
pub fn verified_user(user_id: &str, email: &str, password_hash: &str) -> UserRecord {
    UserRecord {
        user_id: user_id.into(),
        email: email.into(),
        password_hash: password_hash.into(),
        name: None,
        created_at: 1,
        email_verified_at: 1,
        session_gen: 0,
    }
}

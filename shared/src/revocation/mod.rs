//! Sessions that end: whether a verified access token's session is still alive.
//!
//! A signature proves a token was issued, not that its session still stands. After the
//! pipeline verifies a bearer token, it asks a [`SessionStore`] (one request: the account's
//! session state and the session's denial, read together). The session has ended when:
//!
//! - the account no longer exists (erased);
//! - the session was ended on its own (logout: a denial of its `jti`, kept until the token
//!   expires);
//! - the account's sessions were ended after the token was issued: the account's *session
//!   generation* moved past the token's `gen` claim (logout everywhere, password change or
//!   reset), unless the token is the account's *keeper*, the one session a password change
//!   keeps.
//!
//! An ended session's token is refused with 401 on the very next request, on every instance.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod memory;

use async_trait::async_trait;

use crate::ratelimit::StoreError;
use crate::session::Claims;

/// Whether a token's session still stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The account exists and the token's session has not been ended.
    Active,
    /// The account is gone, or the token's session (or every session of the account issued
    /// before it) was ended.
    Ended,
}

/// Where the liveness of sessions is read.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The state of the session of `claims` (one request).
    async fn check(&self, claims: &Claims) -> Result<SessionState, StoreError>;
}

/// The session state of an existing account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountSessions {
    /// The account's session generation (0 when never bumped).
    pub session_gen: u64,
    /// The `jti` of the one session a password change kept, if any.
    pub session_keep: Option<String>,
}

/// The state of the session of `claims`, for an account that exists (`Some`) or not (`None`),
/// and whether the session's own denial exists (`denied`): active iff the account exists, the
/// session was not ended on its own, and the token carries the account's generation or is
/// its keeper (an older generation's token whose `jti` the account names).
pub fn state(account: Option<&AccountSessions>, denied: bool, claims: &Claims) -> SessionState {
    let alive = match account {
        Some(a) if !denied => {
            claims.generation == a.session_gen
                || (claims.generation < a.session_gen
                    && a.session_keep.as_deref() == Some(claims.jti.as_str()))
        }
        _ => false,
    };
    if alive {
        SessionState::Active
    } else {
        SessionState::Ended
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::Method;
    use lambda_http::{Body, Request};

    use super::memory::MemorySessions;
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;

    use crate::pipeline::{Ctx, Endpoint, Handler, HandlerResult, Pipeline, json};
    use crate::session::Sessions;

    const ENDPOINT: Endpoint = crate::catalogue::EndpointId::CsrfToken.endpoint();

    struct Ok200;

    impl Handler for Ok200 {
        async fn handle(&self, _req: Request, _ctx: &mut Ctx) -> HandlerResult {
            Ok(json(http::StatusCode::OK, &serde_json::json!({})))
        }
    }

    #[derive(Debug)]
    struct Down;

    #[async_trait]
    impl SessionStore for Down {
        async fn check(&self, _claims: &Claims) -> Result<SessionState, StoreError> {
            Err(StoreError::Timeout)
        }
    }

    fn setup(store: Arc<dyn SessionStore>) -> (Pipeline, Sessions, ManualClock) {
        let config = Arc::new(
            Config::from_lookup(|k| match k {
                "ENVIRONMENT" => Some("development".into()),
                "JWT_SECRET_KEY" | "CSRF_SECRET_KEY" => {
                    Some("revocation-test-key-0123456789abcdef".into())
                }
                _ => None,
            })
            .expect("config"),
        );
        let clock = ManualClock::at_ms(1_900_000_000_000);
        let sessions = Sessions::new(&config, Arc::new(clock.clone())).expect("sessions");
        let pipeline = Pipeline::new(ENDPOINT, config)
            .with_sessions(sessions.clone())
            .with_session_store(store);
        (pipeline, sessions, clock)
    }

    fn get(token: &str) -> Request {
        http::Request::builder()
            .method(Method::GET)
            .uri("/api/auth/csrf-token")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::Empty)
            .expect("request")
    }

    #[tokio::test]
    async fn given_an_erased_account_or_ended_sessions_when_its_token_is_used_then_401() {
        let store = Arc::new(MemorySessions::new());
        let (pipeline, sessions, clock) = setup(store.clone());
        let token = sessions
            .issue_access_token("alice", 0)
            .expect("token")
            .token;
        store.set("alice", 0, None);
        assert_eq!(pipeline.serve(get(&token), &Ok200).await.status(), 200);

        // Every session of an older generation ends (logout-all, a password change or reset).
        store.set("alice", 1, None);
        assert_eq!(pipeline.serve(get(&token), &Ok200).await.status(), 401);
        clock.advance_ms(2000);
        let later = sessions
            .issue_access_token("alice", 1)
            .expect("token")
            .token;
        assert_eq!(pipeline.serve(get(&later), &Ok200).await.status(), 200);

        // Erasure: no account, no session.
        store.remove("alice");
        assert_eq!(pipeline.serve(get(&later), &Ok200).await.status(), 401);
    }

    #[tokio::test]
    async fn given_a_logout_when_its_token_is_used_then_401_and_other_sessions_stand() {
        let store = Arc::new(MemorySessions::new());
        let (pipeline, sessions, _) = setup(store.clone());
        store.set("alice", 3, None);
        let (one, one_claims) = sessions.issue_session("alice", 3).expect("token");
        let two = sessions
            .issue_access_token("alice", 3)
            .expect("token")
            .token;
        store.deny(&one_claims.jti);
        assert_eq!(pipeline.serve(get(&one.token), &Ok200).await.status(), 401);
        assert_eq!(pipeline.serve(get(&two), &Ok200).await.status(), 200);
    }

    #[tokio::test]
    async fn given_a_password_change_when_tokens_are_used_then_only_the_keeper_stands() {
        let store = Arc::new(MemorySessions::new());
        let (pipeline, sessions, _) = setup(store.clone());
        let (mine, me) = sessions.issue_session("alice", 4).expect("token");
        let other = sessions
            .issue_access_token("alice", 4)
            .expect("token")
            .token;
        store.set("alice", 5, Some(&me.jti));
        assert_eq!(pipeline.serve(get(&mine.token), &Ok200).await.status(), 200);
        assert_eq!(pipeline.serve(get(&other), &Ok200).await.status(), 401);
        // A second change from the same session keeps it again.
        store.set("alice", 6, Some(&me.jti));
        assert_eq!(pipeline.serve(get(&mine.token), &Ok200).await.status(), 200);
        // Logout everywhere drops the keeper.
        store.set("alice", 7, None);
        assert_eq!(pipeline.serve(get(&mine.token), &Ok200).await.status(), 401);
    }

    fn claims(generation: u64, jti: &str) -> Claims {
        Claims {
            sub: "u".into(),
            iat: 1,
            nbf: 1,
            exp: 2,
            iss: "i".into(),
            aud: "a".into(),
            jti: jti.into(),
            generation,
        }
    }

    #[test]
    fn given_generations_and_keepers_then_the_state_follows_the_rule() {
        let acct = |g: u64, keep: Option<&str>| AccountSessions {
            session_gen: g,
            session_keep: keep.map(str::to_string),
        };
        use SessionState::{Active, Ended};
        assert_eq!(state(Some(&acct(2, None)), false, &claims(2, "j")), Active);
        assert_eq!(state(Some(&acct(2, None)), true, &claims(2, "j")), Ended);
        assert_eq!(state(None, false, &claims(0, "j")), Ended);
        assert_eq!(state(Some(&acct(2, None)), false, &claims(1, "j")), Ended);
        assert_eq!(state(Some(&acct(2, None)), false, &claims(3, "j")), Ended);
        assert_eq!(
            state(Some(&acct(2, Some("j"))), false, &claims(1, "j")),
            Active
        );
        assert_eq!(
            state(Some(&acct(2, Some("j"))), true, &claims(1, "j")),
            Ended
        );
        assert_eq!(
            state(Some(&acct(2, Some("k"))), false, &claims(1, "j")),
            Ended
        );
        assert_eq!(
            state(Some(&acct(2, Some("j"))), false, &claims(3, "j")),
            Ended
        );
    }

    #[tokio::test]
    async fn given_the_session_store_down_when_a_token_is_used_then_503_never_admitted() {
        let (pipeline, sessions, _) = setup(Arc::new(Down));
        let token = sessions
            .issue_access_token("alice", 0)
            .expect("token")
            .token;
        assert_eq!(pipeline.serve(get(&token), &Ok200).await.status(), 503);
    }
}

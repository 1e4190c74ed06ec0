//! Sessions that end: whether a verified access token's session is still alive.
//!
//! A signature proves a token was issued, not that its session still stands. After the
//! pipeline verifies a bearer token, it asks a [`SessionStore`] (one read): the session ended
//! when the account no longer exists (erased) or the account's sessions were ended after the
//! token was issued (its `sessions_valid_after` instant is later than the token's `iat`). An
//! ended session's token is refused with 401 on the very next request, on every instance.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod memory;

use async_trait::async_trait;

use crate::ratelimit::StoreError;
use crate::session::Claims;

/// Whether a token's session still stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The account exists and its sessions were not ended after the token was issued.
    Active,
    /// The account is gone, or its sessions were ended after the token was issued.
    Ended,
}

/// Where the liveness of sessions is read.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The state of the session of `claims` (one read).
    async fn check(&self, claims: &Claims) -> Result<SessionState, StoreError>;
}

/// The state of a token issued at `iat` for an account that exists (`Some`, with the instant
/// its sessions are valid after) or not (`None`).
pub fn state(account: Option<u64>, iat: u64) -> SessionState {
    match account {
        Some(valid_after) if iat >= valid_after => SessionState::Active,
        _ => SessionState::Ended,
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
        let token = sessions.issue_access_token("alice").expect("token").token;
        store.set("alice", 0);
        assert_eq!(pipeline.serve(get(&token), &Ok200).await.status(), 200);

        // Every session issued before the instant ends (logout-all, a password change).
        store.set("alice", 1_900_000_001);
        assert_eq!(pipeline.serve(get(&token), &Ok200).await.status(), 401);
        clock.advance_ms(2000);
        let later = sessions.issue_access_token("alice").expect("token").token;
        assert_eq!(pipeline.serve(get(&later), &Ok200).await.status(), 200);

        // Erasure: no account, no session.
        store.remove("alice");
        assert_eq!(pipeline.serve(get(&later), &Ok200).await.status(), 401);
    }

    #[tokio::test]
    async fn given_the_session_store_down_when_a_token_is_used_then_503_never_admitted() {
        let (pipeline, sessions, _) = setup(Arc::new(Down));
        let token = sessions.issue_access_token("alice").expect("token").token;
        assert_eq!(pipeline.serve(get(&token), &Ok200).await.status(), 503);
    }
}

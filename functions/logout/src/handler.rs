use flowbotz_security::Event;
use flowbotz_security::pipeline::no_content;
use std::sync::Arc;

use flowbotz_security::accounts::UserStore;
use flowbotz_security::{ApiError, Ctx, Handler, HandlerResult};
use lambda_http::Request;

/// `POST /api/auth/logout`: ends the caller's session (its access token and, bound to it, its
/// CSRF tokens) with a denial item that lives until the token would have expired.
pub(crate) struct Logout {
    users: Arc<dyn UserStore>,
}

impl Logout {
    pub(crate) fn new(users: Arc<dyn UserStore>) -> Self {
        Self { users }
    }
}

impl Handler for Logout {
    async fn handle(&self, _req: Request, ctx: &mut Ctx) -> HandlerResult {
        let Some(session) = ctx.session.as_ref() else {
            return Err(ApiError::Unauthorized("no session"));
        };
        self.users.end_session(&session.jti, session.exp).await?;
        ctx.event = Some(Event::AuthLogout);
        Ok(no_content())
    }
}

/// `POST /api/auth/logout-all`: ends every session of the caller's account, this one included.
pub(crate) struct LogoutAll {
    users: Arc<dyn UserStore>,
}

impl LogoutAll {
    pub(crate) fn new(users: Arc<dyn UserStore>) -> Self {
        Self { users }
    }
}

impl Handler for LogoutAll {
    async fn handle(&self, _req: Request, ctx: &mut Ctx) -> HandlerResult {
        let Some(user_id) = ctx.user_id.as_deref() else {
            return Err(ApiError::Unauthorized("no session"));
        };
        if !self.users.end_all_sessions(user_id).await? {
            return Err(ApiError::Unauthorized("account gone"));
        }
        ctx.event = Some(Event::AuthLogoutAll);
        Ok(no_content())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowbotz_security::accounts::memory::MemoryUserStore;
    use flowbotz_security::accounts::password;
    use flowbotz_security::clock::{Clock, ManualClock};
    use flowbotz_security::session::Sessions;
    use flowbotz_security::{Config, EndpointId, Pipeline};
    use flowbotz_tests::events::{Event, Shape};

    struct Setup {
        logout: Pipeline,
        logout_all: Pipeline,
        users: Arc<MemoryUserStore>,
        sessions: Sessions,
    }

    async fn setup() -> Setup {
        let config = Arc::new(
            Config::from_lookup(|k| match k {
                "ENVIRONMENT" => Some("development".into()),
                "JWT_SECRET_KEY" | "CSRF_SECRET_KEY" => {
                    Some("logout-test-key-0123456789abcdef".into())
                }
                _ => None,
            })
            .expect("config"),
        );
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_ms(1_900_000_000_000));
        let users = Arc::new(MemoryUserStore::new());
        users
            .create(&flowbotz_tests::accounts::verified_user(
                "u-ada",
                "ada@example.com",
                &password::hash("violet quasar mangrove tundra 71").expect("hash"),
            ))
            .await
            .expect("create");
        let sessions = Sessions::new(&config, clock).expect("sessions");
        let pipeline = |id: EndpointId| {
            Pipeline::new(id.endpoint(), config.clone())
                .with_sessions(sessions.clone())
                .with_session_store(users.clone())
        };
        Setup {
            logout: pipeline(EndpointId::Logout),
            logout_all: pipeline(EndpointId::LogoutAll),
            users,
            sessions,
        }
    }

    fn post(route: &str, token: &str, csrf: &str) -> lambda_http::Request {
        Event::new(Shape::RestV1, "POST", route)
            .header("authorization", &format!("Bearer {token}"))
            .header("x-csrf-token", csrf)
            .request()
    }

    #[tokio::test]
    async fn given_a_session_when_logging_out_then_204_and_that_session_alone_ends() {
        let s = setup().await;
        let (mine, claims) = s.sessions.issue_session("u-ada", 0).expect("session");
        let (other, other_claims) = s.sessions.issue_session("u-ada", 0).expect("session");
        let csrf = s.sessions.issue_csrf(&claims).token;
        let h = Logout::new(s.users.clone());
        let route = EndpointId::Logout.endpoint().route;
        assert_eq!(
            s.logout
                .serve(post(route, &mine.token, &csrf), &h)
                .await
                .status(),
            204
        );
        // The very next request with the same tokens: 401.
        assert_eq!(
            s.logout
                .serve(post(route, &mine.token, &csrf), &h)
                .await
                .status(),
            401
        );
        let other_csrf = s.sessions.issue_csrf(&other_claims).token;
        assert_eq!(
            s.logout
                .serve(post(route, &other.token, &other_csrf), &h)
                .await
                .status(),
            204,
            "another session is untouched"
        );
    }

    #[tokio::test]
    async fn given_two_sessions_when_logging_out_everywhere_then_both_end() {
        let s = setup().await;
        let (mine, claims) = s.sessions.issue_session("u-ada", 0).expect("session");
        let (other, other_claims) = s.sessions.issue_session("u-ada", 0).expect("session");
        let csrf = s.sessions.issue_csrf(&claims).token;
        let all = LogoutAll::new(s.users.clone());
        let route = EndpointId::LogoutAll.endpoint().route;
        assert_eq!(
            s.logout_all
                .serve(post(route, &mine.token, &csrf), &all)
                .await
                .status(),
            204
        );
        let other_csrf = s.sessions.issue_csrf(&other_claims).token;
        for (token, csrf) in [(&mine.token, &csrf), (&other.token, &other_csrf)] {
            assert_eq!(
                s.logout_all
                    .serve(post(route, token, csrf), &all)
                    .await
                    .status(),
                401
            );
        }
    }

    #[tokio::test]
    async fn given_no_csrf_token_when_logging_out_then_403_and_the_session_stands() {
        let s = setup().await;
        let (mine, claims) = s.sessions.issue_session("u-ada", 0).expect("session");
        let h = Logout::new(s.users.clone());
        let route = EndpointId::Logout.endpoint().route;
        let e = Event::new(Shape::RestV1, "POST", route)
            .header("authorization", &format!("Bearer {}", mine.token))
            .request();
        assert_eq!(s.logout.serve(e, &h).await.status(), 403);
        use flowbotz_security::revocation::{SessionState, SessionStore};
        assert_eq!(
            s.users.check(&claims).await.expect("check"),
            SessionState::Active
        );
    }
}

use flowbotz_security::Event;
use flowbotz_security::pipeline::no_content;
use std::sync::Arc;

use flowbotz_security::accounts::UserStore;
use flowbotz_security::accounts::registration::{self, Verification};
use flowbotz_security::accounts::tokens::{TokenStore, well_formed};
use flowbotz_security::clock::Clock;
use flowbotz_security::pipeline::body_bytes;
use flowbotz_security::{
    ApiError, Ctx, Endpoint, EndpointId, FieldError, Handler, HandlerResult, validate,
};
use lambda_http::Request;
use serde::Deserialize;

pub(crate) const ENDPOINT: Endpoint = EndpointId::VerifyEmail.endpoint();

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    token: String,
    password: String,
}

pub(crate) struct VerifyEmail {
    users: Arc<dyn UserStore>,
    tokens: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
}

impl VerifyEmail {
    pub(crate) fn new(
        users: Arc<dyn UserStore>,
        tokens: Arc<dyn TokenStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            tokens,
            clock,
        }
    }
}

impl Handler for VerifyEmail {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
        let body: VerifyRequest = validate::parse(body_bytes(&req))?;
        let mut errors = Vec::new();
        if !well_formed(&body.token) {
            errors.push(FieldError::new(
                "token",
                "must be the 43-character token of the mailed link",
            ));
        }
        if body.password.is_empty() || body.password.chars().count() > 128 {
            errors.push(FieldError::new("password", "must be 1 to 128 characters"));
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let outcome = registration::verify(
            self.users.as_ref(),
            self.tokens.as_ref(),
            &body.token,
            &body.password,
            uuid::Uuid::new_v4().to_string(),
            self.clock.now_s(),
        )
        .await?;
        match outcome {
            Verification::Created(user) => {
                ctx.user_id = Some(user.user_id);
                ctx.event = Some(Event::AuthEmailVerified);
                Ok(no_content())
            }
            Verification::AlreadyVerified => Err(ApiError::AccountExists),
            Verification::Refused => Err(ApiError::InvalidLink),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowbotz_security::accounts::memory::MemoryUserStore;
    use flowbotz_security::accounts::password;
    use flowbotz_security::accounts::registration::{Registration, register};
    use flowbotz_security::accounts::tokens::PendingRegistration;
    use flowbotz_security::accounts::tokens::memory::MemoryTokenStore;
    use flowbotz_security::clock::ManualClock;
    use flowbotz_security::{Config, Pipeline};
    use flowbotz_tests::events::{Event, Shape};
    use lambda_http::{Body, Response};
    use serde_json::{Value, json};

    const OWNER: &str = "violet quasar mangrove tundra 71";

    struct Setup {
        pipeline: Pipeline,
        handler: VerifyEmail,
        users: Arc<MemoryUserStore>,
        tokens: Arc<MemoryTokenStore>,
        clock: ManualClock,
    }

    fn setup() -> Setup {
        let config = Arc::new(
            Config::from_lookup(|k| (k == "ENVIRONMENT").then(|| "development".into()))
                .expect("config"),
        );
        let users = Arc::new(MemoryUserStore::new());
        let tokens = Arc::new(MemoryTokenStore::new());
        let clock = ManualClock::at_ms(1_900_000_000_000);
        Setup {
            pipeline: Pipeline::new(ENDPOINT, config),
            handler: VerifyEmail::new(users.clone(), tokens.clone(), Arc::new(clock.clone())),
            users,
            tokens,
            clock,
        }
    }

    async fn pending(s: &Setup, pw: &str) -> String {
        let p = PendingRegistration {
            email: "ada@example.com".into(),
            name: None,
            password_hash: password::hash(pw).expect("hash"),
        };
        match register(s.users.as_ref(), s.tokens.as_ref(), p, s.clock.now_s())
            .await
            .expect("register")
        {
            Registration::Pending(t) => t.expose().to_string(),
            Registration::Existing(_) => panic!("no account yet"),
        }
    }

    async fn verify(s: &Setup, body: Value) -> Response<Body> {
        let e = Event::new(Shape::RestV1, "POST", ENDPOINT.route).json_body(&body);
        s.pipeline.serve(e.request(), &s.handler).await
    }

    fn problem(resp: &Response<Body>) -> Value {
        match resp.body() {
            Body::Text(t) => serde_json::from_str(t).expect("json"),
            _ => Value::Null,
        }
    }

    #[tokio::test]
    async fn given_the_link_and_the_registrations_password_when_verifying_then_the_account_exists()
    {
        let s = setup();
        let token = pending(&s, OWNER).await;
        let resp = verify(&s, json!({"token": token, "password": OWNER})).await;
        assert_eq!(resp.status(), 204);
        let (user, _) = s.users.lookup("ada@example.com").await.expect("lookup");
        assert!(user.is_some_and(|u| password::verify(OWNER, Some(&u.password_hash))));
        // Single use: the same link again is refused.
        let again = verify(&s, json!({"token": token, "password": OWNER})).await;
        assert_eq!(again.status(), 400);
        assert_eq!(problem(&again)["type"], "/problems/invalid-link");
    }

    #[tokio::test]
    async fn given_someone_elses_registration_link_when_verifying_with_another_password_then_nothing_is_created()
     {
        let s = setup();
        // An attacker registered the owner's email; the owner clicks that link with their own
        // password: no account, and the attacker's password never becomes the owner's.
        let token = pending(&s, "attacker chosen passphrase 0042").await;
        let resp = verify(&s, json!({"token": token, "password": OWNER})).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(problem(&resp)["type"], "/problems/invalid-link");
        assert!(
            s.users
                .lookup("ada@example.com")
                .await
                .expect("lookup")
                .0
                .is_none()
        );
    }

    #[tokio::test]
    async fn given_an_expired_link_when_verifying_then_refused() {
        let s = setup();
        let token = pending(&s, OWNER).await;
        s.clock.advance_ms(24 * 3600 * 1000 + 1000);
        let resp = verify(&s, json!({"token": token, "password": OWNER})).await;
        assert_eq!(problem(&resp)["type"], "/problems/invalid-link");
    }

    #[tokio::test]
    async fn given_two_registrations_verified_when_the_second_is_used_then_409_and_no_second_account()
     {
        let s = setup();
        let first = pending(&s, OWNER).await;
        let second = pending(&s, "another decent passphrase 77").await;
        assert_eq!(
            verify(&s, json!({"token": first, "password": OWNER}))
                .await
                .status(),
            204
        );
        let resp = verify(
            &s,
            json!({"token": second, "password": "another decent passphrase 77"}),
        )
        .await;
        assert_eq!(resp.status(), 409);
        assert_eq!(problem(&resp)["type"], "/problems/account-exists");
        let (user, _) = s.users.lookup("ada@example.com").await.expect("lookup");
        assert!(user.is_some_and(|u| password::verify(OWNER, Some(&u.password_hash))));
    }

    #[tokio::test]
    async fn given_a_malformed_token_when_verifying_then_422_on_the_field() {
        let s = setup();
        let resp = verify(&s, json!({"token": "short", "password": OWNER})).await;
        assert_eq!(resp.status(), 422);
        assert_eq!(problem(&resp)["errors"][0]["field"], "token");
    }
}

use std::sync::Arc;

use flowbotz_security::accounts::password;
use flowbotz_security::accounts::{Attempt, UserStore, normalize_email};
use flowbotz_security::clock::Clock;
use flowbotz_security::config::LoginThrottle;
use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::session::Sessions;
use flowbotz_security::{ApiError, Ctx, Endpoint, EndpointId, Handler, HandlerResult, validate};
use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use validator::Validate;

pub(crate) const ENDPOINT: Endpoint = EndpointId::Login.endpoint();

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    #[validate(length(min = 1, max = 254, message = "must be 1 to 254 characters"))]
    email: String,
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    password: String,
    /// The device token of an earlier login to this account on this client, if it kept one.
    #[validate(length(max = 256, message = "must be at most 256 characters"))]
    device_token: Option<String>,
}

#[derive(Serialize)]
struct LoginResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    csrf_token: String,
    csrf_expires_in: u64,
    device_token: String,
}

pub(crate) struct Login {
    users: Arc<dyn UserStore>,
    sessions: Sessions,
    clock: Arc<dyn Clock>,
    throttle: LoginThrottle,
}

impl Login {
    pub(crate) fn new(
        users: Arc<dyn UserStore>,
        sessions: Sessions,
        clock: Arc<dyn Clock>,
        throttle: LoginThrottle,
    ) -> Self {
        Self {
            users,
            sessions,
            clock,
            throttle,
        }
    }
}

impl Handler for Login {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
        let body: LoginRequest = validate::json(body_bytes(&req))?;
        let email = normalize_email(&body.email);
        let now = self.clock.now_s();
        let window = self.throttle.window.as_secs();
        // The attempt is counted before the password is checked, in one conditional write, so
        // racing instances never verify more than the allowed attempts per window.
        // The account first (one read, whether or not it exists): a device token is valid only
        // at the account's current session generation.
        let (user, _) = self.users.lookup(&email).await?;
        let generation = user.as_ref().map_or(0, |u| u.session_gen);
        // A client that proves an earlier login to this account (its device token) counts its
        // failures apart, so strangers filling the account's counter cannot lock the owner out.
        let device = body
            .device_token
            .as_deref()
            .and_then(|t| self.sessions.verify_device(t, &email, generation));
        let throttle_key = match &device {
            Some(id) => format!("device\u{0}{email}\u{0}{id}"),
            None => email.clone(),
        };
        let attempt = self
            .users
            .reserve_attempt(&throttle_key, now, self.throttle.max_failures, window)
            .await?;
        if let Attempt::Throttled { retry_after } = attempt {
            return Err(ApiError::AccountThrottled { retry_after });
        }
        // One Argon2 verification whether or not the account exists.
        let verified = password::verify(
            &body.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        );
        let Some(user) = user.filter(|_| verified) else {
            return Err(ApiError::InvalidCredentials);
        };
        ctx.user_id = Some(user.user_id.clone());
        self.users.clear_failures(&throttle_key).await?;
        if password::needs_rehash(&user.password_hash) {
            let upgraded = password::hash(&body.password)?;
            if let Err(e) = self
                .users
                .update_hash(&email, &user.password_hash, &upgraded)
                .await
            {
                tracing::warn!(request_id = %ctx.request_id, cause = %e, "password rehash not stored");
            }
        }
        let (access, session) = self
            .sessions
            .issue_session(&user.user_id, user.session_gen)?;
        let csrf = self.sessions.issue_csrf(&session);
        Ok(json(
            StatusCode::OK,
            &LoginResponse {
                access_token: access.token,
                token_type: "Bearer",
                expires_in: access.expires_in,
                csrf_token: csrf.token,
                csrf_expires_in: csrf.expires_in,
                device_token: self.sessions.issue_device(&email, user.session_gen).token,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowbotz_security::accounts::UserRecord;
    use flowbotz_security::accounts::memory::MemoryUserStore;
    use flowbotz_security::clock::ManualClock;
    use flowbotz_security::{Config, Pipeline};
    use flowbotz_tests::events::{Event, SHAPES};
    use lambda_http::{Body, Response};
    use serde_json::{Value, json};

    const PASSWORD: &str = "correct horse battery staple vortex";

    async fn setup() -> (Pipeline, Login, ManualClock) {
        let config = Arc::new(
            Config::from_lookup(|k| match k {
                "ENVIRONMENT" => Some("development".into()),
                "JWT_SECRET_KEY" | "CSRF_SECRET_KEY" => {
                    Some("test-key-0123456789abcdef0123456789".into())
                }
                _ => None,
            })
            .expect("config"),
        );
        let clock = ManualClock::at_ms(1_800_000_000_000);
        let users = Arc::new(MemoryUserStore::new());
        users
            .create(&UserRecord {
                user_id: "u-1".into(),
                email: "alice@example.com".into(),
                password_hash: password::hash(PASSWORD).expect("hash"),
                name: None,
                created_at: 0,
                email_verified_at: 0,
                session_gen: 0,
            })
            .await
            .expect("create");
        let sessions = Sessions::new(&config, Arc::new(clock.clone())).expect("sessions");
        let login = Login::new(
            users,
            sessions,
            Arc::new(clock.clone()),
            config.login_throttle,
        );
        (Pipeline::new(ENDPOINT, config), login, clock)
    }

    fn body(resp: &Response<Body>) -> Value {
        match resp.body() {
            Body::Text(t) => serde_json::from_str(t).expect("json"),
            _ => Value::Null,
        }
    }

    async fn attempt(p: &Pipeline, h: &Login, email: &str, pw: &str) -> Response<Body> {
        let e = Event::new(SHAPES[0], "POST", "/api/auth/login")
            .json_body(&json!({"email": email, "password": pw}));
        p.serve(e.request(), h).await
    }

    #[tokio::test]
    async fn given_valid_credentials_when_logging_in_then_tokens_are_issued() {
        let (p, h, _) = setup().await;
        let resp = attempt(&p, &h, " ALICE@example.com", PASSWORD).await;
        assert_eq!(resp.status(), 200);
        let v = body(&resp);
        assert_eq!(v["token_type"], "Bearer");
        assert!(
            v["access_token"]
                .as_str()
                .is_some_and(|t| t.split('.').count() == 3)
        );
        assert!(
            v["csrf_token"]
                .as_str()
                .is_some_and(|t| t.starts_with("v2."))
        );
        assert_eq!(v["csrf_expires_in"], 3600);
    }

    #[tokio::test]
    async fn given_valid_credentials_when_logging_in_then_one_argon2_operation() {
        let (p, h, _) = setup().await;
        let before = password::operations();
        let resp = attempt(&p, &h, "alice@example.com", PASSWORD).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(password::operations() - before, 1, "one verification");
    }

    #[tokio::test]
    async fn given_unknown_email_or_wrong_password_when_logging_in_then_identical_401_and_same_work()
     {
        let (p, h, _) = setup().await;
        let before = password::operations();
        let wrong = attempt(&p, &h, "alice@example.com", "wrong password here").await;
        let middle = password::operations();
        let unknown = attempt(&p, &h, "nobody@example.com", "wrong password here").await;
        let after = password::operations();
        assert_eq!(
            (middle - before, after - middle),
            (1, 1),
            "one Argon2 operation on each path"
        );
        assert_eq!(wrong.status(), 401);
        assert_eq!(unknown.status(), 401);
        let (mut a, mut b) = (body(&wrong), body(&unknown));
        a["request_id"] = Value::Null;
        b["request_id"] = Value::Null;
        assert_eq!(a, b, "no account enumeration");
    }

    #[tokio::test]
    async fn given_five_failures_when_logging_in_again_then_429_until_the_window_passes() {
        let (p, h, clock) = setup().await;
        for _ in 0..5 {
            assert_eq!(
                attempt(&p, &h, "alice@example.com", "wrong password here")
                    .await
                    .status(),
                401
            );
        }
        let before = password::operations();
        let throttled = attempt(&p, &h, "alice@example.com", PASSWORD).await;
        assert_eq!(throttled.status(), 429, "even the right password waits");
        assert_eq!(
            password::operations(),
            before,
            "a throttled attempt runs no Argon2"
        );
        let retry: u64 = throttled.headers()["retry-after"]
            .to_str()
            .expect("h")
            .parse()
            .expect("n");
        assert!(retry > 0 && retry <= 900);
        for _ in 0..5 {
            attempt(&p, &h, "nobody@example.com", "wrong password here").await;
        }
        assert_eq!(
            attempt(&p, &h, "nobody@example.com", "x").await.status(),
            429,
            "unknown emails throttle alike"
        );
        clock.advance_ms(retry * 1000);
        assert_eq!(
            attempt(&p, &h, "alice@example.com", PASSWORD)
                .await
                .status(),
            200
        );
    }

    async fn attempt_with_device(
        p: &Pipeline,
        h: &Login,
        email: &str,
        pw: &str,
        device: &str,
    ) -> Response<Body> {
        let e = Event::new(SHAPES[0], "POST", "/api/auth/login")
            .json_body(&json!({"email": email, "password": pw, "device_token": device}));
        p.serve(e.request(), h).await
    }

    #[tokio::test]
    async fn given_strangers_filled_the_accounts_counter_when_the_owner_logs_in_from_a_known_device_then_200()
     {
        let (p, h, _) = setup().await;
        let first = attempt(&p, &h, "alice@example.com", PASSWORD).await;
        assert_eq!(first.status(), 200);
        let device = body(&first)["device_token"]
            .as_str()
            .expect("a device token")
            .to_string();
        // A stranger locks the account for clients without a device token.
        for _ in 0..5 {
            attempt(&p, &h, "alice@example.com", "wrong password here").await;
        }
        assert_eq!(
            attempt(&p, &h, "alice@example.com", PASSWORD)
                .await
                .status(),
            429
        );
        // The owner's device counts apart: not locked out.
        assert_eq!(
            attempt_with_device(&p, &h, "alice@example.com", PASSWORD, &device)
                .await
                .status(),
            200
        );
        // The device has its own limit of five failures.
        for _ in 0..5 {
            let r =
                attempt_with_device(&p, &h, "alice@example.com", "wrong guess 0000", &device).await;
            assert_eq!(r.status(), 401);
        }
        assert_eq!(
            attempt_with_device(&p, &h, "alice@example.com", PASSWORD, &device)
                .await
                .status(),
            429
        );
        // Another account's device token, or a forged one, counts with the account.
        let bob = attempt_with_device(&p, &h, "bob@example.com", "x", &device).await;
        assert_eq!(bob.status(), 401);
        let forged = attempt_with_device(&p, &h, "alice@example.com", PASSWORD, "d2.1.x.y").await;
        assert_eq!(forged.status(), 429);
    }

    #[tokio::test]
    async fn given_the_accounts_sessions_ended_when_an_old_device_token_is_used_then_it_counts_with_the_account()
     {
        let (p, h, _) = setup().await;
        let first = attempt(&p, &h, "alice@example.com", PASSWORD).await;
        let device = body(&first)["device_token"]
            .as_str()
            .expect("a device token")
            .to_string();
        // A reset, a password change or logout everywhere ends the device tokens too: someone
        // who once had the password keeps no extra guesses after the owner takes it back.
        assert!(h.users.end_all_sessions("u-1").await.expect("end"));
        for _ in 0..5 {
            attempt(&p, &h, "alice@example.com", "wrong password here").await;
        }
        assert_eq!(
            attempt_with_device(&p, &h, "alice@example.com", "another guess 1", &device)
                .await
                .status(),
            429
        );
    }

    #[tokio::test]
    async fn given_a_password_changed_after_verification_when_the_login_rehashes_then_the_new_password_stays()
     {
        let (_, h, _) = setup().await;
        let (user, _) = h.users.lookup("alice@example.com").await.expect("lookup");
        let old = user.expect("account").password_hash;
        let newer = password::hash("a brand new passphrase 2024").expect("hash");
        assert!(
            h.users
                .set_password(
                    "u-1",
                    "alice@example.com",
                    &newer,
                    flowbotz_security::accounts::EndSessions::All
                )
                .await
                .expect("set")
        );
        // A login that verified the old hash before the change now rehashes it: refused.
        h.users
            .update_hash("alice@example.com", &old, "$argon2id$stale")
            .await
            .expect("no error");
        let (user, _) = h.users.lookup("alice@example.com").await.expect("lookup");
        assert_eq!(user.expect("account").password_hash, newer);
    }

    #[tokio::test]
    async fn given_a_success_when_failures_were_counted_then_they_are_cleared() {
        let (p, h, _) = setup().await;
        for _ in 0..4 {
            attempt(&p, &h, "alice@example.com", "wrong password here").await;
        }
        assert_eq!(
            attempt(&p, &h, "alice@example.com", PASSWORD)
                .await
                .status(),
            200
        );
        for _ in 0..4 {
            attempt(&p, &h, "alice@example.com", "wrong password here").await;
        }
        assert_eq!(
            attempt(&p, &h, "alice@example.com", PASSWORD)
                .await
                .status(),
            200
        );
    }

    /// A PHC string of `pw` with parameters weaker than the current ones.
    fn weak_hash(pw: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
        let params = argon2::Params::new(8 * 1024, 1, 1, None).expect("params");
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(pw.as_bytes(), &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string()
    }

    #[tokio::test]
    async fn given_a_weaker_stored_hash_when_logging_in_then_it_is_replaced_by_a_current_one() {
        let (p, h, _) = setup().await;
        let weak = weak_hash(PASSWORD);
        assert!(password::needs_rehash(&weak));
        let (user, _) = h.users.lookup("alice@example.com").await.expect("lookup");
        h.users
            .update_hash(
                "alice@example.com",
                &user.expect("account").password_hash,
                &weak,
            )
            .await
            .expect("store");
        let stored = async || {
            h.users
                .lookup("alice@example.com")
                .await
                .expect("lookup")
                .0
                .expect("user")
                .password_hash
        };

        // A failed login changes nothing.
        let resp = attempt(&p, &h, "alice@example.com", "wrong password entirely").await;
        assert_eq!(resp.status(), 401);
        assert_eq!(stored().await, weak);

        let resp = attempt(&p, &h, "alice@example.com", PASSWORD).await;
        assert_eq!(resp.status(), 200);
        let upgraded = stored().await;
        assert_ne!(upgraded, weak, "the weaker hash was replaced");
        assert!(!password::needs_rehash(&upgraded), "{upgraded}");
        assert!(password::verify(PASSWORD, Some(&upgraded)));

        // A current hash is kept as it is.
        let resp = attempt(&p, &h, "alice@example.com", PASSWORD).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(stored().await, upgraded);
    }
}

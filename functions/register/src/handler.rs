use std::sync::Arc;

use flowbotz_security::accounts::password;
use flowbotz_security::accounts::{UserRecord, UserStore, deliverable_domain, normalize_email};
use flowbotz_security::clock::Clock;
use flowbotz_security::config::PasswordPolicy;
use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::{ApiError, Ctx, Endpoint, EndpointId, Handler, HandlerResult, validate};
use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;
use validator::{Validate, ValidationError};

pub(crate) const ENDPOINT: Endpoint = EndpointId::Register.endpoint();

/// The one answer to every well-formed registration, new email or not.
pub(crate) const ACCEPTED: &str =
    "If this email can be registered, the account is ready. Sign in to continue.";

fn ascii_email(email: &str) -> Result<(), ValidationError> {
    if !email.is_ascii() {
        Err(ValidationError::new("ascii").with_message(
            "must be an ASCII address (use punycode for international domains)".into(),
        ))
    } else if !deliverable_domain(email) {
        Err(ValidationError::new("domain").with_message(
            "must have a deliverable domain (a dot and a valid top-level label)".into(),
        ))
    } else {
        Ok(())
    }
}

fn no_control(name: &str) -> Result<(), ValidationError> {
    if name.chars().any(char::is_control) {
        Err(ValidationError::new("control")
            .with_message("must not contain control characters".into()))
    } else if name.trim().is_empty() {
        Err(ValidationError::new("blank").with_message("must not be blank".into()))
    } else {
        Ok(())
    }
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    #[validate(
        email(message = "must be a valid email address"),
        length(max = 254, message = "must be at most 254 characters"),
        custom(function = "ascii_email")
    )]
    email: String,
    password: String,
    #[validate(
        length(min = 1, max = 100, message = "must be 1 to 100 characters"),
        custom(function = "no_control")
    )]
    name: Option<String>,
}

pub(crate) struct Register {
    users: Arc<dyn UserStore>,
    clock: Arc<dyn Clock>,
    policy: PasswordPolicy,
}

impl Register {
    pub(crate) fn new(
        users: Arc<dyn UserStore>,
        clock: Arc<dyn Clock>,
        policy: PasswordPolicy,
    ) -> Self {
        Self {
            users,
            clock,
            policy,
        }
    }
}

impl Handler for Register {
    async fn handle(&self, req: Request, _ctx: &mut Ctx) -> HandlerResult {
        let mut body: RegisterRequest = validate::parse(body_bytes(&req))?;
        body.email = normalize_email(&body.email);
        let mut errors = match body.validate() {
            Ok(()) => Vec::new(),
            Err(e) => validate::field_errors(&e),
        };
        let email = body.email.clone();
        if let Err(ApiError::Validation(mut p)) =
            password::check_policy(&body.password, &email, &self.policy)
        {
            errors.append(&mut p);
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        // The same work for a new and a taken email: one hash, one conditional write.
        let user = UserRecord {
            user_id: uuid::Uuid::new_v4().to_string(),
            email,
            password_hash: password::hash(&body.password)?,
            name: body.name.map(|n| n.trim().to_string()),
            created_at: self.clock.now_s(),
            // Interim (issue 13): until the verify-email function exists, registration still
            // creates the account at once; it moves to `accounts::registration::register`.
            email_verified_at: self.clock.now_s(),
            session_gen: 0,
        };
        self.users
            .create(&user)
            .await
            .map_err(|e| ApiError::ServiceUnavailable {
                reason: format!("user store: {e}"),
                retry_after: 1,
            })?;
        Ok(json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "message": ACCEPTED }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowbotz_security::accounts::memory::MemoryUserStore;
    use flowbotz_security::clock::ManualClock;
    use flowbotz_security::{Config, Pipeline};
    use flowbotz_tests::events::{Event, SHAPES};
    use serde_json::json;

    fn setup() -> (Pipeline, Register, Arc<MemoryUserStore>) {
        let config = Arc::new(
            Config::from_lookup(|k| (k == "ENVIRONMENT").then(|| "development".into()))
                .expect("config"),
        );
        let users = Arc::new(MemoryUserStore::new());
        let handler = Register::new(
            users.clone(),
            Arc::new(ManualClock::at_ms(1_800_000_000_000)),
            config.password,
        );
        (Pipeline::new(ENDPOINT, config), handler, users)
    }

    #[tokio::test]
    async fn given_new_and_taken_emails_when_registering_then_same_answer_and_same_work() {
        let (p, h, users) = setup();
        for shape in SHAPES {
            let body = json!({"email": " Alice@Example.COM ", "password": "correct horse battery staple vortex", "name": "Alice"});
            let before = password::operations();
            let resp = p
                .serve(
                    Event::new(shape, "POST", "/api/auth/register")
                        .json_body(&body)
                        .request(),
                    &h,
                )
                .await;
            assert_eq!(resp.status(), 202);
            assert_eq!(
                password::operations() - before,
                1,
                "exactly one Argon2 operation"
            );
            let text = format!("{:?}", resp.body());
            assert!(text.contains("If this email can be registered"));
        }
        let (stored, _) = users.lookup("alice@example.com").await.expect("lookup");
        assert!(stored.is_some_and(|u| u.password_hash.starts_with("$argon2id$")));
    }

    #[tokio::test]
    async fn given_invalid_input_when_registering_then_422_naming_each_rule() {
        let (p, h, _) = setup();
        for (body, field, words) in [
            (
                json!({"email": "not-an-email", "password": "correct horse battery staple vortex"}),
                "email",
                "valid email",
            ),
            (
                json!({"email": "a@b.example.com", "password": "password1234"}),
                "password",
                "commonly used",
            ),
            (
                json!({"email": "bob.smith@b.example.com", "password": "bob.smith-likes-cheese-42"}),
                "password",
                "local part",
            ),
            (
                json!({"email": "a@b.example.com", "password": "aaaaaaaaaaaaaaa"}),
                "password",
                "too easy",
            ),
            (
                json!({"email": "a@b.example.com", "password": "short"}),
                "password",
                "at least 12",
            ),
            (
                json!({"email": "a@b.example.com", "password": "correct horse battery staple vortex", "name": "a\u{0007}b"}),
                "name",
                "control",
            ),
            (
                json!({"email": "\u{0430}lice@b.example.com", "password": "correct horse battery staple vortex"}),
                "email",
                "ASCII",
            ),
            (
                json!({"email": "a@b", "password": "correct horse battery staple vortex"}),
                "email",
                "deliverable domain",
            ),
            (
                json!({"email": "a@mail.c0m", "password": "correct horse battery staple vortex"}),
                "email",
                "deliverable domain",
            ),
        ] {
            let resp = p
                .serve(
                    Event::new(SHAPES[0], "POST", "/api/auth/register")
                        .json_body(&body)
                        .request(),
                    &h,
                )
                .await;
            assert_eq!(resp.status(), 422, "{body}");
            let text = match resp.body() {
                lambda_http::Body::Text(t) => t.clone(),
                _ => String::new(),
            };
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            let errors = v["errors"].as_array().expect("errors");
            assert!(
                errors.iter().any(|e| e["field"] == field
                    && e["message"].as_str().is_some_and(|m| m.contains(words))),
                "{text}"
            );
            if let Some(pw) = body["password"].as_str() {
                assert!(!text.contains(pw), "the password is never echoed");
            }
        }
        let resp = p
            .serve(
                Event::new(SHAPES[1], "POST", "/api/auth/register")
                    .json_body(&json!({"email": "a@b.example", "password": "x", "role": "admin"}))
                    .request(),
                &h,
            )
            .await;
        assert_eq!(resp.status(), 400, "unknown fields are refused");
    }
}

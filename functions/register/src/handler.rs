use std::sync::Arc;

use flowbotz_security::accounts::password;
use flowbotz_security::accounts::registration::{self, Registration};
use flowbotz_security::accounts::tokens::{PendingRegistration, TokenStore};
use flowbotz_security::accounts::{
    Attempt, MailKind, UserStore, deliverable_domain, normalize_email,
};
use flowbotz_security::clock::Clock;
use flowbotz_security::config::PasswordPolicy;
use flowbotz_security::mail::{self, Links, Mailer};
use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::{ApiError, Ctx, Endpoint, EndpointId, Handler, HandlerResult, validate};
use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;
use validator::{Validate, ValidationError};

pub(crate) const ENDPOINT: Endpoint = EndpointId::Register.endpoint();

/// The one answer to every well-formed registration, new email or not.
pub(crate) const ACCEPTED: &str =
    "Check your inbox: follow the link we sent to finish creating your account.";

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
    tokens: Arc<dyn TokenStore>,
    mailer: Arc<dyn Mailer>,
    links: Links,
    clock: Arc<dyn Clock>,
    policy: PasswordPolicy,
}

impl Register {
    pub(crate) fn new(
        users: Arc<dyn UserStore>,
        tokens: Arc<dyn TokenStore>,
        mailer: Arc<dyn Mailer>,
        links: Links,
        clock: Arc<dyn Clock>,
        policy: PasswordPolicy,
    ) -> Self {
        Self {
            users,
            tokens,
            mailer,
            links,
            clock,
            policy,
        }
    }
}

impl Handler for Register {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
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
        // The same work for a new and a taken email: one hash, one read, one token write and one
        // mail. No account exists until the mailbox owner follows the link with this password.
        let pending = PendingRegistration {
            email: email.clone(),
            name: body.name.map(|n| n.trim().to_string()),
            password_hash: password::hash(&body.password)?,
        };
        let now = self.clock.now_s();
        let cap = self
            .users
            .reserve_mail(
                MailKind::Registration,
                &email,
                &flowbotz_security::budget::network_of(&ctx.client_ip),
                now,
            )
            .await?;
        if let Attempt::Admitted(_) = cap {
            let outcome =
                registration::register(self.users.as_ref(), self.tokens.as_ref(), pending, now)
                    .await?;
            let message = match outcome {
                Registration::Pending(token) => {
                    mail::verification(&email, &self.links, token.expose())
                }
                Registration::Existing(token) => {
                    mail::existing_account(&email, &self.links, token.expose())
                }
            };
            mail::send_or_log(self.mailer.as_ref(), &message, &ctx.request_id).await;
        }
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
    use flowbotz_security::accounts::tokens::memory::MemoryTokenStore;
    use flowbotz_security::clock::ManualClock;
    use flowbotz_security::mail::memory::MemoryMailer;
    use flowbotz_security::mail::{EXISTING_SUBJECT, VERIFY_SUBJECT};
    use flowbotz_security::{Config, Pipeline};
    use flowbotz_tests::events::{Event, SHAPES};
    use serde_json::json;

    fn setup() -> (Pipeline, Register, Arc<MemoryUserStore>) {
        let (p, h, users, _) = setup_with_mail();
        (p, h, users)
    }

    fn setup_with_mail() -> (Pipeline, Register, Arc<MemoryUserStore>, Arc<MemoryMailer>) {
        let config = Arc::new(
            Config::from_lookup(|k| (k == "ENVIRONMENT").then(|| "development".into()))
                .expect("config"),
        );
        let users = Arc::new(MemoryUserStore::new());
        let mailer = Arc::new(MemoryMailer::new());
        let handler = Register::new(
            users.clone(),
            Arc::new(MemoryTokenStore::new()),
            mailer.clone(),
            Links::new("https://app.example"),
            Arc::new(ManualClock::at_ms(1_800_000_000_000)),
            config.password,
        );
        (Pipeline::new(ENDPOINT, config), handler, users, mailer)
    }

    #[tokio::test]
    async fn given_a_registration_when_accepted_then_no_account_until_verified_and_one_link_mailed()
    {
        let (p, h, users, mailer) = setup_with_mail();
        let body = json!({"email": "carol@example.com", "password": "correct horse battery staple vortex"});
        let e = Event::new(SHAPES[0], "POST", "/api/auth/register").json_body(&body);
        assert_eq!(p.serve(e.request(), &h).await.status(), 202);
        let (user, _) = users.lookup("carol@example.com").await.expect("lookup");
        assert!(user.is_none(), "an account before the mailbox is proven");
        let sent = mailer.sent_to("carol@example.com");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].subject, VERIFY_SUBJECT);
        assert!(sent[0].text.contains("https://app.example/#verify="));
    }

    #[tokio::test]
    async fn given_a_verified_account_when_its_email_registers_then_the_same_202_and_an_existing_account_mail()
     {
        let (p, h, users, mailer) = setup_with_mail();
        users
            .create(&flowbotz_tests::accounts::verified_user(
                "u-dan",
                "dan@example.com",
                &password::hash("violet quasar mangrove tundra 71").expect("hash"),
            ))
            .await
            .expect("create");
        let body =
            json!({"email": "dan@example.com", "password": "correct horse battery staple vortex"});
        let e = Event::new(SHAPES[0], "POST", "/api/auth/register").json_body(&body);
        let resp = p.serve(e.request(), &h).await;
        assert_eq!(resp.status(), 202);
        assert!(format!("{:?}", resp.body()).contains("Check your inbox"));
        let sent = mailer.sent_to("dan@example.com");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].subject, EXISTING_SUBJECT);
        assert!(sent[0].text.contains("https://app.example/#reset="));
        let (user, _) = users.lookup("dan@example.com").await.expect("lookup");
        assert!(
            user.is_some_and(|u| u.user_id == "u-dan"),
            "never a second account"
        );
    }

    #[tokio::test]
    async fn given_the_mail_service_down_when_registering_then_the_same_202() {
        let (p, h, _, mailer) = setup_with_mail();
        mailer.fail(true);
        let body =
            json!({"email": "erin@example.com", "password": "correct horse battery staple vortex"});
        let e = Event::new(SHAPES[0], "POST", "/api/auth/register").json_body(&body);
        assert_eq!(p.serve(e.request(), &h).await.status(), 202);
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
            assert!(text.contains("Check your inbox"));
        }
        let (stored, _) = users.lookup("alice@example.com").await.expect("lookup");
        assert!(stored.is_none(), "no account before verification");
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

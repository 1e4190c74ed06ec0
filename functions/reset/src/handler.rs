use flowbotz_security::Event;
use flowbotz_security::pipeline::no_content;
use std::sync::Arc;

use flowbotz_security::accounts::tokens::{
    self, Grant, Purpose, ResetGrant, TokenStore, well_formed,
};
use flowbotz_security::accounts::{
    Attempt, EndSessions, MailKind, UserStore, deliverable_domain, normalize_email, password,
};
use flowbotz_security::clock::Clock;
use flowbotz_security::config::PasswordPolicy;
use flowbotz_security::mail::{self, Links, Mailer};
use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::{ApiError, Ctx, FieldError, Handler, HandlerResult, validate};
use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;
use validator::Validate;

/// The one answer to every well-formed reset request, account or not.
pub(crate) const ACCEPTED: &str = "If this address has an account, a reset link is on its way.";

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    #[validate(
        email(message = "must be a valid email address"),
        length(max = 254, message = "must be at most 254 characters"),
        custom(function = "deliverable")
    )]
    email: String,
}

/// Mail goes only to addresses that look deliverable, as at registration: no bounces from
/// `a@localhost` to hurt the sender's reputation.
fn deliverable(email: &str) -> Result<(), validator::ValidationError> {
    if email.is_ascii() && deliverable_domain(email) {
        Ok(())
    } else {
        Err(validator::ValidationError::new("domain").with_message(
            "must be an ASCII address with a deliverable domain (a dot and a valid top-level label)"
                .into(),
        ))
    }
}

/// `POST /api/auth/password-reset`: mails a reset link to a verified account, a "no account
/// here" notice to any other address; the same 202 either way.
pub(crate) struct RequestReset {
    users: Arc<dyn UserStore>,
    tokens: Arc<dyn TokenStore>,
    mailer: Arc<dyn Mailer>,
    links: Links,
    clock: Arc<dyn Clock>,
}

impl RequestReset {
    pub(crate) fn new(
        users: Arc<dyn UserStore>,
        tokens: Arc<dyn TokenStore>,
        mailer: Arc<dyn Mailer>,
        links: Links,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            tokens,
            mailer,
            links,
            clock,
        }
    }
}

impl Handler for RequestReset {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
        let body: ResetRequest = validate::json(body_bytes(&req))?;
        let email = normalize_email(&body.email);
        let now = self.clock.now_s();
        // Counted per address whether or not it has an account, so the cap says nothing.
        let cap = self
            .users
            .reserve_mail(
                MailKind::Reset,
                &email,
                &flowbotz_security::budget::network_of(&ctx.client_ip),
                now,
            )
            .await?;
        if let Attempt::Admitted(_) = cap {
            // Both branches read the account, then send one mail.
            let (user, _) = self.users.lookup(&email).await?;
            let message = match user {
                Some(user) => {
                    let grant = Grant::Reset(ResetGrant {
                        user_id: user.user_id,
                        email: user.email,
                    });
                    let token = tokens::issue(self.tokens.as_ref(), &grant, now).await?;
                    mail::reset(&email, &self.links, token.expose())
                }
                None => mail::no_account(&email),
            };
            mail::send_or_log(self.mailer.as_ref(), &message, &ctx.request_id).await;
        }
        Ok(json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "message": ACCEPTED }),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmRequest {
    token: String,
    password: String,
}

/// `POST /api/auth/password-reset/confirm`: a new password with a reset link; every session of
/// the account ends.
pub(crate) struct ConfirmReset {
    users: Arc<dyn UserStore>,
    tokens: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    policy: PasswordPolicy,
}

impl ConfirmReset {
    pub(crate) fn new(
        users: Arc<dyn UserStore>,
        tokens: Arc<dyn TokenStore>,
        clock: Arc<dyn Clock>,
        policy: PasswordPolicy,
    ) -> Self {
        Self {
            users,
            tokens,
            clock,
            policy,
        }
    }
}

impl Handler for ConfirmReset {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
        let body: ConfirmRequest = validate::parse(body_bytes(&req))?;
        let mut errors = Vec::new();
        if !well_formed(&body.token) {
            errors.push(FieldError::new(
                "token",
                "must be the 43-character token of the mailed link",
            ));
        }
        // The policy without the address first, so a weak password keeps the link usable.
        if let Err(ApiError::Validation(mut e)) =
            password::check_policy(&body.password, "", &self.policy)
        {
            errors.append(&mut e);
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let now = self.clock.now_s();
        let grant = self
            .tokens
            .consume(&body.token, Purpose::Reset, now)
            .await?;
        let Some(Grant::Reset(grant)) = grant else {
            return Err(ApiError::InvalidLink);
        };
        // The address-specific rule (no local part in the password) once the account is known.
        password::check_policy(&body.password, &grant.email, &self.policy)?;
        let hash = password::hash(&body.password)?;
        let changed = self
            .users
            .set_password(&grant.user_id, &grant.email, &hash, EndSessions::All)
            .await?;
        if !changed {
            // Erased since the link was mailed.
            return Err(ApiError::InvalidLink);
        }
        ctx.user_id = Some(grant.user_id);
        ctx.event = Some(Event::AuthPasswordReset);
        Ok(no_content())
    }
}

#[cfg(test)]
mod tests;

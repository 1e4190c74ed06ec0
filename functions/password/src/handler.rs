use flowbotz_security::Event;
use flowbotz_security::pipeline::no_content;
use std::sync::Arc;

use flowbotz_security::accounts::{Attempt, EndSessions, UserStore, password};
use flowbotz_security::clock::Clock;
use flowbotz_security::config::{LoginThrottle, PasswordPolicy};
use flowbotz_security::pipeline::body_bytes;
use flowbotz_security::{
    ApiError, Ctx, Endpoint, EndpointId, FieldError, Handler, HandlerResult, validate,
};
use lambda_http::Request;
use serde::Deserialize;

pub(crate) const ENDPOINT: Endpoint = EndpointId::ChangePassword.endpoint();

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    current_password: String,
    new_password: String,
}

pub(crate) struct ChangePassword {
    users: Arc<dyn UserStore>,
    clock: Arc<dyn Clock>,
    throttle: LoginThrottle,
    policy: PasswordPolicy,
}

/// The policy's field errors, named after `field`.
fn on_field(err: ApiError, field: &str) -> ApiError {
    match err {
        ApiError::Validation(errors) => ApiError::Validation(
            errors
                .into_iter()
                .map(|e| FieldError::new(field, e.message))
                .collect(),
        ),
        other => other,
    }
}

impl ChangePassword {
    pub(crate) fn new(
        users: Arc<dyn UserStore>,
        clock: Arc<dyn Clock>,
        throttle: LoginThrottle,
        policy: PasswordPolicy,
    ) -> Self {
        Self {
            users,
            clock,
            throttle,
            policy,
        }
    }
}

impl Handler for ChangePassword {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
        let body: ChangeRequest = validate::parse(body_bytes(&req))?;
        let current_len = body.current_password.chars().count();
        if current_len == 0 || current_len > 128 {
            return Err(ApiError::Validation(vec![FieldError::new(
                "current_password",
                "must be 1 to 128 characters",
            )]));
        }
        let (Some(user_id), Some(session)) = (ctx.user_id.clone(), ctx.session.clone()) else {
            return Err(ApiError::Unauthorized("no session"));
        };
        let Some(user) = self.users.find(&user_id).await? else {
            return Err(ApiError::Unauthorized("account gone"));
        };
        // A new password the policy refuses is refused before anything counts as an attempt.
        password::check_policy(&body.new_password, &user.email, &self.policy)
            .map_err(|e| on_field(e, "new_password"))?;
        // A guess at the current password is a login attempt: the same atomic throttle,
        // reserved before Argon2 runs.
        let attempt = self
            .users
            .reserve_attempt(
                &user.email,
                self.clock.now_s(),
                self.throttle.max_failures,
                self.throttle.window.as_secs(),
            )
            .await?;
        if let Attempt::Throttled { retry_after } = attempt {
            return Err(ApiError::AccountThrottled { retry_after });
        }
        if !password::verify(&body.current_password, Some(&user.password_hash)) {
            ctx.event = Some(Event::AuthFailure);
            return Err(ApiError::Validation(vec![FieldError::new(
                "current_password",
                "is not the account's password",
            )]));
        }
        let hash = password::hash(&body.new_password)?;
        let changed = self
            .users
            .set_password(
                &user.user_id,
                &user.email,
                &hash,
                EndSessions::AllExcept {
                    jti: session.jti,
                    generation: session.generation,
                    verified_hash: user.password_hash.clone(),
                },
            )
            .await?;
        if !changed {
            return Err(ApiError::Unauthorized("account gone"));
        }
        ctx.event = Some(Event::AuthPasswordChanged);
        Ok(no_content())
    }
}

#[cfg(test)]
mod tests;

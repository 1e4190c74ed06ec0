use std::sync::Arc;

use flowbotz_security::accounts::UserStore;
use flowbotz_security::guard::BodyKind;
use flowbotz_security::{ApiError, Ctx, Endpoint, Handler, HandlerResult, StoreFailure, log};
use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

pub(crate) const ENDPOINT: Endpoint = Endpoint {
    name: "account",
    route: "/api/account",
    methods: &[Method::DELETE],
    body: BodyKind::None,
    auth: true,
    csrf: true,
    per_user_limit: false,
    store_failure: StoreFailure::Closed,
    security_sensitive: true,
    ip_block: true,
};

pub(crate) struct Account {
    pub(crate) users: Arc<dyn UserStore>,
}

impl Handler for Account {
    async fn handle(&self, _req: Request, ctx: &mut Ctx) -> HandlerResult {
        let user = ctx
            .user_id
            .clone()
            .ok_or(ApiError::Unauthorized("no user"))?;
        let erased = self
            .users
            .erase(&user)
            .await
            .map_err(|e| ApiError::ServiceUnavailable {
                reason: format!("user store: {e}"),
                retry_after: 1,
            })?;
        if erased {
            ctx.event = Some("account.erased");
            log::security_event(
                "account.erased",
                &ctx.request_id,
                &ctx.client_ip,
                ENDPOINT.route,
                &format!("user_id={user}"),
            );
        }
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        Ok(resp)
    }
}

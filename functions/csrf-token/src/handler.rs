use flowbotz_security::pipeline::json;
use flowbotz_security::session::Sessions;
use flowbotz_security::{ApiError, Ctx, Endpoint, EndpointId, Handler, HandlerResult};
use http::StatusCode;
use lambda_http::Request;

pub(crate) const ENDPOINT: Endpoint = EndpointId::CsrfToken.endpoint();

pub(crate) struct CsrfToken {
    pub(crate) sessions: Sessions,
}

impl Handler for CsrfToken {
    async fn handle(&self, _req: Request, ctx: &mut Ctx) -> HandlerResult {
        let session = ctx
            .session
            .as_ref()
            .ok_or(ApiError::Unauthorized("no session"))?;
        let issued = self.sessions.issue_csrf(session);
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "csrf_token": issued.token, "expires_in": issued.expires_in }),
        ))
    }
}

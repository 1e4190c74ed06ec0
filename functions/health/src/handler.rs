use flowbotz_security::guard::BodyKind;
use flowbotz_security::pipeline::json;
use flowbotz_security::{Config, Ctx, Endpoint, Handler, HandlerResult, StoreFailure};
use http::{Method, StatusCode};
use lambda_http::Request;
use serde::Serialize;

pub(crate) const ENDPOINT: Endpoint = Endpoint {
    name: "health",
    route: "/api/health",
    methods: &[Method::GET],
    body: BodyKind::None,
    auth: false,
    csrf: false,
    per_user_limit: false,
    store_failure: StoreFailure::Open,
    security_sensitive: false,
};

#[derive(Debug, Serialize)]
struct Status<'a> {
    status: &'static str,
    environment: &'static str,
    version: &'a str,
}

pub(crate) struct Health {
    environment: &'static str,
    version: String,
}

impl Health {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            environment: config.environment.as_str(),
            version: config.version.clone(),
        }
    }
}

impl Handler for Health {
    async fn handle(&self, _req: Request, _ctx: &mut Ctx) -> HandlerResult {
        Ok(json(
            StatusCode::OK,
            &Status {
                status: "ok",
                environment: self.environment,
                version: &self.version,
            },
        ))
    }
}

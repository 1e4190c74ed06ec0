use flowbotz_security::Event;
use flowbotz_security::pipeline::json;
use flowbotz_security::{Config, Ctx, Endpoint, EndpointId, Handler, HandlerResult};
use http::StatusCode;
use lambda_http::Request;
use serde::Serialize;

pub(crate) const ENDPOINT: Endpoint = EndpointId::Health.endpoint();

/// The whole answer: liveness only. The environment and version would tell a stranger which
/// build to attack; they go to the start-up log line instead ([`Health::new`]).
#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

pub(crate) struct Health;

impl Health {
    pub(crate) fn new(config: &Config) -> Self {
        tracing::info!(
            event = Event::Startup.as_str(),
            environment = config.environment.as_str(),
            version = %config.version,
            "health function started"
        );
        Self
    }
}

impl Handler for Health {
    async fn handle(&self, _req: Request, _ctx: &mut Ctx) -> HandlerResult {
        Ok(json(StatusCode::OK, &Status { status: "ok" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowbotz_security::Pipeline;
    use flowbotz_security::clock::ManualClock;
    use flowbotz_security::ratelimit::RateLimiter;
    use flowbotz_security::ratelimit::memory::MemoryStore;
    use flowbotz_tests::events::{Event, SHAPES};
    use lambda_http::Body;
    use std::sync::Arc;

    fn setup() -> (Pipeline, Health) {
        let config = Arc::new(
            Config::from_lookup(|k| (k == "ENVIRONMENT").then(|| "development".into()))
                .expect("config"),
        );
        let limiter = RateLimiter::new(
            Arc::new(MemoryStore::new()),
            Arc::new(ManualClock::at_ms(1_800_000_000_000)),
            config.block,
            config.endpoints.keys().copied(),
            config.store_timeout,
        );
        let health = Health::new(&config);
        (
            Pipeline::new(ENDPOINT, config).with_limiter(Arc::new(limiter)),
            health,
        )
    }

    #[tokio::test]
    async fn given_rest_and_http_events_when_checking_health_then_200_with_every_header() {
        let (p, h) = setup();
        for shape in SHAPES {
            let resp = p
                .serve(Event::new(shape, "GET", "/api/health").request(), &h)
                .await;
            assert_eq!(resp.status(), 200);
            flowbotz_tests::contract::assert_contract_headers("health", |n| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
            assert_eq!(resp.headers()["ratelimit-policy"], "\"minute\";q=100;w=60");
            let Body::Text(body) = resp.body() else {
                panic!("text body")
            };
            let v: serde_json::Value = serde_json::from_str(body).expect("json");
            assert_eq!(
                v,
                serde_json::json!({"status": "ok"}),
                "nothing but liveness"
            );
        }
    }

    #[tokio::test]
    async fn given_bad_requests_when_checking_health_then_problem_json_with_headers() {
        let (p, h) = setup();
        for (shape, method, path, status) in [
            (SHAPES[0], "POST", "/api/health", 405),
            (SHAPES[1], "TRACE", "/api/health", 405),
            (SHAPES[0], "GET", "/api/health/..%2f..%2fetc%2fpasswd", 400),
            (SHAPES[1], "GET", "/api/health?x=%00", 400),
            (SHAPES[0], "GET", "/api/elsewhere", 404),
        ] {
            let resp = p.serve(Event::new(shape, method, path).request(), &h).await;
            assert_eq!(resp.status(), status, "{method} {path}");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            assert_eq!(resp.headers()["x-frame-options"], "DENY");
        }
        let big = Event::new(SHAPES[1], "GET", "/api/health").body(&"a".repeat(1024));
        assert_eq!(p.serve(big.request(), &h).await.status(), 413);
    }
}

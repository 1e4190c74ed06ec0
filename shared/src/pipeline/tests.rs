//! Behaviours of the pipeline itself: the store bound, the request id, and the level of the
//! request line.

use std::sync::Arc;
use std::time::Duration;

use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayProxyRequestContext, ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Context, Request, RequestExt};

use super::*;
use crate::catalogue::EndpointId;
use crate::clock::ManualClock;
use crate::log::CapturedLogs;
use crate::ratelimit::memory::MemoryStore;

struct Ok200;

impl Handler for Ok200 {
    async fn handle(&self, _req: Request, _ctx: &mut Ctx) -> HandlerResult {
        Ok(json(StatusCode::OK, &serde_json::json!({})))
    }
}

/// A handler whose code failed.
struct Broken;

impl Handler for Broken {
    async fn handle(&self, _req: Request, _ctx: &mut Ctx) -> HandlerResult {
        Err(ApiError::Internal("a bug".into()))
    }
}

fn config() -> Arc<Config> {
    Arc::new(
        Config::from_lookup(|k| (k == "ENVIRONMENT").then(|| "development".into()))
            .expect("config"),
    )
}

/// A pipeline for `id` over `store`, with the configuration's store bound.
fn pipeline(id: EndpointId, store: Arc<MemoryStore>) -> Pipeline {
    let config = config();
    let limiter = RateLimiter::new(
        store,
        Arc::new(ManualClock::at_ms(1_800_000_000_000)),
        config.block,
        config.endpoints.keys().copied(),
        config.store_timeout,
    );
    Pipeline::new(id.endpoint(), config).with_limiter(Arc::new(limiter))
}

fn request(method: &str, path: &str) -> Request {
    let builder = http::Request::builder().method(method).uri(path);
    if method == "POST" {
        builder
            .header("content-type", "application/json")
            .body(Body::Text("{}".into()))
    } else {
        builder.body(Body::Empty)
    }
    .expect("request")
}

fn header(resp: &Response<Body>, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

// ------------------------------------------------------------------------------------------
// The store bound: a slow store (reachable, answering late) is cut off after `store_timeout`.
// ------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn given_a_slow_store_when_serving_then_the_answer_comes_within_the_one_second_bound() {
    assert_eq!(
        config().store_timeout,
        Duration::from_secs(1),
        "the default bound"
    );
    let bound = Duration::from_secs(1);
    let margin = Duration::from_millis(50);
    for (id, status) in [
        // Fails closed: refused with 503 once the bound passes.
        (EndpointId::Login, 503),
        // Fails open: served once the bound passes.
        (EndpointId::Health, 200),
    ] {
        let store = Arc::new(MemoryStore::new());
        // Slower than the bound by far, but it would answer: not a refused connection.
        store.set_delay(Some(Duration::from_secs(30)));
        let p = pipeline(id, store);
        let method = id.endpoint().methods[0].as_str();
        let started = tokio::time::Instant::now();
        let resp = p.serve(request(method, id.endpoint().route), &Ok200).await;
        let took = started.elapsed();
        assert_eq!(resp.status(), status, "{id:?}");
        assert!(
            took >= bound && took <= bound + margin,
            "{id:?} answered after {took:?}, not within {bound:?} + {margin:?}"
        );
        if status == 503 {
            assert_eq!(header(&resp, "retry-after"), "1");
        }
    }
}

// ------------------------------------------------------------------------------------------
// The request id: API Gateway's, else the Lambda invocation's, else a new UUID; only 1 to 128
// visible ASCII characters are ever echoed.
// ------------------------------------------------------------------------------------------

fn v2(id: Option<&str>) -> RequestContext {
    let mut c = ApiGatewayV2httpRequestContext::default();
    c.request_id = id.map(str::to_string);
    RequestContext::ApiGatewayV2(c)
}

fn v1(id: Option<&str>) -> RequestContext {
    let mut c = ApiGatewayProxyRequestContext::default();
    c.request_id = id.map(str::to_string);
    RequestContext::ApiGatewayV1(c)
}

fn lambda(id: &str) -> Context {
    let mut c = Context::default();
    c.request_id = id.to_string();
    c
}

async fn echoed(gateway: Option<RequestContext>, invocation: Option<&str>) -> String {
    let mut req = request("GET", "/api/health");
    if let Some(c) = gateway {
        req = req.with_request_context(c);
    }
    if let Some(id) = invocation {
        req = req.with_lambda_context(lambda(id));
    }
    let p = Pipeline::new(EndpointId::Health.endpoint(), config());
    let resp = p.serve(req, &Ok200).await;
    assert_eq!(resp.status(), 200);
    header(&resp, "x-request-id")
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4)
}

#[tokio::test]
async fn given_ids_from_the_gateway_and_the_invocation_when_serving_then_the_gateway_id_wins() {
    for gateway in [v2(Some("gw-Abc=123")), v1(Some("gw-Abc=123"))] {
        assert_eq!(
            echoed(Some(gateway), Some("lambda-7f3e")).await,
            "gw-Abc=123"
        );
    }
    for gateway in [None, Some(v2(None)), Some(v1(None))] {
        assert_eq!(
            echoed(gateway, Some("lambda-7f3e")).await,
            "lambda-7f3e",
            "without the gateway's id, the invocation's"
        );
    }
    let first = echoed(None, None).await;
    let second = echoed(Some(v2(None)), None).await;
    assert!(is_uuid(&first) && is_uuid(&second), "{first} {second}");
    assert_ne!(first, second, "a new one for each request");
}

#[tokio::test]
async fn given_an_unfit_request_id_when_serving_then_a_new_uuid_replaces_it() {
    let longest = "a".repeat(128);
    assert_eq!(echoed(Some(v2(Some(&longest))), None).await, longest);
    for unfit in [
        String::new(),
        "a".repeat(129),
        "two words".into(),
        "line\nbreak".into(),
        "tab\there".into(),
        "caf\u{e9}".into(),
        "nul\0".into(),
        "\u{7f}".into(),
    ] {
        for invocation in [None, Some("lambda-7f3e")] {
            let id = echoed(Some(v2(Some(&unfit))), invocation).await;
            assert!(is_uuid(&id), "{unfit:?} became {id:?}");
        }
        let id = echoed(None, Some(&unfit)).await;
        assert!(is_uuid(&id), "invocation id {unfit:?} became {id:?}");
    }
}

// ------------------------------------------------------------------------------------------
// The level of the request line: ERROR for 5xx, WARN for 4xx with a security event, else INFO.
// ------------------------------------------------------------------------------------------

/// Every line logged by this test binary, through the functions' own JSON subscriber installed
/// as the global one. A global subscriber, not a per-thread one: with `set_default`, a callsite
/// first met by another test's thread can keep the interest it got there.
fn captured() -> &'static CapturedLogs {
    static LOGS: std::sync::OnceLock<CapturedLogs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        crate::log::init_with_writer("trace", logs.clone());
        logs
    })
}

/// The `request` lines of the requests whose id starts with `prefix`, in order.
fn request_lines(prefix: &str) -> Vec<serde_json::Value> {
    captured()
        .lines()
        .into_iter()
        .filter(|l| {
            l["message"] == "request"
                && l["request_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(prefix))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn given_each_outcome_when_logged_then_5xx_lines_are_error_4xx_events_warn_else_info() {
    let logs = captured();
    let slow = Arc::new(MemoryStore::new());
    slow.set_delay(Some(Duration::from_secs(30)));
    let health = Pipeline::new(EndpointId::Health.endpoint(), config());
    let login = pipeline(EndpointId::Login, slow.clone());
    let id = |n: u32| lambda(&format!("level-test-{n}"));
    let with_id = |req: Request, n: u32| req.with_lambda_context(id(n));
    let _ = health
        .serve(with_id(request("GET", "/api/health"), 1), &Broken)
        .await;
    let _ = login
        .serve(with_id(request("POST", "/api/auth/login"), 2), &Ok200)
        .await;
    let _ = health
        .serve(with_id(request("GET", "/api/health?a=%00"), 3), &Ok200)
        .await;
    let _ = health
        .serve(with_id(request("GET", "/api/other"), 4), &Ok200)
        .await;
    let _ = health
        .serve(with_id(request("GET", "/api/health"), 5), &Ok200)
        .await;
    let lines = request_lines("level-test-");
    assert!(!logs.contents().is_empty());
    let seen: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["status"].as_u64().unwrap_or_default(),
                l["level"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (500, "ERROR"),
            (503, "ERROR"),
            (400, "WARN"),
            (404, "INFO"),
            (200, "INFO")
        ],
        "{lines:#?}"
    );
}

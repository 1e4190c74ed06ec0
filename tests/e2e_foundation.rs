//! The foundation over real HTTP through `cargo lambda watch`, and by invoking the function
//! with REST (v1) and HTTP (v2) API events.

use flowbotz_tests::events::{Event, SHAPES, Shape};
use flowbotz_tests::stack::{
    Answer, assert_problem, assert_security_headers, base_url, function_log, invoke, local_secrets,
    raw_http,
};

async fn get(path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = flowbotz_tests::stack::http_client().get(format!("{}{path}", base_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Answer::from_http(req.send().await.expect("request")).await
}

#[tokio::test]
async fn given_health_when_called_over_http_then_200_json_with_every_header() {
    let a = get("/api/health", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_security_headers(&a);
    let v = a.json();
    assert_eq!(
        v,
        serde_json::json!({"status": "ok"}),
        "nothing but liveness"
    );
    assert!(
        a.header("ratelimit-policy")
            .is_some_and(|p| p.contains("q=100;w=60"))
    );
    assert!(a.header("x-ratelimit-remaining").is_some());
}

#[tokio::test]
async fn given_a_wrong_method_when_called_then_405_problem_with_allow() {
    for method in ["POST", "PUT", "DELETE", "TRACE", "QUERY"] {
        let a = raw_http(method, "/api/health", &[], b"");
        assert_problem(&a, 405);
        assert_eq!(a.header("allow"), Some("GET, OPTIONS"), "{method}");
    }
}

#[tokio::test]
async fn given_traversal_nul_or_crlf_when_called_then_400_problem() {
    for target in [
        "/api/health/../../etc/passwd",
        "/api/health/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/health/%252e%252e%252f",
        "/api/health/..%5c..%5c",
        "/api/health%00",
        "/api/health?x=%00",
        "/api/health?file=..%2f..%2fetc%2fpasswd",
        "/api/health?a=%0d%0aSet-Cookie:%20x=1",
        "/api/health?id=1%27%20OR%201=1--",
    ] {
        let a = raw_http("GET", target, &[], b"");
        assert_problem(&a, 400);
        assert_eq!(a.json()["type"], "/problems/malicious-input", "{target}");
    }
    let many = format!(
        "/api/health?{}",
        (0..30)
            .map(|i| format!("p{i}=1"))
            .collect::<Vec<_>>()
            .join("&")
    );
    assert_problem(&raw_http("GET", &many, &[], b""), 400);
    let long = format!("/api/health?q={}", "a".repeat(3000));
    assert_problem(&raw_http("GET", &long, &[], b""), 400);
    assert_problem(
        &raw_http(
            "GET",
            "/api/health",
            &[("X-Note", "a%0d%0aInjected: yes")],
            b"",
        ),
        400,
    );
}

#[tokio::test]
async fn given_a_body_on_a_bodiless_endpoint_when_called_then_413() {
    let body = vec![b'a'; 1024 * 1024];
    let a = raw_http(
        "GET",
        "/api/health",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_problem(&a, 413);
}

#[tokio::test]
async fn given_cors_preflights_when_called_then_only_allowed_origins_are_granted() {
    let a = raw_http(
        "OPTIONS",
        "/api/health",
        &[
            ("Origin", "http://localhost:5173"),
            ("Access-Control-Request-Method", "GET"),
        ],
        b"",
    );
    assert_eq!(a.status, 204);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(
        a.header("access-control-allow-methods"),
        Some("GET, OPTIONS")
    );
    assert!(
        a.header("access-control-allow-headers")
            .is_some_and(|h| h.contains("X-CSRF-Token"))
    );
    assert_eq!(a.header("vary"), Some("Origin"));
    assert!(a.header("access-control-allow-credentials").is_none());
    assert_security_headers(&a);
    for origin in [
        "https://evil.example",
        "http://localhost:5173.evil.example",
        "null",
    ] {
        let a = raw_http(
            "OPTIONS",
            "/api/health",
            &[("Origin", origin), ("Access-Control-Request-Method", "GET")],
            b"",
        );
        assert!(
            a.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
        let a = get("/api/health", &[("Origin", origin)]).await;
        assert_eq!(a.status, 200);
        assert!(
            a.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn given_rest_and_http_api_events_when_invoked_then_both_are_served() {
    for shape in SHAPES {
        let a = invoke("health", &Event::new(shape, "GET", "/api/health")).await;
        assert_eq!(a.status, 200, "{shape:?}: {}", a.body);
        assert_security_headers(&a);
        assert_eq!(a.json()["status"], "ok");
        let a = invoke(
            "health",
            &Event::new(shape, "GET", "/api/health/../../etc/passwd"),
        )
        .await;
        assert_problem(&a, 400);
        let a = invoke("health", &Event::new(shape, "PATCH", "/api/health")).await;
        assert_problem(&a, 405);
        let a = invoke("health", &Event::new(shape, "GET", "/api/nothing-here")).await;
        assert_problem(&a, 404);
    }
    // A REST API event whose path carries the stage, as lambda_http sees it without
    // AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH.
    let e = Event::new(Shape::HttpV2, "GET", "/prod/api/health");
    let mut v = e.to_json();
    v["requestContext"]["stage"] = "prod".into();
    let a = invoke_json("health", &v).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

async fn invoke_json(function: &str, event: &serde_json::Value) -> Answer {
    let url = format!("{}/2015-03-31/functions/{function}/invocations", base_url());
    let v: serde_json::Value = flowbotz_tests::stack::http_client()
        .post(url)
        .json(event)
        .send()
        .await
        .expect("invoke")
        .json()
        .await
        .expect("json");
    Answer {
        status: v["statusCode"].as_u64().unwrap_or(0) as u16,
        headers: Default::default(),
        body: v["body"].as_str().unwrap_or_default().to_string(),
    }
}

#[tokio::test]
async fn given_requests_when_served_then_one_json_log_line_each_without_secrets() {
    let a = get(
        "/api/health?page=1",
        &[(
            "Authorization",
            "Bearer not-a-real-token-but-secret-looking",
        )],
    )
    .await;
    let id = a.header("x-request-id").expect("request id").to_string();
    let refused = raw_http("GET", "/api/health%00", &[], b"");
    let refused_id = refused.header("x-request-id").expect("id").to_string();
    // The emulator flushes function output as it arrives; give it a moment.
    let mut log = String::new();
    for _ in 0..50 {
        log = function_log();
        if log.contains(&id) && log.contains(&refused_id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["message"] == "request")
        .collect();
    let line = lines
        .iter()
        .find(|v| v["request_id"] == id.as_str())
        .expect("a log line for the request");
    for field in [
        "timestamp",
        "level",
        "client_ip",
        "method",
        "route",
        "status",
        "duration_ms",
        "security_sensitive",
    ] {
        assert!(!line[field].is_null(), "{field} missing in {line}");
    }
    assert_eq!(line["route"], "/api/health");
    assert_eq!(line["status"], 200);
    assert_eq!(
        lines
            .iter()
            .filter(|v| v["request_id"] == id.as_str())
            .count(),
        1
    );
    let refused_line = lines
        .iter()
        .find(|v| v["request_id"] == refused_id.as_str())
        .expect("refused line");
    assert_eq!(refused_line["level"], "WARN");
    assert_eq!(refused_line["event"], "request.malicious");
    assert!(
        !log.contains("not-a-real-token"),
        "a bearer token reached the log"
    );
    for secret in local_secrets() {
        assert!(!log.contains(&secret), "a generated secret reached the log");
    }
}

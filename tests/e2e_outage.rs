//! With the DynamoDB endpoint stopped: auth endpoints fail closed with 503 quickly, and health
//! fails open. `make test` runs this after stopping moto_server.

use flowbotz_tests::events::{Event, Shape};
use flowbotz_tests::stack::{assert_problem, invoke};
use serde_json::json;

#[tokio::test]
async fn given_the_store_is_down_when_logging_in_then_503_quickly_and_health_still_answers() {
    let started = std::time::Instant::now();
    let body =
        json!({"email": "someone@example.com", "password": "violet quasar mangrove tundra 71"});
    let a = invoke(
        "login",
        &Event::new(Shape::HttpV2, "POST", "/api/auth/login").json_body(&body),
    )
    .await;
    let elapsed = started.elapsed();
    assert_problem(&a, 503);
    assert!(a.header("retry-after").is_some());
    assert!(
        !a.body.to_lowercase().contains("dynamo"),
        "no internals: {}",
        a.body
    );
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "login answered in {elapsed:?}"
    );
    let h = invoke("health", &Event::new(Shape::RestV1, "GET", "/api/health")).await;
    assert_eq!(h.status, 200, "{}", h.body);
}

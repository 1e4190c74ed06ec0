//! Rate limits through the running functions: per-IP counts from the request context, the
//! headers, and IP blocking after repeated violations.

use flowbotz_tests::events::{Event, Shape, unique_ip};
use flowbotz_tests::stack::{assert_problem, invoke};

/// Waits, if needed, so that the next few seconds stay inside one fixed minute window and a
/// count is not split across a roll-over.
async fn start_of_a_minute() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        % 60;
    if secs > 40 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - secs)).await;
    }
}

#[tokio::test]
async fn given_one_ip_over_its_limit_when_another_ip_calls_then_counts_are_separate_and_the_first_is_blocked()
 {
    start_of_a_minute().await;
    let ip = unique_ip();
    let other = unique_ip();
    let call = |ip: &str, shape: Shape| Event::new(shape, "GET", "/api/health").source_ip(ip);
    for i in 0..100 {
        let shape = if i % 2 == 0 {
            Shape::RestV1
        } else {
            Shape::HttpV2
        };
        let a = invoke("health", &call(&ip, shape)).await;
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
    }
    let a = invoke("health", &call(&ip, Shape::HttpV2)).await;
    assert_problem(&a, 429);
    assert_eq!(a.json()["type"], "/problems/rate-limited");
    assert!(
        a.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| (1..=60).contains(&s))
    );
    assert_eq!(a.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(a.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        a.header("ratelimit")
            .is_some_and(|v| v.starts_with("\"minute\";r=0;t="))
    );
    assert_eq!(a.header("ratelimit-policy"), Some("\"minute\";q=100;w=60"));

    // A spoofed X-Forwarded-For changes nothing: the IP comes from the request context.
    let spoofed = call(&ip, Shape::RestV1).header("X-Forwarded-For", &other);
    assert_problem(&invoke("health", &spoofed).await, 429);
    // Another IP is counted apart.
    assert_eq!(
        invoke("health", &call(&other, Shape::RestV1)).await.status,
        200
    );

    // Ten violations within ten minutes block the IP on every endpoint.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(invoke("health", &call(&ip, Shape::HttpV2)).await.status);
    }
    assert_eq!(statuses, [429; 8], "violations 3 to 10 are still 429");
    let a = invoke("health", &call(&ip, Shape::HttpV2)).await;
    assert_problem(&a, 403);
    assert_eq!(a.json()["type"], "/problems/ip-blocked");
    let retry: u64 = a
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((890..=900).contains(&retry), "{retry}");
    assert_eq!(
        invoke("health", &call(&other, Shape::HttpV2)).await.status,
        200
    );
}

//! The OpenAI-compatible provider against `wiremock`: what is sent, and how every failure maps
//! to a problem+json answer that carries nothing of the provider's reply or the key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flowbotz_security::Environment;
use flowbotz_security::log::{CapturedLogs, init_with_writer};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::config::AiConfig;
use crate::provider;

const API_KEY: &str = "sk-test-canary-6f1d2c3b4a5968778695a4b3c2d1e0f9";
const LEAK: &str = "PROVIDER-INTERNAL-DETAIL";

fn ai(base: &str, timeout_ms: u64) -> AiConfig {
    let vars = HashMap::from([
        ("AI_API_BASE", base.to_string()),
        ("AI_MODEL", "small".to_string()),
        ("AI_MODELS", "small,large".to_string()),
        ("AI_MAX_TOKENS", "300".to_string()),
        ("AI_SYSTEM_PROMPT", SYSTEM_PROMPT.to_string()),
        ("AI_TIMEOUT_MS", timeout_ms.to_string()),
        ("AI_CONNECT_TIMEOUT_MS", timeout_ms.to_string()),
    ]);
    AiConfig::from_lookup(Environment::Development, |k| vars.get(k).cloned()).expect("ai config")
}

fn against(base: &str, timeout_ms: u64) -> Setup {
    let ai = ai(base, timeout_ms);
    let secrets = flowbotz_security::secrets::Secrets::fixed(
        Environment::Development,
        [(
            flowbotz_security::config::Need::AiApiKey,
            flowbotz_security::secrets::Versions::single(API_KEY),
        )]
        .into(),
    );
    setup_with(
        provider::from_config(&ai, &secrets).expect("provider"),
        (&ai).into(),
    )
}

fn completion() -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "small-2025-01-01",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "FlowPilot, Relay and Taskwright."},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51,
                  "prompt_tokens_details": {"cached_tokens": 0}}
    })
}

async fn provider_answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

/// A problem+json answer with `status` that carries nothing of the provider's reply or key.
fn assert_clean_problem(resp: &Response<Body>, status: u16, kind: &str) {
    let t = text(resp);
    assert_eq!(resp.status(), status, "{t}");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(body(resp)["type"], format!("/problems/{kind}"));
    assert!(!t.contains(LEAK), "the provider's text leaked: {t}");
    assert!(!t.contains(API_KEY), "the key leaked: {t}");
    assert!(!t.contains("small-2025"), "{t}");
}

#[tokio::test]
async fn given_a_provider_reply_when_chatting_then_the_request_is_openai_shaped_and_the_reply_mapped()
 {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion()))
        .expect(2)
        .mount(&server)
        .await;
    let s = against(&server.uri(), 2000);
    let conversation = json!({"messages": [
        {"role": "user", "content": "Name it. ' OR 1=1 -- <script>alert(1)</script>"},
        {"role": "assistant", "content": "Which style?"},
        {"role": "user", "content": "Short."}
    ], "model": "large", "max_tokens": 4000});
    for shape in SHAPES {
        let resp = s.chat(shape, &conversation).await;
        assert_eq!(resp.status(), 200, "{shape:?}: {}", text(&resp));
        assert_eq!(
            body(&resp),
            json!({
                "message": {"role": "assistant", "content": "FlowPilot, Relay and Taskwright."},
                "model": "small-2025-01-01",
                "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51}
            })
        );
    }
    let received = server.received_requests().await.expect("recorded");
    let sent: Value = serde_json::from_slice(&received[0].body).expect("json body");
    assert_eq!(
        sent,
        json!({
            "model": "large",
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": "Name it. ' OR 1=1 -- <script>alert(1)</script>"},
                {"role": "assistant", "content": "Which style?"},
                {"role": "user", "content": "Short."}
            ],
            "max_tokens": 300
        }),
        "forwarded unchanged, system prompt first, max_tokens capped"
    );
}

#[tokio::test]
async fn given_a_reply_without_usage_when_chatting_then_200_without_usage() {
    let mut reply = completion();
    reply.as_object_mut().map(|o| o.remove("usage"));
    let server = provider_answering(ResponseTemplate::new(200).set_body_json(reply)).await;
    let resp = against(&server.uri(), 2000)
        .chat(Shape::HttpV2, &hello())
        .await;
    assert_eq!(resp.status(), 200);
    assert!(body(&resp).get("usage").is_none());
}

#[tokio::test]
async fn given_the_provider_rate_limits_when_chatting_then_503_with_retry_after() {
    let server = provider_answering(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "7")
            .set_body_json(json!({"error": {"message": LEAK, "type": "rate_limit"}})),
    )
    .await;
    let resp = against(&server.uri(), 2000)
        .chat(Shape::RestV1, &hello())
        .await;
    assert_clean_problem(&resp, 503, "service-unavailable");
    assert_eq!(resp.headers()["retry-after"], "7");

    let server = provider_answering(ResponseTemplate::new(429).set_body_string(LEAK)).await;
    let resp = against(&server.uri(), 2000)
        .chat(Shape::HttpV2, &hello())
        .await;
    assert_clean_problem(&resp, 503, "service-unavailable");
    assert_eq!(
        resp.headers()["retry-after"],
        "5",
        "a default without the header"
    );
}

#[tokio::test]
async fn given_provider_errors_when_chatting_then_502_without_the_provider_text() {
    for status in [500, 502, 503, 400, 401, 404] {
        let server = provider_answering(
            ResponseTemplate::new(status)
                .set_body_json(json!({"error": {"message": format!("{LEAK} key={API_KEY}")}})),
        )
        .await;
        let resp = against(&server.uri(), 2000)
            .chat(SHAPES[status as usize % 2], &hello())
            .await;
        assert_clean_problem(&resp, 502, "bad-gateway");
    }
}

#[tokio::test]
async fn given_a_malformed_reply_when_chatting_then_502() {
    let replies = [
        ResponseTemplate::new(200).set_body_string(format!("<html>{LEAK}</html>")),
        ResponseTemplate::new(200).set_body_string("{\"choices\": [{\"message\": "),
        ResponseTemplate::new(200).set_body_json(json!({"choices": []})),
        ResponseTemplate::new(200).set_body_json(
            json!({"model": "small-2025", "choices": [{"message": {"content": null}}]}),
        ),
        ResponseTemplate::new(200).set_body_json(json!({"error": {"message": LEAK}})),
        ResponseTemplate::new(200).set_body_string(format!(
            "{{\"choices\": [{{\"message\": {{\"content\": \"{}\"}}}}]}}",
            "a".repeat(1024 * 1024 + 1)
        )),
    ];
    for (i, reply) in replies.into_iter().enumerate() {
        let server = provider_answering(reply).await;
        let resp = against(&server.uri(), 2000)
            .chat(SHAPES[i % 2], &hello())
            .await;
        assert_clean_problem(&resp, 502, "bad-gateway");
    }
}

#[tokio::test]
async fn given_a_slow_provider_when_chatting_then_504_once_the_timeout_passes() {
    let server = provider_answering(
        ResponseTemplate::new(200)
            .set_body_json(completion())
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let s = against(&server.uri(), 300);
    let started = Instant::now();
    let resp = s.chat(Shape::RestV1, &hello()).await;
    assert_clean_problem(&resp, 504, "gateway-timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout bounded the call: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn given_an_unreachable_provider_when_chatting_then_502() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let resp = against(&format!("http://127.0.0.1:{port}"), 2000)
        .chat(Shape::HttpV2, &hello())
        .await;
    assert_clean_problem(&resp, 502, "bad-gateway");
}

#[tokio::test]
async fn given_a_redirect_when_chatting_then_it_is_not_followed_and_the_key_stays_put() {
    let elsewhere = MockServer::start().await;
    let server = provider_answering(ResponseTemplate::new(307).insert_header(
        "location",
        format!("{}/v1/chat/completions", elsewhere.uri()).as_str(),
    ))
    .await;
    let resp = against(&server.uri(), 2000)
        .chat(Shape::RestV1, &hello())
        .await;
    assert_clean_problem(&resp, 502, "bad-gateway");
    assert!(
        elsewhere
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );
}

/// The only test of this binary that installs the log subscriber, so it sees every line.
#[tokio::test]
async fn given_chats_when_logged_then_usage_status_and_latency_per_user_without_content_or_key() {
    let logs = CapturedLogs::default();
    init_with_writer("info", logs.clone());
    let content = "canary-content-3b9f about my private plans";
    let conversation = json!({"messages": [{"role": "user", "content": content}]});

    let server = provider_answering(ResponseTemplate::new(200).set_body_json(completion())).await;
    let resp = against(&server.uri(), 2000)
        .chat(Shape::HttpV2, &conversation)
        .await;
    assert_eq!(resp.status(), 200);
    let failing = provider_answering(ResponseTemplate::new(500).set_body_string(LEAK)).await;
    let resp = against(&failing.uri(), 2000)
        .chat(Shape::RestV1, &conversation)
        .await;
    assert_eq!(resp.status(), 502);

    let lines = logs.lines();
    let done = lines
        .iter()
        .find(|l| l["event"] == "ai.completion" && l["total_tokens"] == 51)
        .expect("a completion line");
    assert_eq!(done["user_id"], USER);
    assert_eq!(done["prompt_tokens"], 42);
    assert_eq!(done["completion_tokens"], 9);
    assert_eq!(done["total_tokens"], 51);
    assert!(done["latency_ms"].is_u64());
    let failed = lines
        .iter()
        .find(|l| l["event"] == "ai.upstream_failure" && l["upstream_status"] == 500)
        .expect("a failure line");
    assert_eq!(failed["user_id"], USER);
    assert_eq!(failed["kind"], "status");
    assert!(failed["latency_ms"].is_u64());
    let all = logs.contents();
    assert!(
        !all.contains("canary-content"),
        "message content was logged"
    );
    assert!(!all.contains(API_KEY), "the key was logged");
    assert!(!all.contains(LEAK), "the provider's text was logged");
    assert!(
        !all.contains("FlowPilot"),
        "the assistant's reply was logged"
    );
}

//! The security pipeline's own CPU time per request (criterion), for `BENCHMARKS.md`.
//!
//! `Pipeline::serve` runs every control around a handler that returns a small JSON body: the
//! request id, CORS, the request guard, the rate limiter on the in-memory store, body checks,
//! JWT and CSRF verification, the security headers and the JSON log line (formatted into a
//! sink, so no I/O). Requests are built from the committed API Gateway fixtures outside the
//! timed part; nothing here runs Argon2. `handler_only` calls the same handler without the
//! pipeline, which is all a bare function does.
//!
//! Run with `cargo bench -p flowbotz-tests --features bench-criterion --bench pipeline`
//! (`make bench` does).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use flowbotz_security::clock::SystemClock;
use flowbotz_security::pipeline::json;
use flowbotz_security::ratelimit::RateLimiter;
use flowbotz_security::ratelimit::memory::MemoryStore;
use flowbotz_security::session::Sessions;
use flowbotz_security::{Config, Ctx, Endpoint, EndpointId, Handler, HandlerResult, Pipeline};
use flowbotz_tests::events::{Event, Shape};
use lambda_http::Request;
use lambda_http::http::StatusCode;

/// The health function's policy: no auth, one rate-limit check.
const HEALTH: Endpoint = EndpointId::Health.endpoint();

/// The chat function's policy: bearer, CSRF and per-user limit, the pipeline's longest path.
const CHAT: Endpoint = EndpointId::Chat.endpoint();

struct Ok200;

impl Handler for Ok200 {
    async fn handle(&self, _req: Request, _ctx: &mut Ctx) -> HandlerResult {
        Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
    }
}

fn config() -> Arc<Config> {
    Arc::new(
        Config::from_lookup(|k| match k {
            "ENVIRONMENT" => Some("development".into()),
            "JWT_SECRET_KEY" | "CSRF_SECRET_KEY" => {
                Some("dev-only-benchmark-key-0123456789abcdef".into())
            }
            "LOG_LEVEL" => Some("info".into()),
            // One client sends every request: limits high enough never to refuse.
            k if k.starts_with("RATE_LIMIT_") => Some("100000000".into()),
            _ => None,
        })
        .expect("benchmark configuration"),
    )
}

fn pipeline(endpoint: Endpoint, config: &Arc<Config>, sessions: &Sessions) -> Pipeline {
    let limiter = RateLimiter::new(
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
        config.block,
        config.endpoints.keys().copied(),
        config.store_timeout,
    );
    Pipeline::new(endpoint, Arc::clone(config))
        .with_limiter(Arc::new(limiter))
        .with_sessions(sessions.clone())
}

fn benches(c: &mut Criterion) {
    flowbotz_security::log::init_with_writer("info", std::io::sink);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let config = config();
    let sessions = Sessions::new(&config, Arc::new(SystemClock)).expect("sessions");
    let health = pipeline(HEALTH, &config, &sessions);
    let chat = pipeline(CHAT, &config, &sessions);
    let (token, session) = sessions.issue_session("bench-user", 0).expect("token");
    let token = token.token;
    let csrf = sessions.issue_csrf(&session).token;
    let ip = "198.51.100.7";
    let get_health = Event::new(Shape::RestV1, "GET", HEALTH.route).source_ip(ip);
    let post_chat = Event::new(Shape::RestV1, "POST", CHAT.route)
        .source_ip(ip)
        .header("Authorization", &format!("Bearer {token}"))
        .header("X-CSRF-Token", &csrf)
        .json_body(&serde_json::json!({"messages": [{"role": "user", "content": "Hello"}]}));
    let no_token = Event::new(Shape::RestV1, "POST", CHAT.route)
        .source_ip(ip)
        .json_body(&serde_json::json!({"messages": []}));
    let traversal =
        Event::new(Shape::RestV1, "GET", "/api/health/..%2f..%2fetc%2fpasswd").source_ip(ip);
    let preflight = Event::new(Shape::RestV1, "OPTIONS", CHAT.route)
        .source_ip(ip)
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "POST");

    let mut group = c.benchmark_group("pipeline");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    let handler = Ok200;
    group.bench_function("handler_only", |b| {
        b.iter_batched(
            || get_health.request(),
            |req| {
                let mut ctx = Ctx {
                    request_id: "bench".into(),
                    client_ip: ip.into(),
                    user_id: None,
                    session: None,
                    event: None,
                };
                rt.block_on(handler.handle(req, &mut ctx))
            },
            BatchSize::SmallInput,
        )
    });
    let cases = [
        ("health_get_200", &health, &get_health, 200),
        ("chat_post_bearer_csrf_200", &chat, &post_chat, 200),
        ("chat_post_no_token_401", &chat, &no_token, 401),
        ("health_traversal_400", &health, &traversal, 400),
        ("chat_preflight_204", &chat, &preflight, 204),
    ];
    for (name, pipeline, event, status) in cases {
        let resp = rt.block_on(pipeline.serve(event.request(), &handler));
        assert_eq!(resp.status(), status, "{name} answers {status}");
        group.bench_function(name, |b| {
            b.iter_batched(
                || event.request(),
                |req| black_box(rt.block_on(pipeline.serve(req, &handler))),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The password policy's strength estimate on the slowest inputs found (many distinct
/// substitution characters, then length: 0.86 s each before the estimate read a bounded
/// input) against an ordinary passphrase. Group `password`, reported in `BENCHMARKS.md`.
fn password_benches(c: &mut Criterion) {
    use flowbotz_security::accounts::password::check_policy;
    use flowbotz_security::config::PasswordPolicy;
    let policy = PasswordPolicy {
        min_chars: 12,
        max_chars: 128,
        min_score: 3,
    };
    let subs = "4@8({[<369!1|70$5+%2";
    let cases: [(&str, String); 5] = [
        (
            "passphrase_34_chars",
            "violet quasar mangrove tundra 71!".into(),
        ),
        (
            "substitutions_then_108_a",
            format!("{subs}{}", "a".repeat(108)),
        ),
        (
            "substitutions_cycled_128",
            subs.chars().cycle().take(128).collect(),
        ),
        (
            "substitutions_reversed_128",
            subs.chars().rev().cycle().take(128).collect(),
        ),
        (
            "ambiguous_1_pipe_7_bang_then_a",
            format!("1|7!1|7!{}", "a".repeat(120)),
        ),
    ];
    let mut group = c.benchmark_group("password");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for (name, password) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(check_policy(password, "someone@example.com", &policy)))
        });
    }
    group.finish();
}

criterion_group!(pipeline_benches, benches, password_benches);
criterion_main!(pipeline_benches);

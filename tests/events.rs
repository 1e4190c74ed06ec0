//! API Gateway events for tests, built from committed `sam local generate-event` fixtures:
//! REST API (v1) events as the deployed API sends them, HTTP API (v2) events as
//! `cargo lambda watch` sends them.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Map, Value, json};

const REST_V1: &str = include_str!("fixtures/apigw-rest-v1.json");
const HTTP_V2: &str = include_str!("fixtures/apigw-http-v2.json");

/// The two event shapes a function must accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// API Gateway REST API proxy event (payload 1.0).
    RestV1,
    /// API Gateway HTTP API event (payload 2.0).
    HttpV2,
}

/// Both shapes, for tests that must pass with each.
pub const SHAPES: [Shape; 2] = [Shape::RestV1, Shape::HttpV2];

/// A distinct documentation-range client IP per call, so tests never share rate-limit counters.
pub fn unique_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "2001:db8:{:x}:{:x}::{:x}",
        std::process::id(),
        n >> 16,
        n & 0xffff
    )
}

/// A distinct request id per call, so that each invocation's log line can be found.
pub fn unique_request_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("e2e-{:x}-{n:x}-{nanos:x}", std::process::id())
}

/// An event under construction, from a unique client IP with a unique request id.
#[derive(Debug, Clone)]
pub struct Event {
    shape: Shape,
    value: Value,
}

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    v.as_object_mut().expect("fixture is an object")
}

impl Event {
    /// A `method` request to `path` (which may carry a `?query`) from a unique client IP.
    pub fn new(shape: Shape, method: &str, path: &str) -> Self {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut value: Value = serde_json::from_str(match shape {
            Shape::RestV1 => REST_V1,
            Shape::HttpV2 => HTTP_V2,
        })
        .expect("fixture parses");
        let o = obj(&mut value);
        o.insert("body".into(), Value::Null);
        o.insert("isBase64Encoded".into(), json!(false));
        match shape {
            Shape::RestV1 => {
                o.insert("path".into(), json!(path));
                o.insert("resource".into(), json!(path));
                o.insert("httpMethod".into(), json!(method));
                o.insert("headers".into(), json!({"Host": "api.example.test"}));
                o.insert(
                    "multiValueHeaders".into(),
                    json!({"Host": ["api.example.test"]}),
                );
                let mut single = Map::new();
                let mut multi = Map::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    single.insert(k.into(), json!(v));
                    multi.insert(k.into(), json!([v]));
                }
                o.insert("queryStringParameters".into(), Value::Object(single));
                o.insert(
                    "multiValueQueryStringParameters".into(),
                    Value::Object(multi),
                );
                o.insert("pathParameters".into(), json!({}));
                let ctx = obj(o.get_mut("requestContext").expect("ctx"));
                ctx.insert("httpMethod".into(), json!(method));
                ctx.insert("path".into(), json!(format!("/prod{path}")));
                ctx.insert("resourcePath".into(), json!(path));
            }
            Shape::HttpV2 => {
                o.insert("rawPath".into(), json!(path));
                o.insert("routeKey".into(), json!("$default"));
                o.insert("rawQueryString".into(), json!(query));
                o.insert("queryStringParameters".into(), json!({}));
                o.insert("headers".into(), json!({"host": "api.example.test"}));
                o.remove("cookies");
                o.insert("pathParameters".into(), json!({}));
                let ctx = obj(o.get_mut("requestContext").expect("ctx"));
                let http = obj(ctx.get_mut("http").expect("http"));
                http.insert("method".into(), json!(method));
                http.insert("path".into(), json!(path));
            }
        }
        Self { shape, value }
            .source_ip(&unique_ip())
            .request_id(&unique_request_id())
    }

    /// Sets the request id API Gateway assigned (`requestContext.requestId`).
    pub fn request_id(mut self, id: &str) -> Self {
        let ctx = obj(obj(&mut self.value).get_mut("requestContext").expect("ctx"));
        ctx.insert("requestId".into(), json!(id));
        self
    }

    /// Sets the client IP API Gateway saw.
    pub fn source_ip(mut self, ip: &str) -> Self {
        let ctx = obj(obj(&mut self.value).get_mut("requestContext").expect("ctx"));
        match self.shape {
            Shape::RestV1 => {
                obj(ctx.get_mut("identity").expect("identity"))
                    .insert("sourceIp".into(), json!(ip));
            }
            Shape::HttpV2 => {
                obj(ctx.get_mut("http").expect("http")).insert("sourceIp".into(), json!(ip));
            }
        }
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let o = obj(&mut self.value);
        match self.shape {
            Shape::RestV1 => {
                obj(o.get_mut("headers").expect("headers")).insert(name.into(), json!(value));
                obj(o.get_mut("multiValueHeaders").expect("mv"))
                    .insert(name.into(), json!([value]));
            }
            Shape::HttpV2 => {
                obj(o.get_mut("headers").expect("headers"))
                    .insert(name.to_ascii_lowercase(), json!(value));
            }
        }
        self
    }

    /// Sets a text body.
    pub fn body(mut self, text: &str) -> Self {
        let o = obj(&mut self.value);
        o.insert("body".into(), json!(text));
        o.insert("isBase64Encoded".into(), json!(false));
        self
    }

    /// Sets a JSON body with its content type.
    pub fn json_body(self, body: &Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(&body.to_string())
    }

    /// Sets a body as API Gateway sends binary payloads: base64 with the flag set.
    pub fn body_base64(mut self, encoded: &str) -> Self {
        let o = obj(&mut self.value);
        o.insert("body".into(), json!(encoded));
        o.insert("isBase64Encoded".into(), json!(true));
        self
    }

    /// The event as JSON.
    pub fn to_json(&self) -> Value {
        self.value.clone()
    }

    /// The event as the `lambda_http::Request` a handler receives.
    pub fn request(&self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.value.to_string())
            .expect("event converts to a request")
    }
}

//! Clients of the local stack that `make test` starts.

use std::collections::HashMap;

use serde_json::Value;

use crate::events::Event;

/// Base URL of the API (`FLOWBOTZ_API_URL`, default `http://127.0.0.1:9000`).
pub fn base_url() -> String {
    std::env::var("FLOWBOTZ_API_URL").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

/// The DynamoDB endpoint of the stack (`AWS_ENDPOINT_URL_DYNAMODB`, default moto on 5005).
pub fn dynamodb_url() -> String {
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| "http://127.0.0.1:5005".into())
}

/// A function's answer to an invocation, as API Gateway would turn it into HTTP.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// The body text.
    pub body: String,
}

impl Answer {
    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Converts a reqwest response.
    pub async fn from_http(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.text().await.unwrap_or_default();
        Self {
            status,
            headers,
            body,
        }
    }
}

/// An HTTP client for the local stack, with a bound on every request: a hung stack fails the
/// test instead of stalling the run.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(90))
        .build()
        .expect("http client")
}

/// Invokes `function` with `event` through the emulator's Lambda Invoke API, the local
/// equivalent of `sam local invoke -e`.
pub async fn invoke(function: &str, event: &Event) -> Answer {
    let url = format!("{}/2015-03-31/functions/{function}/invocations", base_url());
    let resp = http_client()
        .post(url)
        .json(&event.to_json())
        .send()
        .await
        .expect("the emulator answers");
    assert!(
        resp.status().is_success(),
        "invoke failed: {}",
        resp.status()
    );
    let v: Value = resp.json().await.expect("a Lambda response");
    let status = v["statusCode"].as_u64().expect("statusCode") as u16;
    let mut headers = HashMap::new();
    if let Some(h) = v["headers"].as_object() {
        for (k, val) in h {
            headers.insert(
                k.to_ascii_lowercase(),
                val.as_str().unwrap_or_default().to_string(),
            );
        }
    }
    if let Some(h) = v["multiValueHeaders"].as_object() {
        for (k, vals) in h {
            if let Some(first) = vals
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_str)
            {
                headers
                    .entry(k.to_ascii_lowercase())
                    .or_insert_with(|| first.to_string());
            }
        }
    }
    let body = v["body"].as_str().unwrap_or_default().to_string();
    Answer {
        status,
        headers,
        body,
    }
}

/// Every security header of the API contract ([`crate::contract`]), checked on an answer.
pub fn assert_security_headers(a: &Answer) {
    crate::contract::assert_contract_headers(&format!("a {} answer", a.status), |n| {
        a.header(n).map(str::to_string)
    });
}

/// A problem+json answer with `status`, with the request id in the body.
pub fn assert_problem(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "body: {}", a.body);
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    let v = a.json();
    assert_eq!(v["status"], status);
    assert!(
        v["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("/problems/"))
    );
    assert!(v["title"].is_string() && v["detail"].is_string());
    assert_eq!(v["request_id"].as_str(), a.header("x-request-id"));
    assert_security_headers(a);
}

/// Sends one HTTP/1.1 request exactly as written (no path normalisation, any header bytes)
/// over a plain TCP connection, and reads the answer.
pub fn raw_http(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    use std::io::{Read, Write};
    let url = base_url();
    let authority = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = std::net::TcpStream::connect(&authority).expect("connect to the stack");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut headers = HashMap::new();
    let mut chunked = false;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            chunked |= k == "transfer-encoding" && v.contains("chunked");
            headers.insert(k, v.trim().to_string());
        }
    }
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The log lines the functions wrote (`FLOWBOTZ_FUNCTION_LOG`, the emulator's output file).
pub fn function_log() -> String {
    std::env::var("FLOWBOTZ_FUNCTION_LOG")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// The secrets the local stack generated (`.env`), to check that none reaches a log.
pub fn local_secrets() -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../.env");
    std::fs::read_to_string(root)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.trim().to_string()))
        .filter(|v| v.len() >= 16)
        .collect()
}

/// A local development secret by name (`.env`), for tests that forge tokens as an attacker
/// holding or lacking the key would.
pub fn local_secret(name: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../.env");
    std::fs::read_to_string(root)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_default()
}

/// A registered and logged-in user of the local stack.
#[derive(Debug, Clone)]
pub struct Session {
    /// The email.
    pub email: String,
    /// The password.
    pub password: String,
    /// The bearer token.
    pub access_token: String,
    /// The CSRF token.
    pub csrf_token: String,
}

/// A strong password accepted by the policy.
pub const PASSWORD: &str = "violet quasar mangrove tundra 71";

/// Registers a new user, follows the mailed verification link and logs in, each request from a
/// fresh client IP.
pub async fn new_session() -> Session {
    let email = format!("user-{}@example.com", uuid_like());
    register_verified(&email, PASSWORD).await;
    log_in(&email, PASSWORD).await
}

/// How long a test waits for a mail the local SES should already hold.
pub const MAIL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Registers `email` with `password` (202), reads the verification mail that the registration
/// sent, and verifies the address with that link and `password` (204): the account exists and
/// `password` signs in.
///
/// # Panics
/// If any step answers otherwise, or no verification mail arrives within [`MAIL_WAIT`].
pub async fn register_verified(email: &str, password: &str) {
    let reg = register(email, password).await;
    assert_eq!(reg.status, 202, "register: {}", reg.body);
    // The registration sent its mail before answering, so the newest verification mail to
    // the address is this registration's (one read of the local SES: each read serialises all
    // of moto's state, so the helpers read as little as they can).
    let to = email.to_ascii_lowercase();
    let token = crate::mailbox::wait_for_mail(&to, 1, MAIL_WAIT)
        .await
        .iter()
        .rev()
        .find_map(|m| m.link_token("verify"))
        .unwrap_or_else(|| panic!("no verification mail to {to}"));
    let verified = verify_email(&token, password).await;
    // 409 account-exists: the account was created by an earlier attempt of the same request.
    // moto ignores the transaction's ClientRequestToken, so when it is slow and the store
    // client retries a TransactWriteItems that had in fact been applied, the retry fails its
    // condition; DynamoDB would answer the retry as the first attempt. The login that follows
    // proves the account and its password either way.
    assert!(
        verified.status == 204
            || (verified.status == 409 && verified.json()["type"] == "/problems/account-exists"),
        "verify-email: {} {}",
        verified.status,
        verified.body
    );
}

/// `POST /api/auth/register` `{email, password}` from a fresh client IP.
pub async fn register(email: &str, password: &str) -> Answer {
    use crate::events::{Event, Shape};
    let body = serde_json::json!({"email": email, "password": password});
    invoke(
        "register",
        &Event::new(Shape::HttpV2, "POST", "/api/auth/register").json_body(&body),
    )
    .await
}

/// `POST /api/auth/verify-email` `{token, password}` from a fresh client IP.
pub async fn verify_email(token: &str, password: &str) -> Answer {
    use crate::events::{Event, Shape};
    let body = serde_json::json!({"token": token, "password": password});
    invoke(
        "verify-email",
        &Event::new(Shape::RestV1, "POST", "/api/auth/verify-email").json_body(&body),
    )
    .await
}

/// The `#<purpose>=` token of the `nth` mail (1-based, oldest first) to `email`, waiting up to
/// [`MAIL_WAIT`] for it to arrive.
///
/// # Panics
/// If the mail does not arrive in time or carries no such link.
pub async fn mailed_token(email: &str, nth: usize, purpose: &str) -> String {
    let to = email.to_ascii_lowercase();
    let mails = crate::mailbox::wait_for_mail(&to, nth, MAIL_WAIT).await;
    let mail = &mails[nth - 1];
    mail.link_token(purpose).unwrap_or_else(|| {
        panic!(
            "mail {nth} to {to} ({:?}) carries no #{purpose}= link",
            mail.subject
        )
    })
}

/// Logs `session`'s user in again: a second session of the same user.
pub async fn login_again(session: &Session) -> Session {
    log_in(&session.email, &session.password).await
}

/// Logs `email` in with `password` from a fresh client IP (200 expected): a new session.
///
/// # Panics
/// If the login does not answer 200.
pub async fn log_in(email: &str, password: &str) -> Session {
    use crate::events::{Event, Shape};
    let body = serde_json::json!({"email": email, "password": password});
    let login = invoke(
        "login",
        &Event::new(Shape::HttpV2, "POST", "/api/auth/login").json_body(&body),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let v = login.json();
    Session {
        email: email.into(),
        password: password.into(),
        access_token: v["access_token"].as_str().unwrap_or_default().into(),
        csrf_token: v["csrf_token"].as_str().unwrap_or_default().into(),
    }
}

fn uuid_like() -> String {
    crate::events::unique_ip().replace(':', "")
}

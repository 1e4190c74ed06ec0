//! Structured JSON logs: one line per request, and named security events.
//!
//! Only values the pipeline chose are recorded; headers, bodies, tokens and secrets never are.

use std::io;

use tracing::Level;

use crate::config::Environment;
use crate::events::Event;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The `tracing` filter for `level` in `environment`. In development `level` is used as
/// written (any `EnvFilter` directives). Elsewhere it is one level for the project's own code,
/// the shared crate and `own_targets` (the function's crate), while every dependency stays at
/// `info` or above: `lambda_runtime` logs each invocation's raw event, passwords and tokens
/// included, at `trace`, and the AWS SDK and HTTP clients log headers at `debug` and `trace`.
pub fn filter(level: &str, environment: Environment, own_targets: &[&str]) -> String {
    if !environment.is_deployed() {
        return level.to_string();
    }
    let verbose = matches!(level, "debug" | "trace");
    if !verbose {
        return level.to_string();
    }
    let mut directives = vec!["info".to_string(), format!("flowbotz_security={level}")];
    directives.extend(
        own_targets
            .iter()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(|t| format!("{t}={level}")),
    );
    directives.join(",")
}

/// Installs the JSON subscriber writing to stdout (CloudWatch Logs on Lambda), filtered by
/// `level` (a `tracing` filter such as `info` or `debug`). Later calls do nothing.
pub fn init(level: &str) {
    init_with_writer(level, io::stdout);
}

/// Installs the JSON subscriber with a custom writer (tests capture lines this way).
pub fn init_with_writer<W>(level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
}

/// The fields of one request's log line.
#[derive(Debug, Clone)]
pub struct RequestLog<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The client IP from the API Gateway request context.
    pub client_ip: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// The endpoint's route (never the raw path, which an attacker controls).
    pub route: &'a str,
    /// The response status.
    pub status: u16,
    /// Time spent in the function, in milliseconds.
    pub duration_ms: u64,
    /// The authenticated user, when known.
    pub user_id: Option<&'a str>,
    /// Whether the route handles credentials or payments.
    pub security_sensitive: bool,
    /// The security event, if the request was refused or raised one.
    pub event: Option<Event>,
}

impl RequestLog<'_> {
    /// The level of the line: ERROR for 5xx, WARN for 4xx security events, else INFO.
    pub fn level(&self) -> Level {
        if self.status >= 500 {
            Level::ERROR
        } else if self.status >= 400 && self.event.is_some() {
            Level::WARN
        } else {
            Level::INFO
        }
    }

    /// Writes the line.
    pub fn emit(&self) {
        macro_rules! line {
            ($lvl:ident) => {
                tracing::$lvl!(
                    request_id = self.request_id,
                    client_ip = self.client_ip,
                    method = self.method,
                    route = self.route,
                    status = self.status,
                    duration_ms = self.duration_ms,
                    user_id = self.user_id,
                    security_sensitive = self.security_sensitive,
                    event = self.event.map(Event::as_str),
                    "request"
                )
            };
        }
        match self.level() {
            Level::ERROR => line!(error),
            Level::WARN => line!(warn),
            _ => line!(info),
        }
    }
}

/// Logs a security event that is not a request's outcome (an IP block starting, an account
/// erased).
pub fn security_event(event: Event, request_id: &str, client_ip: &str, route: &str, detail: &str) {
    tracing::warn!(
        event = event.as_str(),
        request_id,
        client_ip,
        route,
        detail,
        "security event"
    );
}

/// A writer that keeps every log line in memory, for tests.
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn contents(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Every line parsed as JSON.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.contents()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

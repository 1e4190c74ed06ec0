//! The pipeline: every control applied in one place, in one order, around a handler.
//!
//! request id → CORS preflight → guard (path, query, headers) → route and method → IP block and
//! rate limit → body size and media type → bearer auth → CSRF → per-user rate limit → handler
//! → security and CORS headers → one log line.
//!
//! Each function takes its [`Endpoint`] (its policy as data) from the catalogue
//! ([`crate::catalogue`]) and calls [`Pipeline::serve`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use crate::config::Config;
use crate::cors::Cors;
use crate::error::{ApiError, ForbiddenKind};
use crate::events::Event;
use crate::guard::{self, BodyKind};
use crate::log::RequestLog;
use crate::ratelimit::{Decision, RateLimiter, Subject, Verdict};
use crate::revocation::{SessionState, SessionStore};
use crate::secrets::Secrets;
use crate::session::Sessions;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What happens when the rate-limit store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Refuse with 503 (auth, account and payment endpoints).
    Closed,
    /// Serve the request and log an ERROR.
    Open,
}

/// An endpoint's security policy, declared as data by its function.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Its typed name in the catalogue.
    pub id: crate::catalogue::EndpointId,
    /// The endpoint's name: the key of its limits in the configuration and its rate-limit
    /// policy name.
    pub name: &'static str,
    /// The Lambda function (binary crate) that serves it.
    pub function: &'static str,
    /// The path it serves, such as `/api/health`.
    pub route: &'static str,
    /// The methods it answers (OPTIONS is always answered).
    pub methods: &'static [Method],
    /// What it accepts as a body.
    pub body: BodyKind,
    /// Whether a bearer token is required.
    pub auth: bool,
    /// Whether a CSRF token and origin check are required.
    pub csrf: bool,
    /// Whether the rate limit also counts per user (needs `auth`).
    pub per_user_limit: bool,
    /// Behaviour when the rate-limit store fails.
    pub store_failure: StoreFailure,
    /// Whether the route handles credentials or payments (flagged in logs).
    pub security_sensitive: bool,
    /// Whether rate-limit violations here count towards an IP block and a block refuses the
    /// request. `false` only where the request authenticates itself and a block would drop
    /// legitimate traffic from a few shared addresses (the Stripe webhook): such an endpoint
    /// is still rate limited per IP.
    pub ip_block: bool,
    /// The default rate limit per client IP (and per user with `per_user_limit`); configuration
    /// may override it.
    pub rate: crate::config::RateLimit,
    /// The default body limit in bytes (0: no body); configuration may override it.
    pub body_bytes: usize,
}

/// An empty 204 answer (the pipeline adds the headers).
pub fn no_content() -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// What the pipeline learned about a request, handed to the handler.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The request id (API Gateway's, else the Lambda invocation's, else a new UUID).
    pub request_id: String,
    /// The client IP API Gateway saw.
    pub client_ip: String,
    /// The authenticated user, on endpoints with `auth`.
    pub user_id: Option<String>,
    /// The verified access token's claims, on endpoints with `auth`.
    pub session: Option<crate::session::Claims>,
    /// A security event the handler raised, for the log line (such as `auth.failure`).
    pub event: Option<Event>,
}

/// A handler's answer before the pipeline adds headers.
pub type HandlerResult = Result<Response<Body>, ApiError>;

/// A function's business logic, called once every control has passed.
pub trait Handler: Send + Sync {
    /// Handles an admitted request. `ctx` carries the request id, client IP and user; a
    /// handler may set `ctx.event` to name a security event for the log line.
    fn handle(&self, req: Request, ctx: &mut Ctx) -> impl Future<Output = HandlerResult> + Send;
}

/// Builds a JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    let mut resp = Response::new(Body::Text(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The body's bytes, whatever form lambda_http decoded it into.
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// The client IP from the API Gateway request context; never from `X-Forwarded-For`.
pub fn client_ip(req: &Request) -> String {
    let ip = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => c.identity.source_ip.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.http.source_ip.clone(),
        _ => None,
    };
    ip.filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or_else(|| "unknown".into())
}

fn request_id(req: &Request) -> String {
    let from_gateway = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => c.request_id.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.request_id.clone(),
        _ => None,
    };
    from_gateway
        .or_else(|| req.lambda_context_ref().map(|c| c.request_id.clone()))
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The request path without the API Gateway stage, as the client sent it (undecoded).
pub fn raw_path(req: &Request) -> String {
    let raw = req.raw_http_path();
    let raw = if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    };
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.stage.clone(),
        _ => None,
    };
    if let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default")
        && let Some(rest) = raw.strip_prefix(&format!("/{stage}"))
        && rest.starts_with('/')
    {
        return rest.to_string();
    }
    raw.to_string()
}

/// An endpoint's pipeline: its policy, configuration and the shared controls.
pub struct Pipeline {
    endpoint: Endpoint,
    config: Arc<Config>,
    cors: Cors,
    limiter: Option<Arc<RateLimiter>>,
    sessions: Option<Sessions>,
    secrets: Option<Secrets>,
    live_sessions: Option<Arc<dyn SessionStore>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline for `endpoint`. Endpoints with `auth` or `csrf` need
    /// [`Pipeline::with_sessions`]; rate limits need [`Pipeline::with_limiter`].
    pub fn new(endpoint: Endpoint, config: Arc<Config>) -> Self {
        let cors = Cors::new(&config.cors_origins, endpoint.methods);
        Self {
            endpoint,
            config,
            cors,
            limiter: None,
            sessions: None,
            secrets: None,
            live_sessions: None,
        }
    }

    /// Adds the rate limiter.
    pub fn with_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Adds token verification (JWT and CSRF).
    pub fn with_sessions(mut self, sessions: Sessions) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Adds the function's secrets, refreshed once their TTL has passed, before the
    /// authentication of an admitted request ([`Secrets::refresh_if_due`]).
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Adds the check that a verified token's session still stands (the account exists and
    /// its sessions were not ended after the token was issued): one read per authenticated
    /// request; an ended session is 401, a failed read 503.
    pub fn with_session_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.live_sessions = Some(store);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `req` is addressed to this pipeline's route (a function serving two endpoints
    /// picks its pipeline with this; every other check stays in [`Pipeline::serve`]).
    pub fn serves(&self, req: &Request) -> bool {
        raw_path(req) == self.endpoint.route
    }

    /// Runs `req` through every control and `handler`, and returns the finished response.
    pub async fn serve<H: Handler>(&self, req: Request, handler: &H) -> Response<Body> {
        let started = Instant::now();
        let mut ctx = Ctx {
            request_id: request_id(&req),
            client_ip: client_ip(&req),
            user_id: None,
            session: None,
            event: None,
        };
        let method = req.method().clone();
        let request_headers = req.headers().clone();
        let mut decision = None;
        let result = match self.admit(&req, &mut ctx, &mut decision).await {
            Ok(Some(preflight)) => Ok(preflight),
            Ok(None) => handler.handle(req, &mut ctx).await,
            Err(e) => Err(e),
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                if err.status().is_server_error() {
                    tracing::error!(request_id = %ctx.request_id, route = self.endpoint.route, cause = %err, "request failed");
                }
                ctx.event = ctx.event.or(err.event());
                err.to_response(&ctx.request_id)
            }
        };
        let h = resp.headers_mut();
        crate::headers::apply(h);
        self.cors.decorate(&request_headers, h);
        if let Some(d) = &decision {
            d.write_headers(h);
        }
        if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
            h.insert(X_REQUEST_ID, v);
        }
        RequestLog {
            request_id: &ctx.request_id,
            client_ip: &ctx.client_ip,
            method: method.as_str(),
            route: self.endpoint.route,
            status: resp.status().as_u16(),
            duration_ms: started.elapsed().as_millis() as u64,
            user_id: ctx.user_id.as_deref(),
            security_sensitive: self.endpoint.security_sensitive,
            event: ctx.event,
        }
        .emit();
        resp
    }

    /// Applies every control before the handler. `Ok(Some(_))` is a finished preflight answer.
    async fn admit(
        &self,
        req: &Request,
        ctx: &mut Ctx,
        decision: &mut Option<Decision>,
    ) -> Result<Option<Response<Body>>, ApiError> {
        let path = raw_path(req);
        if req.method() == Method::OPTIONS && path == self.endpoint.route {
            return Ok(Some(self.cors.preflight(req.headers())));
        }
        guard::check_path(&path)?;
        guard::check_query(req.uri().query().unwrap_or_default())?;
        if let Some(q) = req.query_string_parameters_ref() {
            guard::check_query_values(q.iter())?;
        }
        guard::check_headers(req.headers())?;
        if path != self.endpoint.route {
            return Err(ApiError::NotFound);
        }
        if !self.endpoint.methods.contains(req.method()) {
            return Err(ApiError::MethodNotAllowed {
                allow: self.cors.allow_header().to_string(),
            });
        }
        let limits = self.config.endpoint(self.endpoint.name);
        let ip = ctx.client_ip.clone();
        let subject = if self.endpoint.ip_block {
            Subject::Ip(&ip)
        } else {
            Subject::UnblockableIp(&ip)
        };
        self.rate_limit(subject, ctx, decision).await?;
        guard::check_body(
            self.endpoint.body,
            limits.body_bytes,
            body_bytes(req).len(),
            req.headers(),
        )?;
        if let Some(secrets) = &self.secrets {
            secrets.refresh_if_due().await;
            if secrets.expired() {
                return Err(ApiError::ServiceUnavailable {
                    reason: "secrets could not be refreshed for too long".into(),
                    retry_after: 30,
                });
            }
        }
        if self.endpoint.auth || self.endpoint.csrf {
            let sessions = self.sessions.as_ref().ok_or_else(|| {
                ApiError::Internal("endpoint requires sessions but none are configured".into())
            })?;
            if self.endpoint.auth {
                let claims = sessions.authenticate_fresh(req.headers()).await?;
                if let Some(store) = &self.live_sessions {
                    match store.check(&claims).await {
                        Ok(SessionState::Active) => {}
                        Ok(SessionState::Ended) => {
                            return Err(ApiError::Unauthorized("session ended"));
                        }
                        Err(e) => {
                            tracing::error!(request_id = %ctx.request_id, event = Event::SessionStoreFailure.as_str(), cause = %e, "session store failed");
                            return Err(ApiError::ServiceUnavailable {
                                reason: "session store unavailable".into(),
                                retry_after: 1,
                            });
                        }
                    }
                }
                ctx.user_id = Some(claims.sub.clone());
                ctx.session = Some(claims);
            }
            if self.endpoint.csrf {
                let session = ctx
                    .session
                    .as_ref()
                    .ok_or(ApiError::Forbidden(ForbiddenKind::CsrfToken))?;
                sessions
                    .check_csrf_fresh(req.headers(), session, &self.cors)
                    .await?;
            }
        }
        if self.endpoint.per_user_limit
            && let Some(user) = ctx.user_id.clone()
        {
            self.rate_limit(Subject::User(&user), ctx, decision).await?;
        }
        Ok(None)
    }

    async fn rate_limit(
        &self,
        subject: Subject<'_>,
        ctx: &Ctx,
        decision: &mut Option<Decision>,
    ) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let limits = self.config.endpoint(self.endpoint.name).rate;
        let d = match limiter.check(self.endpoint.name, subject, limits).await {
            Ok(d) => d,
            Err(err) => {
                tracing::error!(request_id = %ctx.request_id, route = self.endpoint.route, event = Event::RateLimitStoreFailure.as_str(), cause = %err, "rate-limit store failed");
                return match self.endpoint.store_failure {
                    StoreFailure::Open => Ok(()),
                    StoreFailure::Closed => Err(ApiError::ServiceUnavailable {
                        reason: "rate-limit store unavailable".into(),
                        retry_after: 1,
                    }),
                };
            }
        };
        let verdict = d.verdict;
        let retry_after = d.retry_after_secs;
        *decision = Some(match decision.take() {
            Some(prev) => prev.stricter(d),
            None => d,
        });
        match verdict {
            Verdict::Admitted => Ok(()),
            Verdict::Blocked => Err(ApiError::IpBlocked { retry_after }),
            Verdict::Limited => {
                tracing::warn!(request_id = %ctx.request_id, client_ip = %ctx.client_ip, route = self.endpoint.route, policy = self.endpoint.name, event = Event::RateLimitExceeded.as_str(), "rate limit exceeded");
                if !self.endpoint.ip_block {
                    return Err(ApiError::RateLimited { retry_after });
                }
                match limiter.record_violation(&ctx.client_ip).await {
                    Ok(Some(secs)) => {
                        tracing::warn!(request_id = %ctx.request_id, client_ip = %ctx.client_ip, route = self.endpoint.route, policy = self.endpoint.name, event = Event::IpBlocked.as_str(), block_secs = secs, "ip blocked")
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::error!(request_id = %ctx.request_id, event = Event::RateLimitStoreFailure.as_str(), cause = %err, "recording a violation failed")
                    }
                }
                Err(ApiError::RateLimited { retry_after })
            }
        }
    }
}

#[cfg(test)]
mod tests;

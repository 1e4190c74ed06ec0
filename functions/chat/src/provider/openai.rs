//! An OpenAI-compatible chat completions API over one HTTP client built at start.

use async_trait::async_trait;
use flowbotz_security::ConfigError;
use flowbotz_security::config::Need;
use flowbotz_security::secrets::Secrets;
use http::{StatusCode, header};
use serde::{Deserialize, Serialize};

use super::{ChatProvider, Completion, CompletionRequest, Message, ProviderError, Usage};
use crate::config::AiConfig;

/// Largest reply body read from the provider; a bigger one is treated as malformed.
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// Longest `model` name taken from a reply; a longer one is replaced by the requested model.
const MAX_MODEL_CHARS: usize = 128;
/// Seconds a client is asked to wait after the provider's 429 without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: u64 = 5;
/// Most seconds a client is asked to wait after the provider's 429.
const MAX_RETRY_AFTER: u64 = 60;

/// `POST {AI_API_BASE}/v1/chat/completions` with `Authorization: Bearer` and the AI key current
/// at the time of the call.
pub(crate) struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    secrets: Secrets,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("url", &self.url)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// The provider of `ai`, with its timeouts. Redirects are not followed, so the key is only
    /// ever sent to the configured URL.
    pub(crate) fn new(ai: &AiConfig, secrets: Secrets) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .connect_timeout(ai.connect_timeout)
            .timeout(ai.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // The key goes to AI_API_BASE and nowhere else, whatever proxy variables say.
            .no_proxy()
            .user_agent(concat!("flowbotz-chat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| ConfigError::Invalid {
                var: "AI_API_BASE".into(),
                reason: "the HTTP client for the AI provider could not be built".into(),
            })?;
        Ok(Self {
            client,
            url: ai.completions_url(),
            secrets,
        })
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    max_tokens: u32,
}

#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl WireUsage {
    fn usage(&self) -> Option<Usage> {
        let (prompt, completion) = (self.prompt_tokens?, self.completion_tokens?);
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: self
                .total_tokens
                .unwrap_or_else(|| prompt.saturating_add(completion)),
        })
    }
}

fn transport(err: &reqwest::Error) -> ProviderError {
    if err.is_timeout() {
        ProviderError::Timeout
    } else if err.is_connect() {
        ProviderError::Transport("connection failed")
    } else {
        ProviderError::Transport("request failed")
    }
}

fn retry_after(headers: &http::HeaderMap) -> u64 {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s.ceil() as u64).clamp(1, MAX_RETRY_AFTER))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

#[async_trait]
impl ChatProvider for OpenAiProvider {
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let secrets = self.secrets.snapshot();
        let key = secrets
            .get(Need::AiApiKey)
            .ok_or(ProviderError::Transport("no AI key"))?;
        let mut resp = self
            .client
            .post(&self.url)
            .bearer_auth(key.current.expose())
            .json(&WireRequest {
                model: &req.model,
                messages: &req.messages,
                max_tokens: req.max_tokens,
            })
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ProviderError::RateLimited {
                retry_after: retry_after(resp.headers()),
            });
        }
        if !status.is_success() {
            return Err(ProviderError::Status {
                status: status.as_u16(),
            });
        }
        let malformed = |reason| ProviderError::Malformed {
            status: status.as_u16(),
            reason,
        };
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(malformed("reply too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let reply: WireReply =
            serde_json::from_slice(&body).map_err(|_| malformed("not a chat completion"))?;
        let content = reply
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| malformed("no assistant message"))?;
        let model = reply
            .model
            .filter(|m| !m.is_empty() && m.chars().count() <= MAX_MODEL_CHARS)
            .unwrap_or_else(|| req.model.clone());
        Ok(Completion {
            content,
            model,
            usage: reply.usage.as_ref().and_then(WireUsage::usage),
            upstream_status: Some(status.as_u16()),
        })
    }
}

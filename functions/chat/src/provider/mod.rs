//! The AI provider behind a small trait: [`OpenAiProvider`] calls an OpenAI-compatible API,
//! [`LocalEcho`] answers offline for local runs.

mod local;
mod openai;

use flowbotz_security::Event;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flowbotz_security::config::Need;
use flowbotz_security::secrets::Secrets;
use flowbotz_security::{ApiError, ConfigError};
use serde::{Deserialize, Serialize};

use crate::config::AiConfig;
pub(crate) use local::LocalEcho;
pub(crate) use openai::OpenAiProvider;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// The server's instructions; only ever from configuration.
    System,
    /// The person chatting.
    User,
    /// The model.
    Assistant,
}

/// One message of the conversation sent to the provider.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Message {
    pub(crate) role: Role,
    pub(crate) content: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("role", &self.role)
            .field("content_chars", &self.content.chars().count())
            .finish()
    }
}

/// A completion request: the system prompt first, then the client's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompletionRequest {
    pub(crate) model: String,
    pub(crate) messages: Vec<Message>,
    pub(crate) max_tokens: u32,
}

/// Token counts, as the provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) total_tokens: u64,
}

/// The assistant's reply.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) content: String,
    /// The model that answered.
    pub(crate) model: String,
    pub(crate) usage: Option<Usage>,
    /// The provider's HTTP status (none for the offline provider).
    pub(crate) upstream_status: Option<u16>,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("content_chars", &self.content.chars().count())
            .field("model", &self.model)
            .field("usage", &self.usage)
            .field("upstream_status", &self.upstream_status)
            .finish()
    }
}

/// Why a provider call failed. The texts are for logs and carry neither the provider's body,
/// the key nor the conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProviderError {
    /// The provider answered 429.
    #[error("AI provider rate limited the call (status 429)")]
    RateLimited {
        /// Seconds to wait, from the provider's `Retry-After` when it sent one.
        retry_after: u64,
    },
    /// The provider answered an error status other than 429.
    #[error("AI provider answered status {status}")]
    Status {
        /// The provider's status.
        status: u16,
    },
    /// A success status with a body that is not a usable chat completion.
    #[error("AI provider reply unusable: {reason}")]
    Malformed {
        /// The provider's status.
        status: u16,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// No complete answer within the configured timeout.
    #[error("AI provider did not answer in time")]
    Timeout,
    /// The provider could not be reached.
    #[error("AI provider unreachable: {0}")]
    Transport(&'static str),
}

impl ProviderError {
    /// The provider's HTTP status, when it answered.
    pub(crate) fn upstream_status(&self) -> Option<u16> {
        match self {
            Self::RateLimited { .. } => Some(429),
            Self::Status { status } | Self::Malformed { status, .. } => Some(*status),
            Self::Timeout | Self::Transport(_) => None,
        }
    }

    /// A short name for the log line.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Status { .. } => "status",
            Self::Malformed { .. } => "malformed",
            Self::Timeout => "timeout",
            Self::Transport(_) => "transport",
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(err: ProviderError) -> Self {
        match err {
            ProviderError::RateLimited { retry_after } => ApiError::ServiceUnavailable {
                reason: err.to_string(),
                retry_after,
            },
            ProviderError::Timeout => ApiError::GatewayTimeout(err.to_string()),
            ProviderError::Status { .. }
            | ProviderError::Malformed { .. }
            | ProviderError::Transport(_) => ApiError::BadGateway(err.to_string()),
        }
    }
}

/// Something that completes a conversation.
#[async_trait]
pub(crate) trait ChatProvider: Send + Sync {
    /// Asks for the assistant's next message.
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError>;
}

/// The provider the configuration asks for: the OpenAI-compatible API when the function has an
/// AI key (`AI_API_KEY_ID`, read at each call from `secrets` so a rotated key is used once
/// fetched), else (development only; the configuration refuses the rest) the offline
/// [`LocalEcho`]. Announces the choice in the start-up log.
pub(crate) fn from_config(
    ai: &AiConfig,
    secrets: &Secrets,
) -> Result<Arc<dyn ChatProvider>, ConfigError> {
    match secrets.snapshot().get(Need::AiApiKey) {
        Some(_) => {
            let provider = OpenAiProvider::new(ai, secrets.clone())?;
            tracing::info!(
                event = Event::AiProvider.as_str(),
                provider = "openai-compatible",
                api_base = %ai.api_base,
                model = %ai.model,
                timeout_ms = ai.timeout.as_millis() as u64,
                "chat uses the OpenAI-compatible provider"
            );
            Ok(Arc::new(provider))
        }
        None => {
            tracing::warn!(
                event = Event::AiProvider.as_str(),
                provider = local::MODEL,
                "AI_API_KEY_ID is not set: chat answers from the offline local-echo provider \
                 (development only; staging and production require AI_API_KEY_ID)"
            );
            Ok(Arc::new(LocalEcho))
        }
    }
}

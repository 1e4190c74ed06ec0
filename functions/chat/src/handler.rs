use std::sync::Arc;
use std::time::Instant;

use flowbotz_security::guard::BodyKind;
use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::{
    ApiError, Ctx, Endpoint, FieldError, Handler, HandlerResult, StoreFailure, validate,
};
use http::{Method, StatusCode};
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use crate::config::AiConfig;
use crate::provider::{ChatProvider, CompletionRequest, Message, Role, Usage};

pub(crate) const ENDPOINT: Endpoint = Endpoint {
    name: "chat",
    route: "/api/ai/chat",
    methods: &[Method::POST],
    body: BodyKind::Json,
    auth: true,
    csrf: true,
    per_user_limit: true,
    store_failure: StoreFailure::Open,
    security_sensitive: true,
    ip_block: true,
};

const MAX_MESSAGES: usize = 50;
const MAX_TOTAL_CHARS: usize = 32_000;

/// What a conversation may hold, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) system_prompt: String,
    pub(crate) default_model: String,
    pub(crate) models: Vec<String>,
    pub(crate) max_tokens: u32,
}

impl From<&AiConfig> for Rules {
    fn from(ai: &AiConfig) -> Self {
        Self {
            system_prompt: ai.system_prompt.clone(),
            default_model: ai.model.clone(),
            models: ai.models.clone(),
            max_tokens: ai.max_tokens,
        }
    }
}

fn client_role(role: &str) -> Result<(), ValidationError> {
    match role {
        "user" | "assistant" => Ok(()),
        _ => Err(ValidationError::new("role").with_message("must be user or assistant".into())),
    }
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    #[validate(custom(function = "client_role"))]
    role: String,
    #[validate(length(min = 1, max = 8000, message = "must be 1 to 8000 characters"))]
    content: String,
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    model: Option<String>,
    #[validate(range(min = 1, message = "must be at least 1"))]
    #[serde(default, deserialize_with = "validate::integer::optional")]
    max_tokens: Option<u32>,
}

#[derive(Serialize)]
struct ReplyMessage<'a> {
    role: Role,
    content: &'a str,
}

#[derive(Serialize)]
struct ChatReply<'a> {
    message: ReplyMessage<'a>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// `POST /api/ai/chat`: validates the conversation, puts the server's system prompt first and
/// asks the provider for the assistant's reply.
pub(crate) struct Chat {
    provider: Arc<dyn ChatProvider>,
    rules: Rules,
}

impl Chat {
    pub(crate) fn new(provider: Arc<dyn ChatProvider>, rules: Rules) -> Self {
        Self { provider, rules }
    }

    /// Checks the request against the rules; every failure becomes one field error.
    fn completion_request(&self, body: &[u8]) -> Result<CompletionRequest, ApiError> {
        let req: ChatRequest = validate::parse(body)?;
        let mut errors = match req.validate() {
            Ok(()) => Vec::new(),
            Err(e) => validate::field_errors(&e),
        };
        if !(1..=MAX_MESSAGES).contains(&req.messages.len()) {
            errors.push(FieldError::new(
                "messages",
                format!("must hold 1 to {MAX_MESSAGES} messages"),
            ));
        } else {
            for (i, m) in req.messages.iter().enumerate() {
                if let Err(e) = m.validate() {
                    errors.extend(
                        validate::field_errors(&e).into_iter().map(|f| {
                            FieldError::new(format!("messages[{i}].{}", f.field), f.message)
                        }),
                    );
                }
            }
            let total: usize = req.messages.iter().map(|m| m.content.chars().count()).sum();
            if total > MAX_TOTAL_CHARS {
                errors.push(FieldError::new(
                    "messages",
                    format!("must hold at most {MAX_TOTAL_CHARS} characters in all"),
                ));
            }
        }
        if let Some(model) = &req.model
            && !self.rules.models.contains(model)
        {
            errors.push(FieldError::new(
                "model",
                format!("must be one of: {}", self.rules.models.join(", ")),
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        messages.push(Message {
            role: Role::System,
            content: self.rules.system_prompt.clone(),
        });
        messages.extend(req.messages.into_iter().map(|m| Message {
            role: if m.role == "assistant" {
                Role::Assistant
            } else {
                Role::User
            },
            content: m.content,
        }));
        Ok(CompletionRequest {
            model: req
                .model
                .unwrap_or_else(|| self.rules.default_model.clone()),
            messages,
            max_tokens: req
                .max_tokens
                .map_or(self.rules.max_tokens, |n| n.min(self.rules.max_tokens)),
        })
    }
}

impl Handler for Chat {
    async fn handle(&self, req: Request, ctx: &mut Ctx) -> HandlerResult {
        let user = ctx
            .user_id
            .clone()
            .ok_or(ApiError::Unauthorized("no user"))?;
        let request = self.completion_request(body_bytes(&req))?;
        let started = Instant::now();
        let result = self.provider.complete(&request).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let completion = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    event = "ai.upstream_failure",
                    request_id = %ctx.request_id,
                    user_id = %user,
                    model = %request.model,
                    upstream_status = e.upstream_status(),
                    latency_ms,
                    kind = e.kind(),
                    "AI provider call failed"
                );
                return Err(e.into());
            }
        };
        let usage = completion.usage;
        tracing::info!(
            event = "ai.completion",
            request_id = %ctx.request_id,
            user_id = %user,
            model = %completion.model,
            upstream_status = completion.upstream_status,
            latency_ms,
            prompt_tokens = usage.map(|u| u.prompt_tokens),
            completion_tokens = usage.map(|u| u.completion_tokens),
            total_tokens = usage.map(|u| u.total_tokens),
            "chat completed"
        );
        Ok(json(
            StatusCode::OK,
            &ChatReply {
                message: ReplyMessage {
                    role: Role::Assistant,
                    content: &completion.content,
                },
                model: &completion.model,
                usage,
            },
        ))
    }
}

#[cfg(test)]
mod tests;

use flowbotz_security::Event;
use std::sync::Arc;
use std::time::Instant;

use flowbotz_security::pipeline::{body_bytes, json};
use flowbotz_security::{
    ApiError, Ctx, Endpoint, EndpointId, FieldError, Handler, HandlerResult, validate,
};
use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use crate::config::AiConfig;
use crate::provider::{ChatProvider, CompletionRequest, Message, ProviderError, Role, Usage};
use flowbotz_security::budget::{Budget, BudgetError};

pub(crate) const ENDPOINT: Endpoint = EndpointId::Chat.endpoint();

const MAX_MESSAGES: usize = 50;
const MAX_TOTAL_CHARS: usize = 32_000;

/// What a conversation may hold, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) system_prompt: String,
    pub(crate) default_model: String,
    pub(crate) models: Vec<String>,
    pub(crate) max_tokens: u32,
    pub(crate) enabled: bool,
}

impl From<&AiConfig> for Rules {
    fn from(ai: &AiConfig) -> Self {
        Self {
            system_prompt: ai.system_prompt.clone(),
            default_model: ai.model.clone(),
            models: ai.models.clone(),
            max_tokens: ai.max_tokens,
            enabled: ai.enabled,
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
/// Tokens a text is counted as when the provider reports no usage: about four characters a
/// token for English, rounded up, plus a few for each message's framing.
pub(crate) fn estimate_tokens(texts: &[&str]) -> u64 {
    texts
        .iter()
        .map(|t| (t.chars().count() as u64).div_ceil(4) + 4)
        .sum()
}

/// The most tokens a prompt can be: a byte-level BPE tokenizer never makes more tokens than
/// UTF-8 bytes, plus each message's framing. Reserved before the call, so admission never
/// rests on an estimate that rare scripts or emoji can exceed several times over.
pub(crate) fn prompt_upper_bound(texts: &[&str]) -> u64 {
    texts.iter().map(|t| t.len() as u64 + 8).sum()
}

pub(crate) struct Chat {
    provider: Arc<dyn ChatProvider>,
    rules: Rules,
    budget: Budget,
}

impl Chat {
    pub(crate) fn new(provider: Arc<dyn ChatProvider>, rules: Rules, budget: Budget) -> Self {
        Self {
            provider,
            rules,
            budget,
        }
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
        if !self.rules.enabled {
            tracing::warn!(event = Event::AiDisabled.as_str(), request_id = %ctx.request_id, "chat refused: AI_ENABLED is false");
            return Err(ApiError::ServiceUnavailable {
                reason: "AI calls are switched off (AI_ENABLED=false)".into(),
                retry_after: 300,
            });
        }
        let prompt: Vec<&str> = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        let prompt_estimate = estimate_tokens(&prompt);
        let worst_case = prompt_upper_bound(&prompt) + u64::from(request.max_tokens);
        let reservation = match self.budget.reserve(&user, &ctx.client_ip, worst_case).await {
            Ok(r) => r,
            Err(BudgetError::Exhausted { scope, retry_after }) => {
                tracing::warn!(
                    event = Event::AiQuotaExceeded.as_str(),
                    request_id = %ctx.request_id,
                    user_id = %user,
                    scope = scope.as_str(),
                    "daily token budget spent"
                );
                return Err(ApiError::QuotaExceeded { retry_after });
            }
            Err(BudgetError::Store(e)) => {
                tracing::error!(event = Event::AiBudgetStoreFailure.as_str(), request_id = %ctx.request_id, cause = %e, "the budget store failed; chat fails closed");
                return Err(ApiError::ServiceUnavailable {
                    reason: "budget store unavailable".into(),
                    retry_after: 1,
                });
            }
        };
        let started = Instant::now();
        let result = self.provider.complete(&request).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let used = match &result {
            Ok(c) => c.usage.map_or_else(
                || prompt_estimate + estimate_tokens(&[c.content.as_str()]),
                |u| u.prompt_tokens.saturating_add(u.completion_tokens),
            ),
            // A call that timed out, or answered something unusable, may still have been
            // billed: keep the worst case. Refused and unreachable calls cost nothing.
            Err(ProviderError::Timeout | ProviderError::Malformed { .. }) => worst_case,
            Err(_) => 0,
        };
        let charged = used;
        if let Err(e) = self.budget.settle(reservation, used).await {
            tracing::error!(event = Event::AiBudgetStoreFailure.as_str(), request_id = %ctx.request_id, cause = %e, "settling the token budget failed; the reservation stands");
        }
        let completion = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    event = Event::AiUpstreamFailure.as_str(),
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
            event = Event::AiCompletion.as_str(),
            request_id = %ctx.request_id,
            user_id = %user,
            model = %completion.model,
            upstream_status = completion.upstream_status,
            latency_ms,
            prompt_tokens = usage.map(|u| u.prompt_tokens),
            completion_tokens = usage.map(|u| u.completion_tokens),
            total_tokens = usage.map(|u| u.total_tokens),
            budget_tokens = charged,
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

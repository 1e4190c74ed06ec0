//! The offline provider of local runs: a deterministic echo, so the whole chat flow works with
//! no network and no key. The configuration refuses it outside development.

use async_trait::async_trait;

use super::{ChatProvider, Completion, CompletionRequest, ProviderError, Role, Usage};

/// The `model` every local-echo reply names.
pub(crate) const MODEL: &str = "local-echo";
/// Most characters of the last user message repeated in the reply.
const ECHO_CHARS: usize = 200;

/// Replies `local-echo: <the last user message, truncated>`, counting tokens as
/// whitespace-separated words.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalEcho;

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[async_trait]
impl ChatProvider for LocalEcho {
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let last = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let echoed: String = last.chars().take(ECHO_CHARS).collect();
        let echoed: Vec<&str> = echoed
            .split_whitespace()
            .take(req.max_tokens.saturating_sub(1) as usize)
            .collect();
        let content = format!("{MODEL}: {}", echoed.join(" "));
        let prompt_tokens = req.messages.iter().map(|m| words(&m.content)).sum();
        let completion_tokens = words(&content);
        Ok(Completion {
            content,
            model: MODEL.into(),
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            }),
            upstream_status: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;

    fn req(messages: &[(Role, &str)], max_tokens: u32) -> CompletionRequest {
        CompletionRequest {
            model: "gpt-4o-mini".into(),
            messages: messages
                .iter()
                .map(|(role, content)| Message {
                    role: *role,
                    content: content.to_string(),
                })
                .collect(),
            max_tokens,
        }
    }

    #[tokio::test]
    async fn given_a_conversation_when_echoing_then_the_last_user_message_is_repeated_with_usage() {
        let r = req(
            &[
                (Role::System, "be nice"),
                (Role::User, "first question"),
                (Role::Assistant, "an answer"),
                (Role::User, "  what about <b>this</b>?  "),
            ],
            1024,
        );
        let a = LocalEcho.complete(&r).await.expect("reply");
        assert_eq!(a.content, "local-echo: what about <b>this</b>?");
        assert_eq!(a.model, MODEL);
        assert_eq!(a.upstream_status, None);
        assert_eq!(
            a.usage,
            Some(Usage {
                prompt_tokens: 2 + 2 + 2 + 3,
                completion_tokens: 4,
                total_tokens: 13
            })
        );
        assert_eq!(LocalEcho.complete(&r).await.expect("reply"), a);
    }

    #[tokio::test]
    async fn given_a_long_message_or_a_small_max_tokens_when_echoing_then_the_reply_is_truncated() {
        let long = "word ".repeat(1000);
        let a = LocalEcho
            .complete(&req(&[(Role::User, &long)], 1024))
            .await
            .expect("reply");
        assert_eq!(a.content, format!("{MODEL}:{}", " word".repeat(40)));
        let a = LocalEcho
            .complete(&req(&[(Role::User, &long)], 3))
            .await
            .expect("reply");
        assert_eq!(a.content, format!("{MODEL}: word word"));
        assert_eq!(a.usage.map(|u| u.completion_tokens), Some(3));
    }
}

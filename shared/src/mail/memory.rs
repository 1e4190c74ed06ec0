//! A [`Mailer`] that records messages, for unit tests and benchmarks.

use std::sync::Mutex;

use async_trait::async_trait;

use super::{MailError, Mailer, Message};

/// Keeps every message sent; can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryMailer {
    sent: Mutex<Vec<Message>>,
    failing: Mutex<bool>,
}

impl MemoryMailer {
    /// A mailer that accepts every message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message sent so far, oldest first.
    pub fn sent(&self) -> Vec<Message> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The messages sent to `to`, oldest first.
    pub fn sent_to(&self, to: &str) -> Vec<Message> {
        self.sent().into_iter().filter(|m| m.to == to).collect()
    }

    /// Makes every later send fail with [`MailError::Unavailable`] (`true`) or succeed.
    pub fn fail(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing;
    }
}

#[async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        if *self.failing.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(MailError::Unavailable("memory mailer told to fail".into()));
        }
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message.clone());
        Ok(())
    }
}

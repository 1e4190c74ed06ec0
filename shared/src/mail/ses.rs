//! Mail through Amazon SES v2 (`SendEmail` with a simple text message).
//!
//! The client is built like the other SDK clients (region and credentials from Lambda's
//! variables, every call bounded, one retry); `AWS_ENDPOINT_URL_SESV2` (else
//! `AWS_ENDPOINT_URL`) points it at a local SES (moto) in development only, as
//! [`crate::config::Config::from_env`] refuses those variables elsewhere.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::config::BehaviorVersion;
use aws_sdk_sesv2::error::{DisplayErrorContext, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent};

use super::{MailError, Mailer, Message};

/// An SES v2 client from the environment, every operation bounded by `timeout`.
pub async fn client(timeout: Duration) -> Client {
    let mut config = aws_sdk_sesv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(crate::aws::region().await)
        .credentials_provider(crate::aws::credentials())
        .timeout_config(crate::aws::timeouts(timeout))
        .retry_config(crate::aws::retries());
    if let Some(url) = crate::aws::endpoint("AWS_ENDPOINT_URL_SESV2") {
        config = config.endpoint_url(url);
    }
    Client::from_conf(config.build())
}

/// Sends mail from one verified sender identity through SES v2.
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: Client,
    from: String,
}

impl SesMailer {
    /// A mailer sending from `from` (`MAIL_FROM`, an identity verified in SES).
    pub fn new(client: Client, from: impl Into<String>) -> Self {
        Self {
            client,
            from: from.into(),
        }
    }
}

fn utf8(data: &str) -> Result<Content, MailError> {
    Content::builder()
        .data(data)
        .charset("UTF-8")
        .build()
        .map_err(|e| MailError::Rejected(e.to_string()))
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        let content = EmailContent::builder()
            .simple(
                aws_sdk_sesv2::types::Message::builder()
                    .subject(utf8(&message.subject)?)
                    .body(Body::builder().text(utf8(&message.text)?).build())
                    .build(),
            )
            .build();
        let sent = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&message.to).build())
            .content(content)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    SendEmailError::MessageRejected(_)
                        | SendEmailError::MailFromDomainNotVerifiedException(_)
                        | SendEmailError::AccountSuspendedException(_)
                        | SendEmailError::SendingPausedException(_)
                        | SendEmailError::BadRequestException(_)
                        | SendEmailError::NotFoundException(_)
                ) =>
            {
                // The error's code only: SES messages can name the recipient.
                Err(MailError::Rejected(
                    e.err().meta().code().unwrap_or("rejected").to_string(),
                ))
            }
            Err(SdkError::ServiceError(e)) => Err(MailError::Unavailable(
                e.err().meta().code().unwrap_or("service error").to_string(),
            )),
            Err(e) => Err(MailError::Unavailable(DisplayErrorContext(e).to_string())),
        }
    }
}

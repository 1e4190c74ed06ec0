//! Mail: the [`Mailer`] trait, the messages the account flows send, and (feature `mail`) Amazon
//! SES v2 through [`ses::SesMailer`].
//!
//! Links put the token in the URL's fragment (`{APP_BASE_URL}/#verify=<token>`,
//! `{APP_BASE_URL}/#reset=<token>`): a browser never sends a fragment to a server, so a token
//! reaches no access log and no `Referer` header. A [`Message`]'s `Debug` shows neither its
//! recipient nor its text, so a logged message leaks no token; log the event name instead.

pub mod memory;
#[cfg(feature = "mail")]
pub mod ses;

use crate::events::Event;
use async_trait::async_trait;

/// The application's links that carry a one-time token (from `APP_BASE_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    base: String,
}

impl Links {
    /// Links under `app_base_url` (a trailing `/` is dropped).
    pub fn new(app_base_url: &str) -> Self {
        Self {
            base: app_base_url.trim_end_matches('/').to_string(),
        }
    }

    /// `{base}/#verify=<token>`.
    pub fn verify(&self, token: &str) -> String {
        format!("{}/#verify={token}", self.base)
    }

    /// `{base}/#reset=<token>`.
    pub fn reset(&self, token: &str) -> String {
        format!("{}/#reset={token}", self.base)
    }
}

/// One plain-text mail to one recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body (may hold a one-time token: never log it).
    pub text: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a mail was not sent. The text is the service's, never the message's.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MailError {
    /// The mail service refused the message (an unverified sender, a suppressed recipient).
    #[error("mail rejected: {0}")]
    Rejected(String),
    /// The mail service could not be reached or did not answer in time.
    #[error("mail service unavailable: {0}")]
    Unavailable(String),
}

/// Sends mail.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends `message`, one request to the mail service.
    async fn send(&self, message: &Message) -> Result<(), MailError>;
}

/// Sends `message` for the request `request_id`. A failure is logged as an ERROR with the event
/// `mail.send_failed` (the service's reason only: never the recipient, subject or text, which
/// may hold a token) and swallowed, so the caller answers exactly as it would have and reveals
/// nothing; repeating the request sends again. Returns whether the mail was sent.
pub async fn send_or_log(mailer: &dyn Mailer, message: &Message, request_id: &str) -> bool {
    match mailer.send(message).await {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(request_id = %request_id, event = Event::MailSendFailed.as_str(), cause = %err, "mail not sent");
            false
        }
    }
}

/// The subject of the verification mail.
pub const VERIFY_SUBJECT: &str = "Confirm your email address for FlowBotz";
/// The subject of the mail to an address that already has an account.
pub const EXISTING_SUBJECT: &str = "You already have a FlowBotz account";
/// The subject of the reset mail.
pub const RESET_SUBJECT: &str = "Reset your FlowBotz password";
/// The subject of the reset notice to an address without an account.
pub const NO_ACCOUNT_SUBJECT: &str = "FlowBotz password reset request";

/// The verification mail: the link that proves the mailbox, with the password chosen at
/// registration.
pub fn verification(to: &str, links: &Links, token: &str) -> Message {
    Message {
        to: to.to_string(),
        subject: VERIFY_SUBJECT.into(),
        text: format!(
            "Someone, hopefully you, registered a FlowBotz account with this address.\n\n\
             To confirm it, open this link within 24 hours and enter the password you chose:\n\n\
             {}\n\n\
             If you did not register, ignore this mail: no account is created without this link \
             and its password.\n",
            links.verify(token)
        ),
    }
}

/// The mail to an address that already has a verified account, sent when someone registers it
/// again: no second account, and a reset link in case the owner forgot the password.
pub fn existing_account(to: &str, links: &Links, reset_token: &str) -> Message {
    Message {
        to: to.to_string(),
        subject: EXISTING_SUBJECT.into(),
        text: format!(
            "Someone, hopefully you, tried to register a FlowBotz account with this address, \
             which already has one. No new account was created.\n\n\
             Sign in with your password. If you forgot it, set a new one within 1 hour here:\n\n\
             {}\n\n\
             If this was not you, ignore this mail: your account is unchanged.\n",
            links.reset(reset_token)
        ),
    }
}

/// The password reset mail for an account.
pub fn reset(to: &str, links: &Links, token: &str) -> Message {
    Message {
        to: to.to_string(),
        subject: RESET_SUBJECT.into(),
        text: format!(
            "Someone, hopefully you, asked to reset the password of the FlowBotz account of \
             this address.\n\n\
             To choose a new password, open this link within 1 hour:\n\n\
             {}\n\n\
             Setting a new password signs out every session of the account. If you did not \
             ask for this, ignore this mail: your password is unchanged.\n",
            links.reset(token)
        ),
    }
}

/// The notice to an address without an account when someone asked to reset its password.
pub fn no_account(to: &str) -> Message {
    Message {
        to: to.to_string(),
        subject: NO_ACCOUNT_SUBJECT.into(),
        text: "Someone asked to reset the password of a FlowBotz account for this address, but \
               there is no account with this address, so nothing was changed.\n\n\
               If this was you, you may have registered with another address. If not, ignore \
               this mail.\n"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_tokens_when_building_mails_then_links_carry_them_in_the_fragment() {
        let links = Links::new("https://app.example.test");
        let m = verification("ada@example.com", &links, "tok123");
        assert!(m.text.contains("https://app.example.test/#verify=tok123"));
        assert_eq!(m.to, "ada@example.com");
        let m = existing_account("ada@example.com", &links, "r1");
        assert!(m.text.contains("https://app.example.test/#reset=r1"));
        assert!(!m.text.contains("#verify="));
        assert!(
            reset("a@b.example", &links, "r2")
                .text
                .contains("/#reset=r2")
        );
        let n = no_account("a@b.example");
        assert!(!n.text.contains("http"));
        assert_ne!(m.subject, n.subject);
    }

    #[test]
    fn given_a_message_when_debug_printed_then_no_recipient_or_body() {
        let links = Links::new("https://app.example.test/");
        let m = verification("ada@example.com", &links, "secret-token");
        let dbg = format!("{m:?}");
        assert!(
            !dbg.contains("secret-token") && !dbg.contains("ada@"),
            "{dbg}"
        );
        assert_eq!(links.verify("t"), "https://app.example.test/#verify=t");
    }
}

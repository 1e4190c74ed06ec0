//! The local SES mailbox: every message moto_server accepted, read from
//! `GET /moto-api/data.json` (`ses` → `Message`), as `scripts/mailbox.py` prints them.

use std::time::Duration;

use serde_json::Value;

/// One mail as the local SES kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The sender address.
    pub from: String,
    /// The subject line.
    pub subject: String,
    /// The text body.
    pub text: String,
}

impl Mail {
    /// The token of the first `#<purpose>=<token>` link in the body (`verify`, `reset`).
    pub fn link_token(&self, purpose: &str) -> Option<String> {
        link_token(&self.text, purpose)
    }
}

/// The token of the first `#<purpose>=<token>` link in `text`: the base64url characters after
/// the marker.
pub fn link_token(text: &str, purpose: &str) -> Option<String> {
    let marker = format!("#{purpose}=");
    let start = text.find(&marker)? + marker.len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// The moto endpoint that holds the mailbox (`AWS_ENDPOINT_URL_SESV2`, else the DynamoDB one:
/// the same process).
pub fn moto_url() -> String {
    std::env::var("AWS_ENDPOINT_URL_SESV2").unwrap_or_else(|_| crate::stack::dynamodb_url())
}

/// Every mail sent to `to`, oldest first.
///
/// # Panics
/// If the local SES cannot be read within 60 seconds (moto serialises all its state for it).
pub async fn mailbox(to: &str) -> Vec<Mail> {
    // One read at a time per test process: each read stalls moto (it serialises all its state),
    // and two at once stall it twice as long.
    static ONE_READ: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE_READ.lock().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let data: Value = client
        .get(format!("{}/moto-api/data.json", moto_url()))
        .send()
        .await
        .expect("moto's data.json")
        .json()
        .await
        .expect("json");
    let text = |m: &Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    data["ses"]["Message"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["destinations"]["ToAddresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d.as_str() == Some(to)))
        })
        .map(|m| Mail {
            from: text(m, "source"),
            subject: text(m, "subject"),
            text: text(m, "body"),
        })
        .collect()
}

/// Waits up to `within` for at least `count` mails to `to`, and returns them all.
///
/// # Panics
/// If fewer arrive in time.
pub async fn wait_for_mail(to: &str, count: usize, within: Duration) -> Vec<Mail> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mails = mailbox(to).await;
        if mails.len() >= count {
            return mails;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} mail(s) to {to} expected, {} arrived",
            mails.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::link_token;

    #[test]
    fn given_a_body_when_extracting_then_the_token_of_the_purpose() {
        let text = "open http://localhost:5173/#verify=AbC-_9x\nor #reset=zz.";
        assert_eq!(link_token(text, "verify").as_deref(), Some("AbC-_9x"));
        assert_eq!(link_token(text, "reset").as_deref(), Some("zz"));
        assert_eq!(link_token("#verify=", "verify"), None);
        assert_eq!(link_token(text, "other"), None);
    }
}

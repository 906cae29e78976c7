//! One delivery attempt of one event: the body is serialised once, signed
//! as fired requests are, and sent to each destination that does not have
//! it yet (the global URL, the task's URL, the SNS topic).

use std::time::Duration;

use chrono::Utc;

use super::Notifier;
use crate::fire::signing::SIGNATURE_HEADER;
use crate::store::{DeliveryOutcome, PendingNotification};

/// Destination labels, as stored in `notifications.delivered`.
const GLOBAL_URL: &str = "url";
const TASK_URL: &str = "task_url";
const SNS: &str = "sns";

/// Header naming the event type, so receivers can route before parsing.
pub const EVENT_HEADER: &str = "Sundial-Event";

/// Where an event goes.
enum Destination<'a> {
    Url(&'a str),
    Sns(&'a aws_sdk_sns::Client, &'a str),
}

impl Notifier {
    /// Delivers `event` to every destination that lacks it.
    pub(super) async fn deliver(
        &self,
        event: PendingNotification,
        timeout: Duration,
    ) -> DeliveryOutcome {
        let body = event_body(&event);
        let mut delivered = Vec::new();
        let mut errors = Vec::new();
        for (label, destination) in self.destinations(&event) {
            let sent = match destination {
                Destination::Url(url) => self.post(url, &event, &body, timeout).await,
                Destination::Sns(client, arn) => publish(client, arn, &event, &body, timeout).await,
            };
            match sent {
                Ok(()) => delivered.push(label.to_string()),
                Err(err) => errors.push(format!("{label}: {err}")),
            }
        }
        let complete = errors.is_empty();
        let give_up = !complete && event.attempts >= self.settings.max_attempts;
        let error = (!complete).then(|| errors.join("; "));
        if let Some(error) = &error {
            if give_up {
                tracing::error!(notification = event.id, kind = %event.kind, task_id = event.task_id,
                    attempts = event.attempts, %error, "notification failed; giving up");
            } else {
                tracing::warn!(notification = event.id, kind = %event.kind, task_id = event.task_id,
                    attempts = event.attempts, %error, "notification failed; retrying");
            }
        } else {
            tracing::info!(notification = event.id, kind = %event.kind, task_id = event.task_id,
                "notification sent");
        }
        let retry_in = chrono::Duration::from_std(self.backoff(event.attempts)).unwrap_or_default();
        DeliveryOutcome {
            id: event.id,
            delivered,
            complete,
            give_up,
            retry_at: Utc::now() + retry_in,
            error,
        }
    }

    /// The destinations configured for `event` that do not have it yet.
    fn destinations<'a>(
        &'a self,
        event: &'a PendingNotification,
    ) -> Vec<(&'static str, Destination<'a>)> {
        let global = self.settings.url.as_deref();
        let mut out = Vec::new();
        if let Some(url) = global {
            out.push((GLOBAL_URL, Destination::Url(url)));
        }
        // The same URL twice would get every event twice.
        if let Some(url) = event.notify_url.as_deref().filter(|u| Some(*u) != global) {
            out.push((TASK_URL, Destination::Url(url)));
        }
        if let (Some(client), Some(arn)) = (&self.sns, self.settings.topic_arn.as_deref()) {
            out.push((SNS, Destination::Sns(client, arn)));
        }
        out.retain(|(label, _)| !event.delivered.iter().any(|d| d == label));
        out
    }

    /// POSTs the signed body; a 2xx answer is delivery.
    async fn post(
        &self,
        url: &str,
        event: &PendingNotification,
        body: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let key = format!("notification:{}", event.id);
        let mut request = self
            .client
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &key)
            .header(EVENT_HEADER, &event.kind);
        let covered = crate::fire::signing::Covered::key_only(&key);
        if let Some(signature) = self
            .signer
            .sign(&covered, body.as_bytes(), Utc::now().timestamp())
        {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let response = request
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// The JSON sent: the stored payload with the event's `id`.
fn event_body(event: &PendingNotification) -> String {
    let mut payload = event.payload.0.clone();
    if let Some(object) = payload.as_object_mut() {
        object.insert("id".into(), serde_json::json!(format!("evt_{}", event.id)));
    }
    payload.to_string()
}

/// Publishes the body to the topic, with the event type as an attribute
/// (so subscriptions can filter on it).
async fn publish(
    client: &aws_sdk_sns::Client,
    topic_arn: &str,
    event: &PendingNotification,
    body: &str,
    timeout: Duration,
) -> Result<(), String> {
    let attribute = aws_sdk_sns::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value(&event.kind)
        .build()
        .map_err(|e| e.to_string())?;
    let publish = client
        .publish()
        .topic_arn(topic_arn)
        .message(body)
        .message_attributes("type", attribute)
        .send();
    match tokio::time::timeout(timeout, publish).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(format!(
            "SNS publish failed: {}",
            aws_sdk_sns::error::DisplayErrorContext(&err)
        )),
        Err(_) => Err(format!("SNS publish timed out after {timeout:?}")),
    }
}

/// A transport error in a few words (never the URL's query: it may hold a token).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(err);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

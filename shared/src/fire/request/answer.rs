//! What came back: the status and `Retry-After`, which decide the verdict,
//! and at most [`EXCERPT_BYTES`] of the body, read within what is left of
//! the timeout (a slow or broken body is noted, not fatal).

use chrono::Utc;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;

use super::{parse_retry_after, Answer, Firer, Prepared, SendError, EXCERPT_BYTES};
use crate::fire::reply::Reply;
use crate::sanitise::{body_excerpt, BodyInfo};

impl Firer {
    /// Sends the request (following redirects) and reads what came back.
    pub(super) async fn exchange(
        &self,
        prepared: Prepared,
        deadline: Instant,
    ) -> Result<Answer, SendError> {
        let mut response = self.send_following(prepared, deadline).await?;

        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));

        // The target has answered: its status decides the verdict even if
        // the body is slow or broken, so reading the body gets what is left
        // of the timeout and its failure is only noted.
        let (excerpt, body_error) =
            match tokio::time::timeout_at(deadline, self.read_excerpt(&mut response)).await {
                Ok((excerpt, None)) => (excerpt, None),
                Ok((excerpt, Some(e))) => (excerpt, Some(format!("reading body: {e}"))),
                Err(_) => (None, Some("timed out reading response body".to_owned())),
            };
        Ok(Answer {
            status,
            retry_after,
            excerpt,
            body_error,
        })
    }

    /// Read up to `max_body_bytes`, keeping only the first [`EXCERPT_BYTES`]:
    /// memory per request stays at one chunk plus the excerpt. The excerpt
    /// is sanitised text, or a description of a binary body
    /// ([`crate::sanitise::body_excerpt`]).
    async fn read_excerpt(&self, response: &mut Reply) -> (Option<String>, Option<String>) {
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let content_type = header(CONTENT_TYPE);
        let content_encoding = header(CONTENT_ENCODING);
        let mut excerpt = Vec::new();
        let mut read = 0usize;
        let mut error = None;
        while read < self.max_body_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = EXCERPT_BYTES.saturating_sub(excerpt.len());
                    excerpt.extend_from_slice(&chunk[..room.min(chunk.len())]);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let info = BodyInfo {
            content_type: content_type.as_deref(),
            content_encoding: content_encoding.as_deref(),
            bytes_read: read,
            cut_off: error.is_some() || read >= self.max_body_bytes,
        };
        let excerpt = (!excerpt.is_empty()).then(|| body_excerpt(&excerpt, info, EXCERPT_BYTES));
        (excerpt, error)
    }
}

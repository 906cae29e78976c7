//! What a failed call means ([`classify_error`]: retry, give up, refused,
//! a certificate problem), how it is described on the run, and the timing
//! of the next attempt (`Retry-After`, backoff with full jitter).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Verdict, MAX_RETRY_AFTER};
use crate::fire::guard::GuardError;

/// Find the guard's verdict inside reqwest's error chain (the resolver's
/// and redirect policy's errors arrive wrapped).
pub(super) fn guard_error(err: &reqwest::Error) -> Option<&GuardError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(g) = e.downcast_ref::<GuardError>() {
            return Some(g);
        }
        source = e.source();
    }
    None
}

pub(super) fn classify_error(err: &reqwest::Error) -> Verdict {
    match guard_error(err) {
        Some(GuardError::TooManyRedirects { .. }) => return Verdict::Failed,
        // DNS failures are transient as often as not: retry them.
        Some(GuardError::Resolve { .. } | GuardError::NoAddresses { .. }) => {
            return Verdict::Retryable {
                retry_after: None,
                timed_out: false,
            }
        }
        Some(_) => return Verdict::Refused,
        None => {}
    }
    if err.is_timeout() {
        Verdict::Retryable {
            retry_after: None,
            timed_out: true,
        }
    } else if err.is_builder() || err.is_redirect() || is_certificate_error(err) {
        Verdict::Failed
    } else {
        // Connect, send and protocol errors: the target may never have seen
        // the request, and delivery is at-least-once.
        Verdict::Retryable {
            retry_after: None,
            timed_out: false,
        }
    }
}

/// Did the TLS handshake fail because the server's certificate did not
/// verify? (As opposed to the connection dropping mid-handshake, which is
/// retryable like any connect error.)
pub(super) fn is_certificate_error(err: &reqwest::Error) -> bool {
    use tokio_rustls::rustls::Error as Tls;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<Tls>() {
            return matches!(
                tls,
                Tls::InvalidCertificate(_) | Tls::NoCertificatesPresented
            );
        }
        // The connector reports handshake failures as an `io::Error`
        // wrapping (an `io::Error` wrapping) the rustls error, and
        // `io::Error::source` skips the wrapped error: descend into it.
        source = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// The error and its causes, without the URL (its query may hold tokens).
pub(super) fn describe_error(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Cut `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Parse a `Retry-After` value: delta-seconds or an HTTP-date (IMF-fixdate,
/// RFC 2822 style). Dates in the past give zero; anything above
/// [`MAX_RETRY_AFTER`] is capped. `None` when unparseable.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = DateTime::parse_from_rfc2822(value)
            .ok()?
            .with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Delay before retry number `attempt` (0 for the first retry): exponential
/// backoff `base * 2^attempt` capped at `max`, with full jitter (uniform in
/// `0..=ceiling`, which spreads a burst of failures best), but never less
/// than the target's `Retry-After`.
pub fn retry_delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let ceiling = 2u32
        .checked_pow(attempt)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |d| d.min(max));
    let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    let jittered = Duration::from_nanos(rand::random_range(0..=ceiling_nanos));
    jittered.max(retry_after.unwrap_or(Duration::ZERO))
}

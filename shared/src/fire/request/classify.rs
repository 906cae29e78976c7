//! What a failed call means ([`classify_error`]: retry, give up, refused,
//! a certificate problem), how it is described on the run, and the timing
//! of the next attempt (`Retry-After`, backoff with full jitter).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Verdict, MAX_RETRY_AFTER};
use crate::fire::direct::DirectError;
use crate::fire::guard::GuardError;

type DynError = dyn std::error::Error + 'static;

/// The error and its causes, descending into `io::Error`s (whose `source`
/// skips the error they wrap: connectors report rustls errors that way).
fn chain(err: &DynError) -> impl Iterator<Item = &DynError> {
    std::iter::successors(Some(err), |e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &DynError),
        None => e.source(),
    })
}

/// Find the guard's verdict inside an error chain (the resolver's and
/// redirect policy's errors arrive wrapped).
fn guard_error(err: &DynError) -> Option<&GuardError> {
    chain(err).find_map(|e| e.downcast_ref::<GuardError>())
}

/// What a guard refusal means: too many redirects and a refused address
/// are final; a DNS lookup that failed is transient as often as not.
fn guard_verdict(err: &GuardError) -> Verdict {
    match err {
        GuardError::TooManyRedirects { .. } => Verdict::Failed,
        GuardError::Resolve { .. } | GuardError::NoAddresses { .. } => Verdict::Retryable {
            retry_after: None,
            timed_out: false,
        },
        _ => Verdict::Refused,
    }
}

const RETRYABLE: Verdict = Verdict::Retryable {
    retry_after: None,
    timed_out: false,
};

pub(super) fn classify_error(err: &reqwest::Error) -> Verdict {
    if let Some(guard) = guard_error(err) {
        return guard_verdict(guard);
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
        RETRYABLE
    }
}

/// [`classify_error`] for the direct HTTP/2 path, by the same rules.
pub(super) fn classify_direct(err: &DirectError) -> Verdict {
    match err {
        DirectError::Guard(guard) => guard_verdict(guard),
        DirectError::ConnectTimeout => Verdict::Retryable {
            retry_after: None,
            timed_out: true,
        },
        DirectError::Request(_) => Verdict::Failed,
        DirectError::Tls(_) if is_certificate_error(err) => Verdict::Failed,
        DirectError::Tls(_)
        | DirectError::Connect(_)
        | DirectError::Http2(_)
        | DirectError::Http1(_) => RETRYABLE,
    }
}

/// Did the TLS handshake fail because the server's certificate did not
/// verify? (As opposed to the connection dropping mid-handshake, which is
/// retryable like any connect error.)
pub(super) fn is_certificate_error(err: &DynError) -> bool {
    use tokio_rustls::rustls::Error as Tls;
    chain(err)
        .find_map(|e| e.downcast_ref::<Tls>())
        .is_some_and(|tls| {
            matches!(
                tls,
                Tls::InvalidCertificate(_) | Tls::NoCertificatesPresented
            )
        })
}

/// The error and its causes, without the URL (its query may hold tokens).
pub(in crate::fire) fn describe_error(err: reqwest::Error) -> String {
    describe_chain(&err.without_url())
}

/// An error and each of its causes not already in the text, `: `-joined.
pub(in crate::fire) fn describe_chain(err: &DynError) -> String {
    let mut text = String::new();
    for e in chain(err) {
        let part = e.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
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

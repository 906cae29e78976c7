//! Firing one request and classifying what happened.
//!
//! [`Firer::fire`] never fails: every outcome, including a malformed task or
//! a guard refusal, becomes a [`FireResult`] whose [`Verdict`] tells the
//! processor whether to record success, retry later, or give up.
//!
//! The steps of a call, one file each: `prepare` (method, URL, headers,
//! the signature), `redirect` (each hop sent and checked by hand), `answer`
//! (the status, `Retry-After` and a bounded excerpt of the body), and
//! `classify` (what a failed call means, and when to try again).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use url::Url;

use super::client::{build_watched_client, tls_config, ClientOptions};
use super::direct::Direct;
use super::guard::{GuardError, TargetGuard};
use super::signing::Signer;
use super::warmup::Warmup;
use super::FireError;
use crate::sanitise::clean_text;

mod answer;
mod classify;
mod prepare;
mod redirect;

use classify::{classify_direct, classify_error, describe_error};
pub(super) use classify::{describe_chain, describe_error as describe_reqwest_error};
pub use classify::{parse_retry_after, retry_delay, truncate_utf8};

/// Header carrying `<task id>:<occurrence>` so targets can deduplicate.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Default number of response-body bytes read before the connection is dropped.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Length cap of [`FireResult::error`] and [`FireResult::response_excerpt`].
pub const EXCERPT_BYTES: usize = 1024;

/// Longest `Retry-After` honoured; a target asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);

/// One HTTP call to make.
#[derive(Debug, Clone)]
pub struct FireRequest {
    /// HTTP method (case-insensitive).
    pub method: String,
    /// Target URL (http or https).
    pub url: String,
    /// Extra headers. `Idempotency-Key`, `Sundial-Signature` and framing
    /// headers (`Host`, `Content-Length`, `Transfer-Encoding`, `Connection`)
    /// are Sundial's and are dropped if given here.
    pub headers: Vec<(String, String)>,
    /// Request body; `Content-Type: application/json` is added unless a
    /// content type is given.
    pub body: Option<String>,
    /// Covers connect, send and reading the response body.
    pub timeout: Duration,
    /// Sent as `Idempotency-Key` (`<task id>:<occurrence>`).
    pub idempotency_key: String,
    /// The flow the request counts against ([`crate::flow`]); `None`: the
    /// URL's `host:port`.
    pub flow: Option<String>,
    /// What the request fires, sent as `Sundial-Trigger`,
    /// `Sundial-Attempt` and `Sundial-Scheduled-For` (signed with the
    /// rest); `None` sends none of them (bench sinks).
    pub fired_for: Option<FiredFor>,
}

/// The occurrence and attempt a request fires, for the `Sundial-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiredFor {
    /// `Sundial-Trigger`.
    pub trigger: crate::trigger::Trigger,
    /// `Sundial-Attempt`, 1 for the first.
    pub attempt: u32,
    /// `Sundial-Scheduled-For`: the occurrence.
    pub scheduled_for: DateTime<Utc>,
}

/// What to do about an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The target answered 2xx.
    Succeeded,
    /// Worth trying again: 429, 408, 5xx, timeouts, connection errors (the
    /// target may never have seen the request). `retry_after` is the
    /// target's `Retry-After` (delta-seconds or HTTP-date) capped at
    /// [`MAX_RETRY_AFTER`]; `timed_out` marks a timeout (recorded as
    /// `timed_out` rather than `failed`).
    Retryable {
        /// Minimum wait the target asked for.
        retry_after: Option<Duration>,
        /// The request ran out of time (connect or overall timeout).
        timed_out: bool,
    },
    /// Retrying cannot help: other 4xx, a 3xx that was not followed (no
    /// `Location`, 304, too many hops), an invalid method/header/URL, or a
    /// TLS certificate that does not verify (expired, wrong name, unknown
    /// issuer): that is a configuration fault of the target or of
    /// `SUNDIAL_EXTRA_CA_FILE`, not a hiccup, and retrying within the
    /// backoff window would only hammer the target. The schedule moves on;
    /// the next occurrence tries again.
    Failed,
    /// The target guard refused the URL, a non-http(s) scheme, or an address
    /// the host resolves or redirects to. Never retried: the answer will not
    /// change by itself. (A DNS lookup that *fails* is `Retryable`.)
    Refused,
}

impl Verdict {
    /// Classify an HTTP status that the target answered with.
    pub fn from_status(status: StatusCode, retry_after: Option<Duration>) -> Self {
        if status.is_success() {
            Verdict::Succeeded
        } else if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            Verdict::Retryable {
                retry_after,
                timed_out: false,
            }
        } else {
            Verdict::Failed
        }
    }

    /// Should the processor schedule another attempt?
    pub fn is_retryable(&self) -> bool {
        matches!(self, Verdict::Retryable { .. })
    }
}

/// The outcome of one [`Firer::fire`].
#[derive(Debug, Clone)]
pub struct FireResult {
    /// When the attempt began (wall clock, for `fired_at`).
    pub started_at: DateTime<Utc>,
    /// Time until the outcome was known (including reading the body excerpt).
    pub latency: Duration,
    /// What to do about it.
    pub verdict: Verdict,
    /// HTTP status, when the target answered.
    pub http_status: Option<u16>,
    /// Error description, at most [`EXCERPT_BYTES`], sanitised
    /// ([`crate::sanitise::clean_text`]); never contains header values or
    /// the URL (either may carry credentials).
    pub error: Option<String>,
    /// First [`EXCERPT_BYTES`] of the response body as sanitised text, or a
    /// description such as `<binary, 5.2 KiB, image/png>`, if any.
    pub response_excerpt: Option<String>,
}

/// Fires requests: the client, the signer and the guard, built once.
#[derive(Debug, Clone)]
pub struct Firer {
    client: reqwest::Client,
    signer: Arc<Signer>,
    guard: Arc<TargetGuard>,
    max_body_bytes: usize,
    max_redirects: usize,
    /// Set when the client reports its connects here ([`Self::build`]).
    warmup: Option<Arc<Warmup>>,
    /// HTTPS origins on `h2` and hyper's HTTP/1.1 connections directly
    /// ([`Self::build`], unless [`ClientOptions::direct_https`] is off).
    direct: Option<Arc<Direct>>,
}

/// A request that passed local validation, ready to send.
struct Prepared {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<String>,
    /// The signature's timestamp, for re-signing when a redirect drops the body.
    signed_at: i64,
    /// The values of the signed headers, for the same.
    covered: [String; 4],
}

/// What came back from the target before the body was consumed.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    excerpt: Option<String>,
    body_error: Option<String>,
}

impl Firer {
    /// A firer over an existing client. `client` must have been built by
    /// [`build_http_client`](super::build_http_client) with the same `guard`, or connect-time checks
    /// are lost (and redirects would be followed by reqwest, not by the
    /// firer's [redirect policy](Self::with_max_redirects)).
    pub fn new(client: reqwest::Client, signer: Signer, guard: Arc<TargetGuard>) -> Self {
        Self {
            client,
            signer: Arc::new(signer),
            guard,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_redirects: ClientOptions::default().max_redirects,
            warmup: None,
            direct: None,
        }
    }

    /// Build the client and the firer together (the usual way).
    pub fn build(
        guard: Arc<TargetGuard>,
        signer: Signer,
        opts: &ClientOptions,
    ) -> Result<Self, FireError> {
        let warmup = Arc::new(Warmup::new(opts.pool_idle_timeout, opts.connect_timeout));
        let client = build_watched_client(Arc::clone(&guard), opts, &warmup)?;
        let direct = match opts.direct_https {
            true => Some(Arc::new(Direct::new(
                tls_config(opts)?,
                Arc::clone(&guard),
                opts.connect_timeout,
                opts.pool_idle_timeout,
                opts.concurrency,
                Some(Arc::clone(&warmup)),
            ))),
            false => None,
        };
        let firer = Self::new(client, signer, guard).with_max_redirects(opts.max_redirects);
        Ok(Self {
            warmup: Some(warmup),
            direct,
            ..firer
        })
    }

    /// The warm-up of cold HTTPS origins, if the client reports to one
    /// (built by [`Self::build`]); the pool consults it.
    pub fn warmup(&self) -> Option<&Arc<Warmup>> {
        self.warmup.as_ref()
    }

    /// Follow at most this many redirects (default 3). Every hop's URL
    /// passes the guard; a hop to another origin (scheme, host or port)
    /// carries none of the task's headers and no `Idempotency-Key` or
    /// signature, and neither does any hop after it.
    pub fn with_max_redirects(mut self, max_redirects: usize) -> Self {
        self.max_redirects = max_redirects;
        self
    }

    /// Read at most this many response-body bytes (default 64 KiB). Bodies
    /// within the cap are drained so the connection returns to the pool;
    /// longer ones are cut off by dropping the connection.
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// The process's HTTP client (shared by the notifier: one per process).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The signer (notifications are signed as fired requests are).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The guard this firer enforces.
    pub fn guard(&self) -> &TargetGuard {
        &self.guard
    }

    /// Fire one request; see [`Verdict`] for the classification.
    pub async fn fire(&self, req: &FireRequest) -> FireResult {
        let started_at = Utc::now();
        let start = Instant::now();
        let deadline = start + req.timeout;
        let finish = |verdict, http_status, error: Option<String>, excerpt| FireResult {
            started_at,
            latency: start.elapsed(),
            verdict,
            http_status,
            error: error.map(|e| clean_text(&e, EXCERPT_BYTES)),
            response_excerpt: excerpt,
        };

        let prepared = match self.prepare(req, started_at.timestamp()) {
            Ok(p) => p,
            Err(FireError::Guard(e)) => {
                return finish(Verdict::Refused, None, Some(e.to_string()), None)
            }
            Err(e) => return finish(Verdict::Failed, None, Some(e.to_string()), None),
        };

        match self.exchange(prepared, deadline).await {
            Ok(answer) => {
                let verdict = Verdict::from_status(answer.status, answer.retry_after);
                finish(
                    verdict,
                    Some(answer.status.as_u16()),
                    answer.body_error,
                    answer.excerpt,
                )
            }
            Err(SendError::TimedOut) => finish(
                Verdict::Retryable {
                    retry_after: None,
                    timed_out: true,
                },
                None,
                Some(format!("timed out after {} ms", req.timeout.as_millis())),
                None,
            ),
            Err(SendError::Http(e)) => {
                let verdict = classify_error(&e);
                finish(verdict, None, Some(describe_error(e)), None)
            }
            Err(SendError::Direct(e)) => {
                finish(classify_direct(&e), None, Some(describe_chain(&e)), None)
            }
            Err(SendError::Guard(e)) => {
                let verdict = match e {
                    GuardError::TooManyRedirects { .. } => Verdict::Failed,
                    _ => Verdict::Refused,
                };
                finish(verdict, None, Some(e.to_string()), None)
            }
        }
    }
}

enum SendError {
    TimedOut,
    Http(reqwest::Error),
    /// Dialling or sending on a direct HTTP/2 connection failed.
    Direct(super::direct::DirectError),
    /// A redirect hop the guard refused, or one hop too many.
    Guard(GuardError),
}

#[cfg(test)]
mod tests;

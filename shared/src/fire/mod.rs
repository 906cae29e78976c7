//! The HTTP firing engine: everything between "this occurrence is due" and
//! "this is what the endpoint answered".
//!
//! * [`guard`] keeps targets off loopback, private and metadata addresses,
//!   at registration and again at connect time;
//! * [`signing`] adds the `Sundial-Signature` HMAC header receivers verify;
//! * [`client`] builds the one `reqwest::Client` a process uses;
//! * `direct` sends requests to HTTP/2 origins on hyper, without reqwest's
//!   per-request layers (the memory of a request in flight);
//! * [`request`] fires one request and classifies the outcome ([`Verdict`]);
//! * [`pool`] fires a stream of requests with bounded global and per-host
//!   concurrency and a deadline guard, yielding results as they finish;
//! * [`warmup`] sends the first request to a cold HTTPS origin ahead of the
//!   rest of a burst, so an HTTP/2 host gets one connection, not one each.
//!
//! The processor owns queue messages and write-back; it builds a [`Firer`]
//! once per cold start and feeds [`pool::fire_stream`].

pub mod client;
mod direct;
pub mod guard;
mod http1;
mod http2;
pub mod pool;
mod reply;
pub mod request;
pub mod signing;
pub mod warmup;

pub use client::{build_http_client, ClientOptions};
pub use guard::{GuardError, GuardedResolver, TargetGuard};
pub use pool::{fire_stream, Fired, Limits};
pub use request::{
    parse_retry_after, retry_delay, FireRequest, FireResult, FiredFor, Firer, Verdict,
};
pub use signing::{verify, Covered, Signer, SigningError, SIGNATURE_HEADER, SIGNED_HEADERS};

/// Errors of building the HTTP client and of preparing a request.
///
/// [`Firer::fire`] never returns these: it folds them into a
/// [`FireResult`] (`Verdict::Failed`, or `Verdict::Refused` for
/// [`FireError::Guard`]) so one bad task cannot fail a batch.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// reqwest could not build the client (TLS backend initialisation).
    #[error("cannot build HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The TLS configuration could not be built (the platform's roots, or
    /// an extra root that is not a usable CA certificate).
    #[error("cannot build TLS configuration: {0}")]
    Tls(#[source] tokio_rustls::rustls::Error),
    /// The task's method is not a valid HTTP method token.
    #[error("invalid HTTP method {method:?}")]
    InvalidMethod {
        /// The method as stored on the task.
        method: String,
    },
    /// A header name is not a valid HTTP token.
    #[error("invalid header name {name:?}")]
    InvalidHeaderName {
        /// The header name as stored on the task.
        name: String,
    },
    /// A header value contains bytes HTTP forbids. The value itself is never
    /// echoed: headers often carry credentials.
    #[error("invalid value for header {name:?}")]
    InvalidHeaderValue {
        /// Name of the offending header.
        name: String,
    },
    /// The guard refused the target (bad scheme, forbidden address).
    #[error(transparent)]
    Guard(#[from] GuardError),
}

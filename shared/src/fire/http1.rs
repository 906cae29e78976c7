//! HTTP/1.1 to HTTPS origins on hyper's connection API: the other half of
//! [`super::direct`].
//!
//! An HTTPS origin whose server picks HTTP/1.1 by ALPN (or offers no ALPN)
//! needs a connection per request in flight, and each connection costs the
//! same through reqwest or here: hyper's read and write buffers (8 KiB
//! each), its dispatch channel (one 32-slot block, about 9 KiB) and the TLS
//! session. What this path saves is what reqwest adds per *request*:
//! hyper-util's pooled `send_request` future, reqwest's boxed `Pending`,
//! tower's retry and redirect wrappers (docs/BENCHMARKS.md, issue 17).
//!
//! [`Idle`] keeps the connections between requests: per origin, newest
//! last, at most `max_per_origin`, none older than the pool's idle timeout.
//! A connection goes back when its answer has been read to the end (and the
//! server did not say `Connection: close`); one whose answer was dropped
//! unread (a redirect's) once hyper has it ready again, within a second.
//! A reused connection the server closed meanwhile (before the request was
//! written, or with no answer at all) is replaced, and the request sent on
//! a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use reqwest::header::{HeaderValue, CONNECTION, HOST};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use url::Url;

use super::direct::lock;

/// An HTTP/1.1 connection's handle.
pub(super) type Sender = SendRequest<Full<Bytes>>;

/// Beyond this many origins, those with no idle connection are forgotten.
const PRUNE_ABOVE: usize = 1024;

/// Idle HTTP/1.1 connections of one process (see the module docs).
pub(super) struct Idle {
    max_per_origin: usize,
    timeout: Duration,
    origins: Mutex<HashMap<String, Vec<(Sender, Instant)>>>,
}

impl Idle {
    pub(super) fn new(max_per_origin: usize, timeout: Duration) -> Self {
        Self {
            max_per_origin: max_per_origin.max(1),
            timeout,
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// The newest idle connection to `origin` still open, if any; older
    /// than the idle timeout or closed ones are dropped on the way.
    pub(super) fn take(&self, origin: &str) -> Option<Sender> {
        let mut origins = lock(&self.origins);
        let idle = origins.get_mut(origin)?;
        let now = Instant::now();
        idle.retain(|(conn, since)| {
            !conn.is_closed() && now.saturating_duration_since(*since) <= self.timeout
        });
        idle.pop().map(|(conn, _)| conn)
    }

    fn put(&self, origin: String, conn: Sender) {
        let mut origins = lock(&self.origins);
        if origins.len() > PRUNE_ABOVE {
            origins.retain(|_, idle| !idle.is_empty());
        }
        let idle = origins.entry(origin).or_default();
        if idle.len() >= self.max_per_origin {
            // The oldest goes: the newest is the likeliest to be open.
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }
}

/// Start HTTP/1.1 on a TLS connection; its task runs until the connection
/// closes (the server's close, an error, the last handle dropped).
pub(super) async fn handshake(tls: TlsStream<TcpStream>) -> Result<Sender, hyper::Error> {
    let (conn, task) = Builder::new().handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        if let Err(e) = task.await {
            tracing::debug!(error = %e, "HTTP/1.1 connection ended");
        }
    });
    Ok(conn)
}

/// A connection for one request, and whether it served one before.
pub(super) struct Lease {
    pub(super) conn: Sender,
    pub(super) reused: bool,
}

/// Why a request was not answered on a leased connection.
pub(super) enum SendFailure {
    /// The connection closed before the request was written, or closed
    /// (or was reset) with not a byte of an answer after it: what a server
    /// closing an idle connection as the request leaves looks like. A
    /// reused connection is replaced and the request sent again, as
    /// browsers do (RFC 9110 §9.2.2 allows it for a request that carries
    /// an idempotency key).
    Closed(hyper::Error),
    /// Anything else.
    Failed(hyper::Error),
}

fn closed_under(e: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    if e.is_canceled() || e.is_incomplete_message() {
        return true;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| {
        matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
        )
    })
}

/// Send one request on `conn`: origin-form target, `Host` from the URL
/// (the firer drops the task's own), `Content-Length` by hyper.
pub(super) async fn send(
    mut conn: Sender,
    mut request: hyper::Request<Full<Bytes>>,
    url: &Url,
) -> Result<(hyper::Response<Incoming>, Sender), SendFailure> {
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => String::new(),
    };
    if let Ok(value) = HeaderValue::from_str(&host) {
        request.headers_mut().insert(HOST, value);
    }
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    if let Ok(uri) = target.parse() {
        *request.uri_mut() = uri;
    }
    conn.ready().await.map_err(SendFailure::Closed)?;
    match conn.send_request(request).await {
        Ok(response) => Ok((response, conn)),
        Err(e) if closed_under(&e) => Err(SendFailure::Closed(e)),
        Err(e) => Err(SendFailure::Failed(e)),
    }
}

/// An answer on an HTTP/1.1 connection, which goes back to [`Idle`] once
/// the body has been read to its end.
pub(super) struct Answer {
    pub(super) response: hyper::Response<Incoming>,
    back: Option<(Sender, String, Arc<Idle>)>,
    ended: bool,
}

impl Answer {
    pub(super) fn new(
        response: hyper::Response<Incoming>,
        conn: Sender,
        origin: String,
        idle: Arc<Idle>,
    ) -> Self {
        let close = response
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let back = (!close).then_some((conn, origin, idle));
        Self {
            response,
            back,
            ended: false,
        }
    }

    /// Reading the body hit its end.
    pub(super) fn ended(&mut self) {
        self.ended = true;
    }
}

/// How long an answer dropped before its end may take to finish arriving
/// (a redirect's short body usually has already) before its connection is
/// given up.
const SETTLE: Duration = Duration::from_secs(1);

impl Drop for Answer {
    fn drop(&mut self) {
        let Some((mut conn, origin, idle)) = self.back.take() else {
            return;
        };
        if self.ended || self.response.body().is_end_stream() {
            idle.put(origin, conn);
            return;
        }
        // Unread: hyper reads the rest or closes the connection; it comes
        // back only once ready for another request, as in hyper-util.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(SETTLE, conn.ready()).await {
                    idle.put(origin, conn);
                }
            });
        }
    }
}

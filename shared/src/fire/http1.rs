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
//! A reused connection the server closed meanwhile is replaced and the
//! request sent on a new one: always when the request had not been
//! written; when it had but no answer came, only if it may be repeated
//! (see [`SendFailure::NoAnswer`]). Closed and expired idle connections of
//! every origin are swept every few seconds of use.

use std::collections::{HashMap, VecDeque};
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

/// Beyond this many origins, every access sweeps.
const PRUNE_ABOVE: usize = 1024;
/// How often the idle lists are swept (or the idle timeout, if shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Idle HTTP/1.1 connections of one process (see the module docs).
pub(super) struct Idle {
    max_per_origin: usize,
    timeout: Duration,
    pools: Mutex<Pools>,
}

struct Pools {
    /// Per origin, oldest first.
    by_origin: HashMap<String, VecDeque<(Sender, Instant)>>,
    /// When every origin's list was last swept of closed and expired ones.
    swept: Instant,
}

impl Idle {
    pub(super) fn new(max_per_origin: usize, timeout: Duration) -> Self {
        Self {
            max_per_origin: max_per_origin.max(1),
            timeout,
            pools: Mutex::new(Pools {
                by_origin: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// The newest idle connection to `origin` still open, if any; older
    /// than the idle timeout or closed ones are dropped on the way.
    pub(super) fn take(&self, origin: &str) -> Option<Sender> {
        let mut pools = lock(&self.pools);
        let now = Instant::now();
        self.sweep(&mut pools, now);
        let idle = pools.by_origin.get_mut(origin)?;
        while let Some((conn, since)) = idle.pop_back() {
            if !conn.is_closed() && now.saturating_duration_since(since) <= self.timeout {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, origin: String, conn: Sender) {
        let mut pools = lock(&self.pools);
        let now = Instant::now();
        self.sweep(&mut pools, now);
        let idle = pools.by_origin.entry(origin).or_default();
        if idle.len() >= self.max_per_origin {
            // The oldest goes: the newest is the likeliest to be open.
            idle.pop_front();
        }
        idle.push_back((conn, now));
    }

    /// Drop closed and expired connections of every origin (so origins no
    /// longer fired at do not keep theirs open), at most once per sweep
    /// interval unless the origins are many.
    fn sweep(&self, pools: &mut Pools, now: Instant) {
        let due = now.saturating_duration_since(pools.swept) >= self.timeout.min(SWEEP_EVERY);
        if !due && pools.by_origin.len() <= PRUNE_ABOVE {
            return;
        }
        pools.swept = now;
        let timeout = self.timeout;
        pools.by_origin.retain(|_, idle| {
            idle.retain(|(conn, since)| {
                !conn.is_closed() && now.saturating_duration_since(*since) <= timeout
            });
            !idle.is_empty()
        });
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
    /// The connection had closed before the request was written: it may go
    /// on another connection.
    Unsent(hyper::Error),
    /// The connection closed (or was reset) under the request before a
    /// complete answer: what a server closing an idle connection as the
    /// request arrives looks like, and also what a server that dies
    /// mid-request looks like. Sent again on a new connection only when the
    /// connection was reused and the request may be repeated (RFC 9110
    /// §9.2.2: an idempotent method, or an idempotency key).
    NoAnswer(hyper::Error),
    /// Anything else.
    Failed(hyper::Error),
    /// The URL gave no valid request target or `Host`.
    Request(hyper::http::Error),
}

fn closed_under(e: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    if e.is_incomplete_message() {
        return true;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| {
        matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::BrokenPipe
                | ErrorKind::ConnectionAborted
                // rustls: the peer closed without `close_notify`.
                | ErrorKind::UnexpectedEof
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
    let host = HeaderValue::from_str(&host).map_err(|e| SendFailure::Request(e.into()))?;
    request.headers_mut().insert(HOST, host);
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    *request.uri_mut() = target
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| SendFailure::Request(e.into()))?;
    conn.ready().await.map_err(SendFailure::Unsent)?;
    match conn.send_request(request).await {
        Ok(response) => Ok((response, conn)),
        Err(e) if e.is_canceled() => Err(SendFailure::Unsent(e)),
        Err(e) if closed_under(&e) => Err(SendFailure::NoAnswer(e)),
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

//! HTTP/2 to HTTPS origins on the `h2` crate directly, beside the reqwest
//! client.
//!
//! A heap profile of 2,000 HTTP/2 requests in flight (docs/BENCHMARKS.md,
//! issue 17) put 8–9 of the 13 KiB each request held in reqwest's layers:
//! hyper-util's pooled `send_request` future (sized for the connect path
//! every request carries, pooled or not), reqwest's boxed `Pending`, tower's
//! retry and redirect wrappers. An HTTP/2 stream on a connection that is
//! already up needs none of them, nor hyper's HTTP/2 client, which spawns a
//! task per stream (its future an enum over the connection's own, about
//! 2.7 KiB) and passes each request through a channel: here a stream is
//! `h2`'s handle, awaited inside the firer's own future.
//!
//! [`Direct`] keeps one HTTP/2 connection per HTTPS origin (`host:port`)
//! and sends each request as a stream on it. The first request to an
//! origin dials it: the guard's resolver (so the connect-time check stays),
//! TCP, then TLS with the rustls configuration reqwest uses too (the same
//! roots, ALPN `h2`, `http/1.1`). A burst dials once: the others wait for
//! that dial, and the [warm-up](super::warmup) hears of it as it hears of
//! reqwest's connects. An origin whose server picks HTTP/1.1 is left to
//! reqwest (one connection per request in flight, its pool): the probing
//! connection is dropped, one handshake per origin and idle period. A
//! connection that closed (GOAWAY, the server's idle close, an error) is
//! dialled again by the next request; one unused for the pool's idle
//! timeout is dropped.
//!
//! Plain `http://` targets never come here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_LENGTH, TE, UPGRADE, USER_AGENT,
};
use reqwest::{Method, StatusCode};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use url::{Host, Url};

use super::guard::{GuardError, TargetGuard};
use super::warmup::{origin_of, Warmup};

/// An HTTP/2 connection's handle: cloned for each request.
#[derive(Clone)]
pub(super) struct Sender {
    send: SendRequest<Bytes>,
    /// Set when the connection's task ends (GOAWAY, the server's close, an
    /// error): the next request dials again.
    closed: Arc<AtomicBool>,
}

impl Sender {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Settings of the connections, as hyper's client has them.
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Streams opened before the server's SETTINGS say how many it takes.
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// Beyond this many origins, those unused for the idle timeout are dropped.
const PRUNE_ABOVE: usize = 1024;

/// The HTTP/2 connections of one process (see the module docs).
pub(super) struct Direct {
    tls: TlsConnector,
    guard: Arc<TargetGuard>,
    connect_timeout: Duration,
    idle: Duration,
    warmup: Option<Arc<Warmup>>,
    origins: Mutex<HashMap<String, Origin>>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("origins", &lock(&self.origins).len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Origin {
    /// The HTTP/2 connection's handle.
    conn: Option<Sender>,
    /// The server chose HTTP/1.1: reqwest's from then on.
    http1: bool,
    /// When a request last went to the origin.
    used: Option<Instant>,
    /// Held by the request dialling the origin, so a burst dials once.
    dial: Arc<tokio::sync::Mutex<()>>,
}

/// Where a request to an HTTPS origin goes.
pub(super) enum Route {
    /// A stream on the origin's HTTP/2 connection.
    Http2(Sender),
    /// reqwest's pool: not HTTPS, or the server speaks HTTP/1.1 only.
    Pooled,
}

/// What went wrong dialling an origin or sending on its connection.
#[derive(Debug, thiserror::Error)]
pub(super) enum DirectError {
    /// The guard refused an address the host resolves to, or resolving failed.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// TCP connect (to every address of the host) failed.
    #[error("error trying to connect: {0}")]
    Connect(#[source] std::io::Error),
    /// TCP + TLS did not finish within the connect timeout.
    #[error("error trying to connect: connect timed out")]
    ConnectTimeout,
    /// The TLS handshake failed (a certificate that does not verify, a
    /// connection dropped mid-handshake).
    #[error("error trying to connect: {0}")]
    Tls(#[source] std::io::Error),
    /// The HTTP/2 connection could not start, or ended under the request,
    /// or the server reset the stream.
    #[error("error sending request: {0}")]
    Http2(#[source] h2::Error),
    /// The request could not be built (an URL `http` will not take).
    #[error("invalid request: {0}")]
    Request(#[source] hyper::http::Error),
}

impl Direct {
    /// Connections dialled with `tls` (its ALPN must offer `h2`), checked by
    /// `guard`, reported to `warmup`.
    pub(super) fn new(
        tls: ClientConfig,
        guard: Arc<TargetGuard>,
        connect_timeout: Duration,
        idle: Duration,
        warmup: Option<Arc<Warmup>>,
    ) -> Self {
        Self {
            tls: TlsConnector::from(Arc::new(tls)),
            guard,
            connect_timeout,
            idle,
            warmup,
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// Where a request to `url` goes, dialling its origin if it has no
    /// connection yet.
    pub(super) async fn route(&self, url: &Url) -> Result<Route, DirectError> {
        let Some(key) = origin_of(url) else {
            return Ok(Route::Pooled);
        };
        let dial = {
            let mut origins = lock(&self.origins);
            if let Some(route) = self.known(&mut origins, &key) {
                return Ok(route);
            }
            Arc::clone(&origins.entry(key.clone()).or_default().dial)
        };
        let _dialling = dial.lock().await;
        // Whoever held the dial before us may have connected meanwhile.
        if let Some(route) = self.known(&mut lock(&self.origins), &key) {
            return Ok(route);
        }
        if let Some(warmup) = &self.warmup {
            warmup.dialing(&key);
        }
        // Boxed: the dial's state (resolver, TCP, the TLS session being
        // set up, the HTTP/2 handshake) is kilobytes, and inline it would
        // be carried by every request's future although one request per
        // origin dials.
        let dialled = Box::pin(self.dial(url)).await?;
        let route = self.remember(key.clone(), dialled);
        if let Some(warmup) = &self.warmup {
            // The connection is where the next request finds it: unlike
            // reqwest's connects, nothing is left to pool.
            warmup.release(&key, Instant::now());
        }
        Ok(route)
    }

    /// The route of an origin with a live connection, or known to be
    /// HTTP/1.1; `None`: it has to be dialled.
    fn known(&self, origins: &mut HashMap<String, Origin>, key: &str) -> Option<Route> {
        let origin = origins.get_mut(key)?;
        let now = Instant::now();
        let fresh = origin
            .used
            .is_some_and(|used| now.saturating_duration_since(used) <= self.idle);
        if !fresh {
            origin.conn = None;
            origin.http1 = false;
        }
        let route = match &origin.conn {
            _ if origin.http1 => Route::Pooled,
            Some(conn) if !conn.is_closed() => Route::Http2(conn.clone()),
            _ => return None,
        };
        origin.used = Some(now);
        Some(route)
    }

    fn remember(&self, key: String, conn: Option<Sender>) -> Route {
        let now = Instant::now();
        let mut origins = lock(&self.origins);
        if origins.len() > PRUNE_ABOVE {
            let idle = self.idle;
            origins.retain(|_, o| {
                o.used
                    .is_some_and(|used| now.saturating_duration_since(used) <= idle)
            });
        }
        let origin = origins.entry(key).or_default();
        origin.used = Some(now);
        origin.http1 = conn.is_none();
        origin.conn = conn.clone();
        conn.map_or(Route::Pooled, Route::Http2)
    }

    /// TCP and TLS within the connect timeout, then the HTTP/2 handshake;
    /// `None` when the server chose HTTP/1.1.
    async fn dial(&self, url: &Url) -> Result<Option<Sender>, DirectError> {
        let (name, host) = server_name(url)?;
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = self.guard.resolve_allowed(&host, port).await?;
        let connect = async {
            let tcp = connect_any(&addrs).await.map_err(DirectError::Connect)?;
            // Best effort, as in reqwest: a socket without it still works.
            let _ = tcp.set_nodelay(true);
            self.tls.connect(name, tcp).await.map_err(DirectError::Tls)
        };
        let tls = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| DirectError::ConnectTimeout)??;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
            return Ok(None);
        }
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .enable_push(false)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(DirectError::Http2)?;
        let closed = Arc::new(AtomicBool::new(false));
        let ended = Arc::clone(&closed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
            }
            ended.store(true, Ordering::Release);
        });
        let sender = Sender { send, closed };
        Ok(Some(sender))
    }
}

/// Send one request as a stream on `conn`. Adds the `User-Agent` and
/// `Accept` reqwest would add and, as hyper does, `Content-Length` (also 0
/// for a method with payload semantics); drops what HTTP/2 forbids.
pub(super) async fn send(
    conn: Sender,
    method: Method,
    url: &Url,
    mut headers: HeaderMap,
    body: Option<&str>,
) -> Result<hyper::Response<RecvStream>, DirectError> {
    headers
        .entry(USER_AGENT)
        .or_insert(HeaderValue::from_static(super::client::USER_AGENT));
    headers
        .entry(ACCEPT)
        .or_insert(HeaderValue::from_static("*/*"));
    strip_connection_headers(&mut headers);
    let body = body
        .filter(|b| !b.is_empty())
        .map(|b| Bytes::copy_from_slice(b.as_bytes()));
    let len = body.as_ref().map_or(0, Bytes::len);
    if len != 0 || !matches!(method, Method::GET | Method::HEAD | Method::DELETE) {
        headers
            .entry(CONTENT_LENGTH)
            .or_insert(HeaderValue::from(len));
    }
    // The fragment is the client's, never sent.
    let uri = url.as_str().split('#').next().unwrap_or_default();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .map_err(DirectError::Request)?;
    *request.headers_mut() = headers;
    let mut send = conn.send.ready().await.map_err(DirectError::Http2)?;
    let (response, mut stream) = send
        .send_request(request, body.is_none())
        .map_err(DirectError::Http2)?;
    if let Some(body) = body {
        // Buffered by h2 until the stream's window lets it go.
        stream.send_data(body, true).map_err(DirectError::Http2)?;
    }
    response.await.map_err(DirectError::Http2)
}

/// HTTP/2 has no connection-specific headers (RFC 9113 §8.2.2); `h2`
/// refuses a request carrying one. `Connection`, `Transfer-Encoding` and
/// `Host` never get here (the firer drops them).
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(HeaderName::from_static(name));
    }
    headers.remove(UPGRADE);
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
}

/// An answer from either path, read the same way.
pub(super) enum Reply {
    /// Through reqwest.
    Pooled(reqwest::Response),
    /// A stream of a [`Direct`] connection.
    Direct(hyper::Response<RecvStream>),
}

impl Reply {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Reply::Pooled(r) => r.status(),
            Reply::Direct(r) => r.status(),
        }
    }

    pub(super) fn headers(&self) -> &HeaderMap {
        match self {
            Reply::Pooled(r) => r.headers(),
            Reply::Direct(r) => r.headers(),
        }
    }

    /// The next chunk of the body; `None` at its end. The error is
    /// described (without the URL).
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Reply::Pooled(r) => r
                .chunk()
                .await
                .map_err(super::request::describe_reqwest_error),
            Reply::Direct(r) => {
                let body = r.body_mut();
                match body.data().await {
                    None => Ok(None),
                    Some(Err(e)) => Err(super::request::describe_chain(&e)),
                    Some(Ok(data)) => {
                        // Read: the server may send as much again. An error
                        // here is the stream's, and the next read says it.
                        let _ = body.flow_control().release_capacity(data.len());
                        Ok(Some(data))
                    }
                }
            }
        }
    }
}

/// The name TLS verifies, and the host to resolve (an IP literal resolves
/// to itself, and the guard checks it like any address).
fn server_name(url: &Url) -> Result<(ServerName<'static>, String), DirectError> {
    let no_host = || GuardError::NoAddresses {
        host: String::new(),
    };
    match url.host().ok_or_else(no_host)? {
        Host::Domain(domain) => {
            let name = ServerName::try_from(domain.to_owned()).map_err(|_| {
                DirectError::Guard(GuardError::NoAddresses {
                    host: domain.to_owned(),
                })
            })?;
            Ok((name, domain.to_owned()))
        }
        Host::Ipv4(ip) => Ok((ServerName::IpAddress(IpAddr::V4(ip).into()), ip.to_string())),
        Host::Ipv6(ip) => Ok((ServerName::IpAddress(IpAddr::V6(ip).into()), ip.to_string())),
    }
}

/// Connect to the first address that accepts, in the resolver's order.
async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

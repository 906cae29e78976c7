//! HTTPS origins on the `h2` crate and hyper's HTTP/1.1 connections
//! directly, beside the reqwest client.
//!
//! A heap profile of 2,000 HTTP/2 requests in flight (docs/BENCHMARKS.md,
//! issue 17) put 8–9 of the 13 KiB each request held in reqwest's layers:
//! hyper-util's pooled `send_request` future (sized for the connect path
//! every request carries, pooled or not), reqwest's boxed `Pending`, tower's
//! retry and redirect wrappers. A request on a connection that is already
//! up needs none of them; over HTTP/2 it needs no hyper client either,
//! which spawns a task per stream (its future an enum over the
//! connection's own, about 2.7 KiB) and passes each request through a
//! channel: here a stream is `h2`'s handle, awaited inside the firer's own
//! future.
//!
//! [`Direct`] keeps one HTTP/2 connection per HTTPS origin (`host:port`)
//! and sends each request as a stream on it. The first request to an
//! origin dials it: the guard's resolver (so the connect-time check stays),
//! TCP, then TLS with the rustls configuration reqwest uses too (the same
//! roots, ALPN `h2`, `http/1.1`). A burst dials once: the others wait for
//! that dial, and the [warm-up](super::warmup) hears of it as it hears of
//! reqwest's connects. An origin whose server picks HTTP/1.1 gets a
//! connection per request in flight, kept between requests by
//! [`super::http1`] (the first request uses the connection its dial
//! opened). An HTTP/2 connection that closed (GOAWAY, the server's idle
//! close, an error) is dialled again by the next request; one unused for
//! the pool's idle timeout is dropped.
//!
//! Plain `http://` targets never come here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, USER_AGENT};
use reqwest::Method;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use url::{Host, Url};

use super::guard::{GuardError, TargetGuard};
use super::http1::{self, Idle, Lease, SendFailure};
use super::http2::{self, Sender};
use super::reply::Reply;
use super::request::IDEMPOTENCY_HEADER;
use super::warmup::{origin_of, Warmup};

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
    /// When the origins were last swept of unused ones.
    swept: Mutex<Instant>,
    http1: Arc<Idle>,
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
    /// The server chose HTTP/1.1: its connections are in [`Idle`].
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
    /// A connection of its own to an origin that speaks HTTP/1.1.
    Http1(Lease),
    /// reqwest's pool: not HTTPS.
    Pooled,
}

/// What a dial opened.
enum Dialled {
    Http2(Sender),
    Http1(http1::Sender),
}

/// What is known of an origin before dialling it.
enum Known {
    /// A connection to use.
    Route(Route),
    /// An HTTP/1.1 origin with no idle connection: dial one more.
    Http1,
    /// Nothing yet (or its HTTP/2 connection closed): dial it, once.
    Cold,
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
    /// The HTTP/1.1 connection could not start, or ended under the request,
    /// or the answer was not HTTP.
    #[error("error sending request: {0}")]
    Http1(#[source] hyper::Error),
    /// The request could not be built (an URL `http` will not take).
    #[error("invalid request: {0}")]
    Request(#[source] hyper::http::Error),
}

impl Direct {
    /// Connections dialled with `tls` (its ALPN must offer `h2`), checked by
    /// `guard`, reported to `warmup`; at most `max_idle_per_origin` idle
    /// HTTP/1.1 connections are kept per origin.
    pub(super) fn new(
        tls: ClientConfig,
        guard: Arc<TargetGuard>,
        connect_timeout: Duration,
        idle: Duration,
        max_idle_per_origin: usize,
        warmup: Option<Arc<Warmup>>,
    ) -> Self {
        Self {
            tls: TlsConnector::from(Arc::new(tls)),
            guard,
            connect_timeout,
            idle,
            warmup,
            origins: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
            http1: Arc::new(Idle::new(max_idle_per_origin, idle)),
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
            match self.known(&mut origins, &key) {
                Known::Route(route) => return Ok(route),
                Known::Http1 => None,
                Known::Cold => Some(Arc::clone(&origins.entry(key.clone()).or_default().dial)),
            }
        };
        let Some(dial) = dial else {
            // HTTP/1.1: one connection per request in flight, dialled
            // side by side.
            return self.dial_again(url, key).await;
        };
        let dialling = dial.lock().await;
        // Whoever held the dial before us may have connected meanwhile, or
        // found the origin speaks HTTP/1.1 (then dial side by side).
        let known = self.known(&mut lock(&self.origins), &key);
        match known {
            Known::Route(route) => return Ok(route),
            Known::Http1 => {
                drop(dialling);
                return self.dial_again(url, key).await;
            }
            Known::Cold => {}
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

    /// A new connection to an origin that has (had) others.
    async fn dial_again(&self, url: &Url, key: String) -> Result<Route, DirectError> {
        let dialled = Box::pin(self.dial(url)).await?;
        Ok(self.remember(key, dialled))
    }

    /// The route of an origin with a live connection, or whether it has to
    /// be dialled.
    fn known(&self, origins: &mut HashMap<String, Origin>, key: &str) -> Known {
        let Some(origin) = origins.get_mut(key) else {
            return Known::Cold;
        };
        let now = Instant::now();
        let fresh = origin
            .used
            .is_some_and(|used| now.saturating_duration_since(used) <= self.idle);
        if !fresh {
            origin.conn = None;
            origin.http1 = false;
        }
        let known = match &origin.conn {
            _ if origin.http1 => match self.http1.take(key) {
                Some(conn) => Known::Route(Route::Http1(Lease { conn, reused: true })),
                None => Known::Http1,
            },
            Some(conn) if !conn.is_closed() => Known::Route(Route::Http2(conn.clone())),
            _ => return Known::Cold,
        };
        origin.used = Some(now);
        known
    }

    fn remember(&self, key: String, dialled: Dialled) -> Route {
        let now = Instant::now();
        let mut origins = lock(&self.origins);
        let sweep = {
            let mut swept = lock(&self.swept);
            let due = now.saturating_duration_since(*swept) >= self.idle;
            if due {
                *swept = now;
            }
            due
        };
        // Origins unused for the idle timeout drop their connections.
        if sweep || origins.len() > PRUNE_ABOVE {
            let idle = self.idle;
            origins.retain(|_, o| {
                o.used
                    .is_some_and(|used| now.saturating_duration_since(used) <= idle)
            });
        }
        let origin = origins.entry(key).or_default();
        origin.used = Some(now);
        match dialled {
            Dialled::Http2(conn) => {
                origin.http1 = false;
                origin.conn = Some(conn.clone());
                Route::Http2(conn)
            }
            Dialled::Http1(conn) => {
                origin.http1 = true;
                origin.conn = None;
                Route::Http1(Lease {
                    conn,
                    reused: false,
                })
            }
        }
    }

    /// TCP and TLS within the connect timeout, then the HTTP/2 or the
    /// HTTP/1.1 handshake, as the server chose by ALPN.
    async fn dial(&self, url: &Url) -> Result<Dialled, DirectError> {
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
            let conn = http1::handshake(tls).await.map_err(DirectError::Http1)?;
            return Ok(Dialled::Http1(conn));
        }
        let conn = http2::handshake(tls).await.map_err(DirectError::Http2)?;
        Ok(Dialled::Http2(conn))
    }

    /// Send one request as a stream on an HTTP/2 connection. One the
    /// server no longer takes streams on (a GOAWAY it is draining under) or
    /// that refused the stream unprocessed is left, and the request routed
    /// again, once.
    pub(super) async fn send_http2(
        &self,
        conn: Sender,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&str>,
    ) -> Result<Reply, DirectError> {
        match http2::send(conn, method, url, headers, body).await {
            Ok(response) => Ok(Reply::Direct(response)),
            Err(http2::Failure::Failed(e)) => Err(e),
            Err(http2::Failure::Unopened(e)) => {
                tracing::debug!(error = %e, "HTTP/2 connection takes no new streams; routing again");
                // Boxed: only a request that met a closing connection pays.
                Box::pin(self.send_again(method, url, headers, body, e)).await
            }
        }
    }

    async fn send_again(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&str>,
        first: h2::Error,
    ) -> Result<Reply, DirectError> {
        match self.route(url).await? {
            Route::Http2(conn) => match http2::send(conn, method, url, headers, body).await {
                Ok(response) => Ok(Reply::Direct(response)),
                Err(http2::Failure::Failed(e)) => Err(e),
                Err(http2::Failure::Unopened(e)) => Err(DirectError::Http2(e)),
            },
            Route::Http1(lease) => self.send_http1(lease, method, url, headers, body).await,
            Route::Pooled => Err(DirectError::Http2(first)),
        }
    }

    /// Send one request on a leased HTTP/1.1 connection, with the headers
    /// reqwest would add. A reused connection that turns out closed is
    /// replaced by a new one, once: always if the request was not written,
    /// and if it was but no answer came, only when it may be repeated (see
    /// [`SendFailure::NoAnswer`]).
    pub(super) async fn send_http1(
        &self,
        mut lease: Lease,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        text: Option<&str>,
    ) -> Result<Reply, DirectError> {
        let body = text.map(|b| Bytes::copy_from_slice(b.as_bytes()));
        let request = || {
            let mut request = hyper::Request::new(Full::new(body.clone().unwrap_or_default()));
            *request.method_mut() = method.clone();
            let mut headers = headers.clone();
            add_client_headers(&mut headers);
            *request.headers_mut() = headers;
            request
        };
        let repeatable = method.is_idempotent() || headers.contains_key(IDEMPOTENCY_HEADER);
        let key = origin_of(url).unwrap_or_default();
        loop {
            let e = match http1::send(lease.conn, request(), url).await {
                Ok((response, conn)) => {
                    let idle = Arc::clone(&self.http1);
                    return Ok(Reply::Http1(http1::Answer::new(response, conn, key, idle)));
                }
                Err(SendFailure::Unsent(e)) if lease.reused => e,
                Err(SendFailure::NoAnswer(e)) if lease.reused && repeatable => e,
                Err(SendFailure::Request(e)) => return Err(DirectError::Request(e)),
                Err(SendFailure::Unsent(e) | SendFailure::NoAnswer(e) | SendFailure::Failed(e)) => {
                    return Err(DirectError::Http1(e))
                }
            };
            tracing::debug!(error = %e, "reused HTTP/1.1 connection closed; dialling");
            match self.dial_again(url, key.clone()).await? {
                Route::Http1(fresh) => lease = fresh,
                Route::Http2(conn) => {
                    // The origin moved to HTTP/2 meanwhile.
                    return Box::pin(self.send_http2(conn, method, url, headers, text)).await;
                }
                Route::Pooled => return Err(DirectError::Http1(e)),
            }
        }
    }
}

/// The `User-Agent` and `Accept` reqwest would add.
pub(super) fn add_client_headers(headers: &mut HeaderMap) {
    headers
        .entry(USER_AGENT)
        .or_insert(HeaderValue::from_static(super::client::USER_AGENT));
    headers
        .entry(ACCEPT)
        .or_insert(HeaderValue::from_static("*/*"));
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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

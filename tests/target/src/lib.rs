//! `sundial-target`: a local HTTP target whose behaviour is chosen by the
//! request path, for the tests and for `sundial bench` (a fast counting
//! sink). Local tooling, not product: no product crate depends on it.
//!
//! Routes (any method; unknown paths answer 404):
//!
//! | path | answer |
//! |---|---|
//! | `/` or `/ok` | 200 `ok` |
//! | `/status/{code}` | that status (400 if `code` is not a valid status) |
//! | `/delay/{ms}` | waits `ms` (at most an hour), then 200 |
//! | `/flaky/{n}` | 503 for the first `n` requests of each idempotency key, then 200 (needs `record`) |
//! | `/hang` | never answers (sleeps an hour; ends on shutdown) |
//! | `/retry-after/{secs}` | 429 with `Retry-After: {secs}` |
//! | `/admit/{r}[/{key}]` | 200 for the first `r` requests of each wall-clock second, 429 with `Retry-After: 1` beyond; each distinct path counts apart |
//! | `/redirect?to={url}[&status={code}]` | 302 (or `code`, e.g. 307) to `url` |
//! | `/redirect-chain/{n}` | 302 to `/redirect-chain/{n-1}`; `n = 0` → 200 |
//! | `/bytes/{n}` | 200 with an `n`-byte body, streamed in 16 KiB chunks |
//! | `/binary/{kind}` | 200 with a body that is not text: `nul` (`a\0b`), `invalid-utf8`, `gzip` (`Content-Encoding: gzip`), `png` (`Content-Type: image/png`) |
//! | `/echo` | 200 JSON: method, path, query, idempotency key, signature check, body |
//!
//! Every request is counted and its concurrency tracked ([`TargetStats`]);
//! with [`TargetConfig::record`] each one is also stored as a
//! [`RequestRecord`] (bench turns that off to stay O(1) in memory). When
//! [`TargetConfig::secrets`] is set, the `Sundial-Signature` of each request
//! is verified and the result recorded.
//!
//! [`TargetServer::set_down`] takes the host down and back up while the
//! server keeps its port: [`Down::Refuse`] closes the listener (the kernel
//! refuses connections, as for a host whose service is gone),
//! [`Down::Reset`] accepts each connection and resets it at once, so every
//! attempt is counted ([`TargetStats::refused`]). Either way open
//! connections are closed once their requests finish.
//!
//! With [`TargetConfig::tls`] the target speaks HTTPS with a certificate
//! from a throw-away CA ([`tls::TestCa`]), offering HTTP/2 and/or HTTP/1.1
//! by ALPN; each request records the protocol version it arrived with, and
//! [`TargetStats`] counts accepted connections and completed TLS handshakes
//! (how well a client reuses connections). Plain targets speak HTTP/1.1.

pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use sundial::fire::signing::{self, DEFAULT_TOLERANCE_SECS};

/// How long [`TargetServer::shutdown`] waits for open requests before
/// aborting the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Longest wait any route performs.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// HTTP/2 streams the target allows per connection. Far above what real
/// servers allow (100–250) so that a benchmark measures the client, not
/// the target's stream limit.
const MAX_CONCURRENT_STREAMS: u32 = 10_000;

/// Behaviour of a [`TargetServer`].
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Secrets to verify `Sundial-Signature` with; empty = don't verify.
    pub secrets: Vec<String>,
    /// Store a [`RequestRecord`] per request (off for benchmarks).
    pub record: bool,
    /// Accepted clock difference for signatures, in seconds.
    pub tolerance_secs: i64,
    /// Serve HTTPS with this certificate and ALPN offer; `None` = plain HTTP/1.1.
    pub tls: Option<tls::TlsConfig>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            record: true,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            tls: None,
        }
    }
}

/// One received request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<String>,
    /// Did the signature verify? `None` when no secrets are configured.
    pub signature_valid: Option<bool>,
    /// When the request arrived.
    pub received_at: DateTime<Utc>,
    /// Request body length in bytes.
    pub body_len: usize,
    /// Request headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// Protocol the request came with (`HTTP/1.1`, `HTTP/2.0`).
    pub version: Version,
    /// The status the target answered with; `None` while the request is
    /// being handled, or when the client hung up before the answer.
    pub status: Option<u16>,
}

impl RequestRecord {
    /// The first value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counters shared between the server and whoever inspects it.
#[derive(Debug, Default)]
pub struct TargetStats {
    requests: AtomicU64,
    bad_signatures: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    connections: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_failures: AtomicU64,
    admitted: AtomicU64,
    throttled: AtomicU64,
    refused: AtomicU64,
    records: Mutex<Vec<RequestRecord>>,
}

impl TargetStats {
    /// Requests received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests whose signature did not verify (only counted with secrets).
    pub fn bad_signatures(&self) -> u64 {
        self.bad_signatures.load(Ordering::SeqCst)
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Highest number of requests handled at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed (0 for a plain target).
    pub fn tls_handshakes(&self) -> u64 {
        self.tls_handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed, e.g. because the client refused the
    /// certificate.
    pub fn tls_failures(&self) -> u64 {
        self.tls_failures.load(Ordering::SeqCst)
    }

    /// `/admit` requests answered 200.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::SeqCst)
    }

    /// `/admit` requests answered 429 (over the second's admissions).
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::SeqCst)
    }

    /// Connections reset as soon as they were accepted, because the host
    /// was down in [`Down::Reset`] mode (each one a client's attempt).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// A copy of the stored records (empty when recording is off).
    pub fn records(&self) -> Vec<RequestRecord> {
        self.lock_records().clone()
    }

    fn lock_records(&self) -> MutexGuard<'_, Vec<RequestRecord>> {
        // A panic while pushing cannot leave the Vec inconsistent.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Decrements the in-flight gauge however the handler ends (including the
/// client hanging up and the handler future being dropped).
struct InFlightGuard(Arc<TargetStats>);

impl InFlightGuard {
    fn enter(stats: &Arc<TargetStats>) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(stats))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a host that is down fails its clients ([`TargetServer::set_down`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// Nothing listens on the port: the kernel refuses connections. The
    /// attempts cannot be counted here.
    Refuse,
    /// Every connection is accepted and reset at once (the client sees a
    /// connection error before any answer) and counted in
    /// [`TargetStats::refused`].
    Reset,
}

/// Admissions of one `/admit` path in the current wall-clock second.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Unix second the count belongs to.
    second: i64,
    admitted: u64,
}

#[derive(Clone)]
struct AppState {
    config: Arc<TargetConfig>,
    stats: Arc<TargetStats>,
    shutdown: watch::Receiver<bool>,
    /// `/admit` windows by path.
    windows: Arc<Mutex<HashMap<String, Window>>>,
}

/// A running target; dropping it aborts the server.
#[derive(Debug)]
pub struct TargetServer {
    /// Where it listens (127.0.0.1, ephemeral port).
    pub addr: SocketAddr,
    /// Live counters and records.
    pub stats: Arc<TargetStats>,
    shutdown: watch::Sender<bool>,
    down: watch::Sender<Option<Down>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    https: bool,
}

impl TargetServer {
    /// `http://127.0.0.1:<port><path>`, or `https://` for a TLS target.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// Takes the host down (`Some`) or brings it back up on the same port
    /// (`None`). Going down closes open connections once their requests
    /// finish; see [`Down`] for how new ones fail.
    pub fn set_down(&self, down: Option<Down>) {
        self.down.send_replace(down);
    }

    /// Whether the host is down, and how.
    pub fn down(&self) -> Option<Down> {
        *self.down.borrow()
    }

    /// Stop accepting, let open requests finish (hanging ones are released),
    /// and abort whatever is left after a short grace period.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        // Fails only if the server already stopped, which is fine.
        let _ = self.shutdown.send(true);
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for TargetServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Start a target on 127.0.0.1 with an ephemeral port.
pub async fn spawn(config: TargetConfig) -> std::io::Result<TargetServer> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(TargetStats::default());
    let (tx, rx) = watch::channel(false);
    let (down_tx, down_rx) = watch::channel(None);
    let tls = config
        .tls
        .as_ref()
        .map(|tls| TlsAcceptor::from(Arc::clone(&tls.server)));
    let https = tls.is_some();
    let state = AppState {
        config: Arc::new(config),
        stats: Arc::clone(&stats),
        shutdown: rx.clone(),
        windows: Arc::default(),
    };
    let app = Router::new().fallback(handle).with_state(state);
    let signals = Signals {
        stop: rx,
        down: down_rx,
    };
    let task = tokio::spawn(serve(listener, app, tls, Arc::clone(&stats), signals));
    Ok(TargetServer {
        addr,
        stats,
        shutdown: tx,
        down: down_tx,
        task: Some(task),
        https,
    })
}

/// What the accept loop and every connection watch.
#[derive(Clone)]
struct Signals {
    /// Turns true on shutdown.
    stop: watch::Receiver<bool>,
    /// Whether (and how) the host is down.
    down: watch::Receiver<Option<Down>>,
}

/// How soon a listener closed by [`Down::Refuse`] is bound again when its
/// port is still taken.
const REBIND_EVERY: Duration = Duration::from_millis(20);

/// The accept loop: one task per connection, so a slow TLS handshake holds
/// back no other client. On shutdown it stops accepting, asks every
/// connection to finish its open requests and close, and waits for them.
/// While the host is down in [`Down::Refuse`] mode nothing listens; the
/// same address is bound again when it comes back up.
async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    stats: Arc<TargetStats>,
    mut signals: Signals,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let mut listener = Some(listener);
    let mut connections = JoinSet::new();
    loop {
        let down = *signals.down.borrow_and_update();
        if down == Some(Down::Refuse) {
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(addr).await {
                Ok(bound) => listener = Some(bound),
                // Someone holds the port for a moment (an outgoing
                // connection's local port): try again shortly.
                Err(_) => {
                    tokio::select! {
                        () = tokio::time::sleep(REBIND_EVERY) => continue,
                        _ = signals.stop.wait_for(|stop| *stop) => break,
                    }
                }
            }
        }
        let accepted = tokio::select! {
            accepted = accept(listener.as_ref()) => accepted,
            changed = signals.down.changed() => {
                // An error means the sender is gone: stop as well.
                if changed.is_err() {
                    break;
                }
                continue;
            }
            // An error means the sender is gone: stop as well.
            _ = signals.stop.wait_for(|stop| *stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            // Out of file descriptors under a benchmark, a reset before
            // accept: keep serving the others.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        if signals.down.borrow().is_some() {
            // Down in `Reset` mode: an RST instead of an answer.
            stats.refused.fetch_add(1, Ordering::SeqCst);
            let _ = tcp.set_zero_linger();
            drop(tcp);
            continue;
        }
        stats.connections.fetch_add(1, Ordering::SeqCst);
        // Best effort: only latency suffers without it.
        let _ = tcp.set_nodelay(true);
        let (app, stats, signals) = (app.clone(), Arc::clone(&stats), signals.clone());
        let Some(acceptor) = tls.clone() else {
            connections.spawn(serve_connection(tcp, app, Version::HTTP_11, signals));
            continue;
        };
        connections.spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                stats.tls_failures.fetch_add(1, Ordering::SeqCst);
                return;
            };
            stats.tls_handshakes.fetch_add(1, Ordering::SeqCst);
            let version = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Version::HTTP_2,
                _ => Version::HTTP_11,
            };
            serve_connection(stream, app, version, signals).await;
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// The next connection, or never while nothing listens.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Serve one connection in the protocol ALPN chose (HTTP/1.1 for plain
/// connections: no h2c), until the client closes it, the server stops or
/// the host goes down.
async fn serve_connection<I>(io: I, app: Router, version: Version, mut signals: Signals)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let builder = if version == Version::HTTP_2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        // A connection error (the client hung up) ends it either way.
        _ = conn.as_mut() => return,
        _ = signals.stop.wait_for(|stop| *stop) => {}
        _ = signals.down.wait_for(Option::is_some) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlightGuard::enter(&state.stats);
    state.stats.requests.fetch_add(1, Ordering::SeqCst);
    let signature_valid = check_signature(&state.config, &headers, &body);
    if signature_valid == Some(false) {
        state.stats.bad_signatures.fetch_add(1, Ordering::SeqCst);
    }
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let record = state.config.record.then(|| {
        let mut records = state.stats.lock_records();
        records.push(RequestRecord {
            method: method.to_string(),
            path: uri.path().to_owned(),
            idempotency_key: idempotency_key.clone(),
            signature_valid,
            received_at: Utc::now(),
            body_len: body.len(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (n.as_str().to_owned(), value)
                })
                .collect(),
            version,
            status: None,
        });
        records.len() - 1
    });
    let request = Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
        idempotency_key,
        signature_valid,
    };
    let response = respond(&state, request).await;
    if let Some(i) = record {
        if let Some(r) = state.stats.lock_records().get_mut(i) {
            r.status = Some(response.status().as_u16());
        }
    }
    response
}

/// What a route may look at.
struct Request<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    idempotency_key: Option<String>,
    signature_valid: Option<bool>,
}

/// The answer of the route the path names.
async fn respond(state: &AppState, req: Request<'_>) -> Response {
    let Request {
        method,
        uri,
        headers,
        body,
        idempotency_key,
        signature_valid,
    } = req;
    let path = uri.path().trim_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        [""] | ["ok"] => (StatusCode::OK, "ok").into_response(),
        ["status", code] => match code.parse::<u16>().map(StatusCode::from_u16) {
            Ok(Ok(status)) => (status, status.to_string()).into_response(),
            _ => (StatusCode::BAD_REQUEST, "bad status code").into_response(),
        },
        ["delay", ms] => match ms.parse::<u64>() {
            Ok(ms) => {
                wait(Duration::from_millis(ms), state.shutdown.clone()).await;
                (StatusCode::OK, "ok").into_response()
            }
            Err(_) => (StatusCode::BAD_REQUEST, "bad delay").into_response(),
        },
        ["flaky", n] => match n.parse::<usize>() {
            // Needs `record`: the count comes from the stored requests.
            Ok(n) => {
                let seen = state
                    .stats
                    .lock_records()
                    .iter()
                    .filter(|r| r.idempotency_key == idempotency_key)
                    .count();
                if seen <= n {
                    (StatusCode::SERVICE_UNAVAILABLE, "flaky").into_response()
                } else {
                    (StatusCode::OK, "ok").into_response()
                }
            }
            Err(_) => (StatusCode::BAD_REQUEST, "bad failure count").into_response(),
        },
        ["hang"] => {
            wait(MAX_WAIT, state.shutdown.clone()).await;
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
        }
        ["retry-after", secs] => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, (*secs).to_owned())],
            "slow down",
        )
            .into_response(),
        ["admit", rate] | ["admit", rate, _] => match rate.parse::<u64>() {
            Ok(rate) => admit(state, uri.path(), rate),
            Err(_) => (StatusCode::BAD_REQUEST, "bad admission rate").into_response(),
        },
        ["redirect"] => match query_param(uri, "to") {
            Some(to) => match query_param(uri, "status").map(|c| c.parse::<u16>()) {
                None => redirect(&to),
                Some(Ok(code @ 300..=399)) => redirect_with(code, &to),
                Some(_) => (StatusCode::BAD_REQUEST, "bad redirect status").into_response(),
            },
            None => (StatusCode::BAD_REQUEST, "missing ?to=").into_response(),
        },
        ["redirect-chain", n] => match n.parse::<u32>() {
            Ok(0) => (StatusCode::OK, "ok").into_response(),
            Ok(n) => redirect(&format!("/redirect-chain/{}", n - 1)),
            Err(_) => (StatusCode::BAD_REQUEST, "bad hop count").into_response(),
        },
        ["binary", kind] => binary_body(kind),
        ["bytes", n] => match n.parse::<u64>() {
            Ok(n) => streamed_body(n),
            Err(_) => (StatusCode::BAD_REQUEST, "bad length").into_response(),
        },
        ["echo"] => {
            let echo = serde_json::json!({
                "method": method.as_str(),
                "path": uri.path(),
                "query": uri.query(),
                "idempotency_key": idempotency_key,
                "signature_valid": signature_valid,
                "content_type": headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                "body": String::from_utf8_lossy(body),
            });
            axum::Json(echo).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such route").into_response(),
    }
}

/// `/admit/{rate}[/{key}]`: the first `rate` requests of each wall-clock
/// second (fixed windows) on this path are admitted, the rest throttled,
/// as a rate-limited API does. Each path keeps its own count, so the
/// benchmarks sharing a target do not share a budget.
fn admit(state: &AppState, path: &str, rate: u64) -> Response {
    let second = Utc::now().timestamp();
    let admitted = {
        // Every critical section is one lookup and one update.
        let mut windows = state.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(path.to_owned()).or_insert(Window {
            second,
            admitted: 0,
        });
        if window.second != second {
            *window = Window {
                second,
                admitted: 0,
            };
        }
        let admitted = window.admitted < rate;
        if admitted {
            window.admitted += 1;
        }
        admitted
    };
    if admitted {
        state.stats.admitted.fetch_add(1, Ordering::SeqCst);
        (StatusCode::OK, "ok").into_response()
    } else {
        state.stats.throttled.fetch_add(1, Ordering::SeqCst);
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "over the rate",
        )
            .into_response()
    }
}

fn check_signature(config: &TargetConfig, headers: &HeaderMap, body: &[u8]) -> Option<bool> {
    if config.secrets.is_empty() {
        return None;
    }
    let valid = headers
        .get(signing::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| {
            signing::verify(
                &config.secrets,
                h,
                body,
                Utc::now().timestamp(),
                config.tolerance_secs,
            )
            .is_ok()
        });
    Some(valid)
}

/// Sleep, but end early when the server shuts down so graceful shutdown
/// does not wait an hour for `/hang`.
async fn wait(duration: Duration, mut shutdown: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(duration.min(MAX_WAIT)) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    let params: HashMap<_, _> = url::form_urlencoded::parse(query.as_bytes()).collect();
    params.get(name).map(|v| v.to_string())
}

fn redirect(location: &str) -> Response {
    redirect_with(302, location)
}

fn redirect_with(code: u16, location: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND),
        [(header::LOCATION, location.to_owned())],
        "redirecting",
    )
        .into_response()
}

/// Bodies a target may well send and Postgres would refuse as text.
fn binary_body(kind: &str) -> Response {
    // The first bytes of a gzip stream and of a PNG file.
    const GZIP: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00,
    ];
    const TEXT: (header::HeaderName, &str) = (header::CONTENT_TYPE, "text/plain; charset=utf-8");
    const PNG: &[u8] = &[
        0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', 0, 0, 0, 0x0d,
    ];
    match kind {
        // Both claim to be text, so only their bytes give them away.
        "nul" => (StatusCode::OK, [TEXT], &b"a\0b"[..]).into_response(),
        "invalid-utf8" => {
            (StatusCode::OK, [TEXT], &[b'a', 0xff, 0xfe, b'b', 0xe9][..]).into_response()
        }
        "gzip" => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            GZIP,
        )
            .into_response(),
        "png" => (StatusCode::OK, [(header::CONTENT_TYPE, "image/png")], PNG).into_response(),
        _ => (StatusCode::NOT_FOUND, "no such binary body").into_response(),
    }
}

fn streamed_body(len: u64) -> Response {
    const CHUNK: u64 = 16 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
        let size = (len - i * CHUNK).min(CHUNK);
        // `size <= CHUNK`, which fits in usize.
        Ok::<_, Infallible>(chunk.slice(..size as usize))
    });
    Body::from_stream(futures::stream::iter(chunks)).into_response()
}

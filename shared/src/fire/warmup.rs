//! The first connection to an HTTPS origin goes before the rest of a burst.
//!
//! Whether an HTTPS origin speaks HTTP/2 is known only once a TLS handshake
//! has negotiated ALPN. Until then hyper opens one connection per request:
//! a cold burst of 100 requests to one HTTP/2 host made 100 TLS handshakes,
//! kept the connection that finished first and dropped the other 99
//! (measured in `sundial bench memory --proto https2`: the handshakes cost
//! CPU, and their sessions sat in memory beside the requests).
//!
//! [`Warmup`] lets one request per cold origin go first and holds the
//! others in the [pool](super::pool) (holding no slot) until that request's
//! connection is up and has been handed to hyper's pool. Then they all go:
//! over HTTP/2 they become streams on that connection, over HTTP/1.1 they
//! open their own connections as before, one handshake later.
//!
//! "Up" is seen in two steps. The connector layer ([`Warmup::layer`]) marks
//! the origin *connected* when its TCP + TLS connect returns; hyper then
//! finishes the HTTP/2 handshake and pools the connection on the first
//! request's next poll, so the pool releases the origin once that request
//! has been polled again after the connect (or has finished). An origin
//! that stays cold longer than the connect timeout is released anyway:
//! the gate saves handshakes, it must never hold requests back for long.
//!
//! An origin unused for the idle timeout of the connection pool is cold
//! again (its connections are gone), so each hourly burst of a warm Lambda
//! is gated once, not only the first.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

/// Beyond this many origins, those idle longer than the pool keeps
/// connections are forgotten (they are cold anyway).
const PRUNE_ABOVE: usize = 4096;

/// What the pool may do with a request to an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The origin is warm (or is not gated): start the request.
    Go,
    /// The origin is cold and nobody is connecting: this request goes first.
    First,
    /// Another request is opening the origin's first connection: wait.
    Wait,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The first request has started.
    Opening,
    /// It is connecting (its request found no pooled connection).
    Dialing,
    /// Its TCP + TLS connect returned; hyper is pooling the connection.
    Connected,
    /// Released: everyone goes.
    Up,
}

#[derive(Debug, Clone, Copy)]
struct Origin {
    phase: Phase,
    /// When the phase began (`Opening`), or the origin was last used (`Up`).
    since: Instant,
}

/// The per-origin warm-up state of one process (see the module docs).
#[derive(Debug)]
pub struct Warmup {
    origins: Mutex<HashMap<String, Origin>>,
    /// How long the pool keeps idle connections.
    idle: Duration,
    /// Longest a cold origin holds requests back.
    max_wait: Duration,
}

impl Warmup {
    /// A warm-up for a client whose pool keeps idle connections for `idle`
    /// and whose connect timeout is `connect_timeout`.
    pub fn new(idle: Duration, connect_timeout: Duration) -> Self {
        Self {
            origins: Mutex::new(HashMap::new()),
            idle,
            max_wait: connect_timeout + Duration::from_secs(1),
        }
    }

    /// The connector layer that reports connects to this warm-up; give it
    /// to `reqwest::ClientBuilder::connector_layer`.
    pub fn layer(self: &Arc<Self>) -> WarmupLayer {
        WarmupLayer(Arc::clone(self))
    }

    /// What a request to `origin` may do now; does not change the state.
    pub fn check(&self, origin: &str, now: Instant) -> Admit {
        let origins = self.lock();
        match origins.get(origin) {
            None => Admit::First,
            Some(o) => self.admit(o, now),
        }
    }

    /// A request to `origin` starts: `true` if it is the first of a cold
    /// origin (the pool then [releases](Self::release) the origin when
    /// its connection is up).
    pub fn claim(&self, origin: &str, now: Instant) -> bool {
        let mut origins = self.lock();
        if origins.len() > PRUNE_ABOVE {
            let idle = self.idle;
            origins.retain(|_, o| now.saturating_duration_since(o.since) <= idle);
        }
        let first = origins
            .get(origin)
            .is_none_or(|o| self.admit(o, now) == Admit::First);
        if first {
            let opening = Origin {
                phase: Phase::Opening,
                since: now,
            };
            origins.insert(origin.to_owned(), opening);
        } else if let Some(o) = origins.get_mut(origin) {
            if matches!(o.phase, Phase::Up) {
                o.since = now;
            }
        }
        first
    }

    /// Whether the first request's connect to `origin` has returned.
    pub fn is_connected(&self, origin: &str) -> bool {
        matches!(self.phase(origin), Some(Phase::Connected))
    }

    /// Whether a connect to `origin` was started since it was claimed; a
    /// first request that started none has found a pooled connection.
    pub fn is_dialing(&self, origin: &str) -> bool {
        matches!(self.phase(origin), Some(Phase::Dialing | Phase::Connected))
    }

    /// Whether `origin` has been released (everyone goes).
    pub fn is_up(&self, origin: &str) -> bool {
        matches!(self.phase(origin), Some(Phase::Up))
    }

    fn phase(&self, origin: &str) -> Option<Phase> {
        self.lock().get(origin).map(|o| o.phase)
    }

    /// Let every request to `origin` go.
    pub fn release(&self, origin: &str, now: Instant) {
        let mut origins = self.lock();
        origins.insert(
            origin.to_owned(),
            Origin {
                phase: Phase::Up,
                since: now,
            },
        );
    }

    /// A request to `origin` finished: its connection is idle from now.
    pub fn touch(&self, origin: &str, now: Instant) {
        let mut origins = self.lock();
        if let Some(o) = origins.get_mut(origin) {
            if matches!(o.phase, Phase::Up) {
                o.since = now;
            }
        }
    }

    pub(super) fn dialing(&self, origin: &str) {
        let mut origins = self.lock();
        if let Some(o) = origins.get_mut(origin) {
            if matches!(o.phase, Phase::Opening) {
                o.phase = Phase::Dialing;
            }
        }
    }

    /// A connect returned. One the pool did not gate (a request fired
    /// outside it) still tells it the origin has a connection now.
    fn connected(&self, origin: &str, now: Instant) {
        let mut origins = self.lock();
        let o = origins.entry(origin.to_owned()).or_insert(Origin {
            phase: Phase::Up,
            since: now,
        });
        if matches!(o.phase, Phase::Opening | Phase::Dialing) {
            o.phase = Phase::Connected;
        }
    }

    fn admit(&self, o: &Origin, now: Instant) -> Admit {
        let age = now.saturating_duration_since(o.since);
        match o.phase {
            Phase::Up if age > self.idle => Admit::First,
            Phase::Up => Admit::Go,
            // The first request is taking too long: stop holding the rest.
            Phase::Opening | Phase::Dialing | Phase::Connected if age > self.max_wait => Admit::Go,
            Phase::Opening | Phase::Dialing | Phase::Connected => Admit::Wait,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Origin>> {
        // The map is only ever left consistent (no panics under the lock).
        self.origins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The warm-up key of a URL: `host:port` of an `https` URL, `None` for
/// anything else (plain HTTP is always HTTP/1.1: nothing to learn first).
pub fn origin_of(url: &Url) -> Option<String> {
    if url.scheme() != "https" {
        return None;
    }
    host_port(url)
}

/// Lower-cased `host:port` of a URL (the default port if none is given),
/// the key of the pool's per-host caps too.
pub(super) fn host_port(url: &Url) -> Option<String> {
    let host = url.host_str()?.to_ascii_lowercase();
    Some(format!("{host}:{}", url.port_or_known_default()?))
}

/// The first request to a cold origin: releases the origin once it has
/// been polled after its connect returned, when its first poll started no
/// connect (it found one pooled), or when it finishes.
pub struct FirstToOrigin<F> {
    inner: Pin<Box<F>>,
    warmup: Arc<Warmup>,
    origin: String,
    polled: bool,
    released: bool,
}

impl<F> FirstToOrigin<F> {
    /// Wrap the first request's future.
    pub fn new(inner: F, warmup: Arc<Warmup>, origin: String) -> Self {
        Self {
            inner: Box::pin(inner),
            warmup,
            origin,
            polled: false,
            released: false,
        }
    }
}

impl<F: Future> Future for FirstToOrigin<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let connected_before = !self.released && self.warmup.is_connected(&self.origin);
        let polled = self.inner.as_mut().poll(cx);
        let first_poll = !std::mem::replace(&mut self.polled, true);
        let reused = first_poll && !self.released && !self.warmup.is_dialing(&self.origin);
        // The direct HTTP/2 path releases the origin itself once its
        // connection is in place (`super::direct`).
        let up = !self.released && self.warmup.is_up(&self.origin);
        if !self.released && (connected_before || reused || up || polled.is_ready()) {
            self.released = true;
            self.warmup.release(&self.origin, Instant::now());
            // Wake the pool that holds the origin's other requests.
            cx.waker().wake_by_ref();
        }
        polled
    }
}

/// A `tower::Layer` over reqwest's connector that reports finished connects
/// to its [`Warmup`].
#[derive(Debug, Clone)]
pub struct WarmupLayer(Arc<Warmup>);

impl<S> tower::Layer<S> for WarmupLayer {
    type Service = WarmupService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WarmupService {
            inner,
            warmup: Arc::clone(&self.0),
        }
    }
}

/// The service of [`WarmupLayer`].
#[derive(Debug, Clone)]
pub struct WarmupService<S> {
    inner: S,
    warmup: Arc<Warmup>,
}

type Connecting<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, R> tower::Service<R> for WarmupService<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
    R: Debug,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Connecting<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, destination: R) -> Self::Future {
        let origin = origin_of_destination(&format!("{destination:?}"));
        let connect = self.inner.call(destination);
        let warmup = Arc::clone(&self.warmup);
        if let Some(origin) = &origin {
            warmup.dialing(origin);
        }
        Box::pin(async move {
            let connected = connect.await;
            if let Some(origin) = origin {
                warmup.connected(&origin, Instant::now());
            }
            connected
        })
    }
}

/// reqwest hands connectors an opaque destination whose `Debug` is
/// `Unnameable(https://host:port/)`; the URI inside is the pool's key.
/// `None` if the form ever changes: the pool then releases an origin when
/// its first request finishes (slower, never stuck).
fn origin_of_destination(debug: &str) -> Option<String> {
    let inner = debug.split_once('(')?.1.strip_suffix(')')?;
    origin_of(&Url::parse(inner).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn destinations_name_their_origin() {
        assert_eq!(
            origin_of_destination("Unnameable(https://Example.com:8443/)").as_deref(),
            Some("example.com:8443")
        );
        assert_eq!(
            origin_of_destination("Unnameable(https://example.com/)").as_deref(),
            Some("example.com:443")
        );
        assert_eq!(origin_of_destination("Unnameable(http://a:80/)"), None);
        assert_eq!(origin_of_destination("something else"), None);
    }

    #[test]
    fn one_goes_first_the_rest_wait_until_released() {
        let w = Warmup::new(IDLE, Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(w.check("a:443", t0), Admit::First);
        assert!(w.claim("a:443", t0));
        assert_eq!(w.check("a:443", t0), Admit::Wait);
        assert!(!w.is_dialing("a:443"));
        w.dialing("a:443");
        assert!(w.is_dialing("a:443") && !w.is_connected("a:443"));
        assert_eq!(w.check("a:443", t0), Admit::Wait);
        w.connected("a:443", t0);
        assert!(w.is_connected("a:443"));
        assert_eq!(w.check("a:443", t0), Admit::Wait);
        // Other origins are not held.
        assert_eq!(w.check("b:443", t0), Admit::First);
        w.release("a:443", t0);
        assert_eq!(w.check("a:443", t0), Admit::Go);
        assert!(!w.claim("a:443", t0));
    }

    #[test]
    fn a_connect_made_outside_the_pool_warms_the_origin() {
        let w = Warmup::new(IDLE, Duration::from_secs(5));
        let t0 = Instant::now();
        w.connected("a:443", t0);
        assert_eq!(w.check("a:443", t0), Admit::Go);
    }

    #[test]
    fn a_slow_first_connect_holds_the_rest_no_longer_than_the_connect_timeout() {
        let w = Warmup::new(IDLE, Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(w.claim("a:443", t0));
        assert_eq!(w.check("a:443", t0 + Duration::from_secs(5)), Admit::Wait);
        assert_eq!(w.check("a:443", t0 + Duration::from_secs(7)), Admit::Go);
    }

    #[test]
    fn an_origin_idle_past_the_pool_timeout_is_cold_again() {
        let w = Warmup::new(IDLE, Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(w.claim("a:443", t0));
        w.release("a:443", t0);
        w.touch("a:443", t0 + Duration::from_secs(50));
        assert_eq!(w.check("a:443", t0 + Duration::from_secs(100)), Admit::Go);
        assert_eq!(
            w.check("a:443", t0 + Duration::from_secs(111)),
            Admit::First
        );
        assert!(w.claim("a:443", t0 + Duration::from_secs(111)));
        assert_eq!(w.check("a:443", t0 + Duration::from_secs(111)), Admit::Wait);
    }

    #[test]
    fn only_https_urls_are_gated() {
        let url = |s| Url::parse(s).unwrap();
        assert_eq!(origin_of(&url("https://h/x")).as_deref(), Some("h:443"));
        assert_eq!(origin_of(&url("http://h/x")), None);
    }
}

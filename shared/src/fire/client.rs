//! The process-wide HTTP client used to fire targets.
//!
//! Build it once per process (Lambda cold start, `sundial dev`) and share
//! it: its connection pool is what makes repeated calls to the same host
//! cheap, and its resolver is where the target guard is enforced at
//! connect time.

use std::sync::Arc;
use std::time::Duration;

use super::guard::{GuardedResolver, TargetGuard};
use super::FireError;

/// `User-Agent` sent with every request.
pub const USER_AGENT: &str = concat!("sundial/", env!("CARGO_PKG_VERSION"));

/// Tuning of [`build_http_client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Expected number of concurrent requests; sizes the idle pool per host
    /// so a burst to one host can reuse every connection it opened.
    pub concurrency: usize,
    /// TCP (+ TLS) connect timeout. Short: a target that cannot accept a
    /// connection in this time will not do better by waiting.
    pub connect_timeout: Duration,
    /// How long idle pooled connections are kept.
    pub pool_idle_timeout: Duration,
    /// Maximum redirect hops followed (by the [`Firer`](super::Firer)).
    pub max_redirects: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            concurrency: 50,
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(60),
            max_redirects: 3,
        }
    }
}

/// Build the client: rustls, no system proxy (a proxy would resolve names
/// itself and bypass the guard), keep-alive pool, TCP nodelay, the guarded
/// resolver, and no redirect following (the [`Firer`](super::Firer) does it).
pub fn build_http_client(
    guard: Arc<TargetGuard>,
    opts: &ClientOptions,
) -> Result<reqwest::Client, FireError> {
    reqwest::Client::builder()
        .tls_backend_rustls()
        .no_proxy()
        .user_agent(USER_AGENT)
        .tcp_nodelay(true)
        .connect_timeout(opts.connect_timeout)
        .pool_max_idle_per_host(opts.concurrency.max(1))
        .pool_idle_timeout(opts.pool_idle_timeout)
        .dns_resolver(GuardedResolver::new(guard))
        // The firer follows redirects itself, so that it can choose each
        // hop's headers (see `Firer::with_max_redirects`); the guard checks
        // each hop there and in the resolver.
        .redirect(reqwest::redirect::Policy::none())
        // The Referer would leak the previous URL (and its query) to the
        // redirect target.
        .referer(false)
        .build()
        .map_err(FireError::Client)
}

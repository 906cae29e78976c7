//! The process-wide HTTP client used to fire targets.
//!
//! Build it once per process (Lambda cold start, `sundial dev`) and share
//! it: its connection pool is what makes repeated calls to the same host
//! cheap, and its resolver is where the target guard is enforced at
//! connect time.
//!
//! # Protocols and connections
//!
//! HTTPS targets get HTTP/2 when they offer it by ALPN (`h2`, then
//! `http/1.1`), HTTP/1.1 otherwise; plain `http://` targets always get
//! HTTP/1.1 (no h2c prior knowledge: few servers speak it and a wrong guess
//! costs a failed request). A [`Firer`](super::Firer) built with
//! [`ClientOptions::direct_https`] (the default) sends HTTPS requests on
//! `h2` and hyper's HTTP/1.1 connections directly rather than through this
//! client (`fire::direct`: less memory per request in flight); both dial with [`tls_config`]'s
//! configuration, so trust is the same either way. One client per process means one connection
//! pool: tasks of one host share its connections whatever task they belong
//! to.
//!
//! How the caps interact: the per-host concurrency of
//! [`fire_stream`](super::fire_stream) bounds the requests in flight to one
//! `host:port`. Over HTTP/1.1 each in-flight request holds its own
//! connection, so that cap is also the cap on open connections per host;
//! over HTTP/2 all of them are streams on one connection (hyper queues
//! streams beyond the server's `SETTINGS_MAX_CONCURRENT_STREAMS` rather
//! than opening a second connection). `pool_max_idle_per_host` only bounds
//! connections kept *idle* between bursts. HTTP/2 streams go through the
//! same driver as every other request, so they count against the global
//! and per-host limits alike.
//!
//! # Trust
//!
//! Certificates are verified against the platform's roots
//! (rustls-platform-verifier) plus any [`ClientOptions::extra_roots`]
//! (`SUNDIAL_EXTRA_CA_FILE`). There is deliberately no way to accept an
//! invalid certificate.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::ClientConfig;

use super::guard::{GuardedResolver, TargetGuard};
use super::warmup::Warmup;
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
    /// Roots trusted next to the platform's (`SUNDIAL_EXTRA_CA_FILE`): a
    /// private CA, or the throw-away CA of a local test target.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Send requests to HTTPS origins on `h2` and hyper's HTTP/1.1
    /// connections directly ([`super::direct`]: less memory per request in
    /// flight) rather than through reqwest. On by default; off only to
    /// compare.
    pub direct_https: bool,
}

impl ClientOptions {
    /// The options a processor builds its client with: the concurrency and
    /// the extra roots of the settings, defaults for the rest.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        ClientOptions {
            concurrency: settings.concurrency,
            extra_roots: settings
                .extra_ca
                .as_ref()
                .map(|ca| ca.certs.clone())
                .unwrap_or_default(),
            ..Default::default()
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            concurrency: 50,
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(60),
            max_redirects: 3,
            extra_roots: Vec::new(),
            direct_https: true,
        }
    }
}

/// Build the client: rustls (HTTP/2 by ALPN, see the module docs), no system proxy (a proxy would resolve names
/// itself and bypass the guard), keep-alive pool, TCP nodelay, the guarded
/// resolver, and no redirect following (the [`Firer`](super::Firer) does it).
pub fn build_http_client(
    guard: Arc<TargetGuard>,
    opts: &ClientOptions,
) -> Result<reqwest::Client, FireError> {
    builder(guard, opts)?.build().map_err(FireError::Client)
}

/// [`build_http_client`] whose connects report to `warmup`, so the pool
/// can send the first request to a cold HTTPS origin ahead of the rest.
pub(super) fn build_watched_client(
    guard: Arc<TargetGuard>,
    opts: &ClientOptions,
    warmup: &Arc<Warmup>,
) -> Result<reqwest::Client, FireError> {
    builder(guard, opts)?
        .connector_layer(warmup.layer())
        .build()
        .map_err(FireError::Client)
}

fn builder(
    guard: Arc<TargetGuard>,
    opts: &ClientOptions,
) -> Result<reqwest::ClientBuilder, FireError> {
    Ok(reqwest::Client::builder()
        // The same configuration the direct HTTP/2 path dials with.
        .tls_backend_preconfigured(tls_config(opts)?)
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
        // No replays inside the client: reqwest's default retries HTTP/2
        // refusals, and to do so keeps a copy of every request's headers
        // for as long as it is in flight (0.4 KiB each, found in a heap
        // profile). A refused stream is a retryable failure to Sundial's
        // own retries, which every task has anyway.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        // The Referer would leak the previous URL (and its query) to the
        // redirect target.
        .referer(false))
}

/// The rustls configuration of both firing paths: the platform's roots
/// plus [`ClientOptions::extra_roots`] (merged, not instead), certificate
/// and host name verification on, ALPN `h2` then `http/1.1`.
pub(super) fn tls_config(opts: &ClientOptions) -> Result<ClientConfig, FireError> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        opts.extra_roots.iter().cloned(),
        Arc::clone(&provider),
    )
    .map_err(FireError::Tls)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(FireError::Tls)?
        .dangerous()
        // Not a loosening: the platform verifier verifies, as reqwest's own
        // rustls backend does with these roots.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

//! Target guard: keeps user-supplied URLs away from the infrastructure.
//!
//! A scheduler that calls arbitrary URLs on behalf of users is a textbook
//! SSRF vector: a task pointing at `http://169.254.169.254/` would read the
//! Lambda's or instance's credentials, one pointing at `10.x` would probe the
//! VPC. [`TargetGuard`] refuses every block of the IANA IPv4 and IPv6
//! special-purpose address registries (loopback, private, link-local, CGNAT,
//! documentation, benchmarking, reserved, ...), multicast, and IPv6 space
//! outside global unicast, unless an allow-list entry opens them: the table
//! is [`SPECIAL_RANGES`], one row per registry entry with its RFC. IPv6
//! forms that carry an IPv4 address (mapped, translated, compatible, NAT64
//! `64:ff9b::/96`, 6to4, Teredo) are judged by the IPv4 they carry; the
//! local-use NAT64 block `64:ff9b:1::/48` is refused whole.
//!
//! The check runs in three places, because each one alone can be bypassed:
//!
//! * at registration, [`TargetGuard::check_url`] resolves the host and checks
//!   every address, so users get an early, clear error;
//! * at connect time, [`GuardedResolver`] filters what DNS returns, so a name
//!   that resolved to a public address at registration and to `127.0.0.1` now
//!   (DNS rebinding) still cannot reach loopback;
//! * before each request and on each redirect hop,
//!   [`TargetGuard::check_literal`] checks IP-literal URLs, which reqwest
//!   connects to without asking any resolver.
//!
//! All three end in the one decision [`TargetGuard::is_ip_allowed`].
//!
//! # Metadata endpoints
//!
//! The cloud metadata / credential endpoints (`169.254.169.254`,
//! `fd00:ec2::254`, and the ECS credential endpoint `169.254.170.2`) stay
//! refused even when a broad allow-list entry such as `0.0.0.0/0` or
//! `169.254.0.0/16` contains them: opening a whole range for a dev network
//! must not silently hand out credentials. Only an entry naming exactly that
//! address (`169.254.169.254` or `169.254.169.254/32`) opens it, and an
//! allow-listed *hostname* never does.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

mod ranges;
pub use ranges::*;
use ranges::{carried_metadata, strip_brackets, METADATA};
use Treatment::{Embeds, Forbidden, Public};

/// Errors of the target guard: invalid allow-list entries and refused targets.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// An allow-list entry is empty (e.g. `"a,,b"` passed to [`TargetGuard::new`]).
    #[error("allow-list entry #{index} is empty")]
    EmptyEntry {
        /// Zero-based position of the entry in the list.
        index: usize,
    },
    /// The address part of a CIDR entry is not an IP address.
    #[error("allow-list entry {entry:?}: {address:?} is not an IP address")]
    InvalidCidrAddress {
        /// The entry as given.
        entry: String,
        /// The part before the `/`.
        address: String,
    },
    /// The prefix length of a CIDR entry is not a number within the family's width.
    #[error("allow-list entry {entry:?}: prefix length must be 0..={max}")]
    InvalidPrefix {
        /// The entry as given.
        entry: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// A CIDR entry has bits set past its prefix (`10.0.0.1/8`); almost always a typo.
    #[error("allow-list entry {entry:?} has host bits set (did you mean {suggested}?)")]
    HostBitsSet {
        /// The entry as given.
        entry: String,
        /// The network address with host bits cleared.
        suggested: String,
    },
    /// An entry is neither an IP, a CIDR, nor a valid DNS host name.
    #[error("allow-list entry {entry:?} is not an IP address, CIDR or host name")]
    InvalidHostname {
        /// The entry as given.
        entry: String,
    },
    /// The target URL does not parse.
    #[error("invalid URL: {0}")]
    InvalidUrl(#[from] url::ParseError),
    /// Only plain HTTP(S) targets are fired.
    #[error("URL scheme {scheme:?} is not allowed (use http or https)")]
    UnsupportedScheme {
        /// The scheme found in the URL.
        scheme: String,
    },
    /// The URL has no host (e.g. `http:///path` after normalisation).
    #[error("URL has no host")]
    MissingHost,
    /// The host is, or resolves to, an address the guard forbids.
    #[error("target {host}: forbidden address {addr} (not opened by SUNDIAL_ALLOW_TARGETS)")]
    ForbiddenAddress {
        /// Host as written in the URL.
        host: String,
        /// The first forbidden address found.
        addr: IpAddr,
    },
    /// DNS resolution of the host failed.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// Host that was looked up.
        host: String,
        /// Resolver error.
        #[source]
        source: std::io::Error,
    },
    /// DNS returned no address at all.
    #[error("{host} resolves to no address")]
    NoAddresses {
        /// Host that was looked up.
        host: String,
    },
    /// A redirect chain was longer than the configured maximum.
    #[error("more than {max} redirects")]
    TooManyRedirects {
        /// The configured maximum number of hops.
        max: usize,
    },
}

/// Result alias for this module.
pub type Result<T, E = GuardError> = std::result::Result<T, E>;

/// Decides which targets may be fired; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct TargetGuard {
    networks: Vec<Cidr>,
    /// Addresses named exactly (bare IP or full-length prefix): only these
    /// can open a metadata address.
    exact: HashSet<IpAddr>,
    /// Lower-case host names without trailing dot.
    hosts: HashSet<String>,
}

impl TargetGuard {
    /// A guard with an allow-list of CIDRs (`10.0.0.0/8`), bare IPs
    /// (`127.0.0.1`, `::1`) and host names (exact, case-insensitive match).
    /// Errors name the offending entry.
    pub fn new(allow: &[String]) -> Result<Self> {
        let mut guard = Self::default();
        for (index, raw) in allow.iter().enumerate() {
            let entry = raw.trim();
            if entry.is_empty() {
                return Err(GuardError::EmptyEntry { index });
            }
            guard.add_entry(entry)?;
        }
        Ok(guard)
    }

    /// Parse the `SUNDIAL_ALLOW_TARGETS` format: comma-separated entries;
    /// blanks around entries and empty entries (trailing comma) are ignored.
    pub fn from_env_value(value: &str) -> Result<Self> {
        let entries: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        Self::new(&entries)
    }

    fn add_entry(&mut self, entry: &str) -> Result<()> {
        if let Some((addr, prefix)) = entry.split_once('/') {
            let net = Cidr::parse(entry, addr, prefix)?;
            if let Some(ip) = net.single_address() {
                self.exact.insert(canonical(ip));
            }
            self.networks.push(net);
        } else if let Ok(ip) = strip_brackets(entry).parse::<IpAddr>() {
            // Canonical, so `::ffff:127.0.0.1` opens what it reaches: 127.0.0.1.
            let ip = canonical(ip);
            let full = if ip.is_ipv4() { 32 } else { 128 };
            self.exact.insert(ip);
            self.networks.push(Cidr {
                network: ip,
                prefix: full,
            });
        } else {
            let host = normalise_host(entry);
            if !is_valid_hostname(&host) {
                return Err(GuardError::InvalidHostname {
                    entry: entry.to_owned(),
                });
            }
            self.hosts.insert(host);
        }
        Ok(())
    }

    /// May a connection be made to `ip`? This is the one decision every
    /// path uses: IP literals (before each request and on each redirect
    /// hop) and every address DNS answers.
    pub fn is_ip_allowed(&self, ip: IpAddr) -> bool {
        let canon = canonical(ip);
        if METADATA.contains(&canon) {
            return self.exact.contains(&canon);
        }
        let opened = || {
            self.networks
                .iter()
                .any(|net| net.contains(canon) || net.contains(ip))
        };
        match special_range(canon).map(|r| r.treatment) {
            None | Some(Public) => true,
            // A form that may carry a metadata address (local-use NAT64)
            // also needs that address's exact entry.
            Some(Forbidden) => {
                opened()
                    && carried_metadata(canon)
                        .iter()
                        .all(|m| self.exact.contains(m))
            }
            Some(Embeds(_)) => {
                let carried = embedded_ipv4(canon);
                // Each carried address must be allowed on its own, or the
                // whole carrier opened (never for a metadata address).
                carried.iter().all(|v4| self.is_ip_allowed(IpAddr::V4(*v4)))
                    || (carried_metadata(canon).is_empty() && opened())
            }
        }
    }

    /// Is this host name allow-listed by name (then its addresses are not checked)?
    pub fn is_host_allowed(&self, host: &str) -> bool {
        !self.hosts.is_empty() && self.hosts.contains(&normalise_host(host))
    }

    /// May an address that `host` resolved to be used? An allow-listed name
    /// opens every address it resolves to except metadata endpoints.
    fn is_resolved_allowed(&self, host_allowed: bool, ip: IpAddr) -> bool {
        if host_allowed && !is_metadata_address(ip) {
            return true;
        }
        self.is_ip_allowed(ip)
    }

    /// The checks that need no DNS: scheme, host present, IP-literal host
    /// allowed. Run before every request and on every redirect hop, because
    /// reqwest connects to IP literals without consulting the resolver.
    pub fn check_literal(&self, url: &Url) -> Result<()> {
        check_scheme(url)?;
        let ip = match url.host() {
            None => return Err(GuardError::MissingHost),
            Some(Host::Domain(_)) => return Ok(()),
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        if self.is_ip_allowed(ip) {
            Ok(())
        } else {
            Err(GuardError::ForbiddenAddress {
                host: url.host_str().unwrap_or_default().to_owned(),
                addr: ip,
            })
        }
    }

    /// Registration-time check: parses `url`, requires http(s) and a host,
    /// checks an IP literal, and resolves a host name and checks *every*
    /// address it resolves to (unless the name itself is allow-listed).
    /// Returns the parsed URL.
    pub async fn check_url(&self, url: &str) -> Result<Url> {
        let parsed = Url::parse(url)?;
        self.check_literal(&parsed)?;
        let Some(Host::Domain(domain)) = parsed.host() else {
            return Ok(parsed);
        };
        let host_allowed = self.is_host_allowed(domain);
        let port = parsed.port_or_known_default().unwrap_or(0);
        let addrs = lookup(domain, port).await?;
        if let Some(bad) = addrs
            .iter()
            .find(|a| !self.is_resolved_allowed(host_allowed, a.ip()))
        {
            return Err(GuardError::ForbiddenAddress {
                host: domain.to_owned(),
                addr: bad.ip(),
            });
        }
        Ok(parsed)
    }

    /// Connect-time filter: keep only the allowed addresses of `host`.
    /// Errors when none remain, naming the first refused address.
    pub async fn resolve_allowed(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let host_allowed = self.is_host_allowed(host);
        let addrs = lookup(host, port).await?;
        let mut refused = None;
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| {
                let ok = self.is_resolved_allowed(host_allowed, a.ip());
                if !ok {
                    refused.get_or_insert(a.ip());
                }
                ok
            })
            .collect();
        match (kept.is_empty(), refused) {
            (false, _) => Ok(kept),
            (true, Some(addr)) => Err(GuardError::ForbiddenAddress {
                host: host.to_owned(),
                addr,
            }),
            (true, None) => Err(GuardError::NoAddresses {
                host: host.to_owned(),
            }),
        }
    }
}

fn check_scheme(url: &Url) -> Result<()> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(GuardError::UnsupportedScheme {
            scheme: other.to_owned(),
        }),
    }
}

async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| GuardError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(GuardError::NoAddresses {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// RFC 1123 host name. A name whose last label is numeric is rejected: URL
/// parsers read such hosts (`127.1`) as IPv4, so the entry would never match.
fn is_valid_hostname(host: &str) -> bool {
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    !host.is_empty() && host.len() <= 253 && labels_ok && !last_numeric
}

/// A reqwest DNS resolver that drops forbidden addresses, closing the DNS
/// rebinding gap between registration and connect time.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<TargetGuard>,
}

impl GuardedResolver {
    /// Resolver enforcing `guard`.
    pub fn new(guard: Arc<TargetGuard>) -> Self {
        Self { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest substitutes the URL's port.
            let addrs = guard.resolve_allowed(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests;

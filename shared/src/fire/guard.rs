//! Target guard: keeps user-supplied URLs away from the infrastructure.
//!
//! A scheduler that calls arbitrary URLs on behalf of users is a textbook
//! SSRF vector: a task pointing at `http://169.254.169.254/` would read the
//! Lambda's or instance's credentials, one pointing at `10.x` would probe the
//! VPC. [`TargetGuard`] refuses loopback, private, link-local, CGNAT,
//! unspecified, broadcast, multicast and reserved addresses (and the IPv4
//! forms embedded in IPv6: mapped, compatible and NAT64) unless an allow-list
//! entry opens them.
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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

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

/// An IP network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self {
            network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Parse `addr/prefix`; `entry` is only used to name the entry in errors.
    fn parse(entry: &str, addr: &str, prefix: &str) -> Result<Self> {
        let network: IpAddr =
            strip_brackets(addr)
                .parse()
                .map_err(|_| GuardError::InvalidCidrAddress {
                    entry: entry.to_owned(),
                    address: addr.to_owned(),
                })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 =
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| GuardError::InvalidPrefix {
                    entry: entry.to_owned(),
                    max,
                })?;
        let masked = mask(network, prefix);
        if masked != network {
            return Err(GuardError::HostBitsSet {
                entry: entry.to_owned(),
                suggested: format!("{masked}/{prefix}"),
            });
        }
        Ok(Self { network, prefix })
    }

    /// Does this network contain `ip`? Families never match each other.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }

    /// A single-address network (`/32`, `/128`).
    fn single_address(&self) -> Option<IpAddr> {
        let full = if self.network.is_ipv4() { 32 } else { 128 };
        (self.prefix == full).then_some(self.network)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

fn strip_brackets(s: &str) -> &str {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s)
}

/// Networks refused unless allow-listed. Public unicast space is everything else.
const FORBIDDEN: &[Cidr] = &[
    Cidr::v4(0, 0, 0, 0, 8),      // "this network", incl. unspecified 0.0.0.0
    Cidr::v4(10, 0, 0, 0, 8),     // RFC 1918
    Cidr::v4(100, 64, 0, 0, 10),  // carrier-grade NAT (RFC 6598)
    Cidr::v4(127, 0, 0, 0, 8),    // loopback
    Cidr::v4(169, 254, 0, 0, 16), // link-local, incl. instance metadata
    Cidr::v4(172, 16, 0, 0, 12),  // RFC 1918
    Cidr::v4(192, 0, 0, 0, 24),   // IETF protocol assignments
    Cidr::v4(192, 168, 0, 0, 16), // RFC 1918
    Cidr::v4(198, 18, 0, 0, 15),  // benchmarking
    Cidr::v4(224, 0, 0, 0, 4),    // multicast
    Cidr::v4(240, 0, 0, 0, 4),    // reserved, incl. broadcast 255.255.255.255
    Cidr::v6([0; 8], 128),        // unspecified ::
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), // loopback ::1
    Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only
    Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique local (ULA)
    Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // deprecated site-local
    Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast
];

/// Cloud metadata / credential endpoints; see the module docs.
const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// The address to judge: an IPv6 address that merely wraps an IPv4 one
/// (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, deprecated compatible
/// `::a.b.c.d`) reaches that IPv4 host, so it is judged as that IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let [a, b, c, d, e, f, _, _] = v6.segments();
    let low = (u128::from(v6) & 0xffff_ffff) as u32;
    let nat64 = [a, b, c, d, e, f] == [0x64, 0xff9b, 0, 0, 0, 0];
    // `::` and `::1` are IPv6 addresses in their own right, not compatible forms.
    let compatible = [a, b, c, d, e, f] == [0; 6] && low > 1;
    if nat64 || compatible {
        return IpAddr::V4(Ipv4Addr::from(low));
    }
    ip
}

/// Is `ip` refused when no allow-list entry opens it?
pub fn is_forbidden_by_default(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    FORBIDDEN.iter().any(|net| net.contains(ip))
}

/// Is `ip` a cloud metadata / credential endpoint (after canonicalisation)?
pub fn is_metadata_address(ip: IpAddr) -> bool {
    METADATA.contains(&canonical(ip))
}

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

    /// May a connection be made to `ip`?
    pub fn is_ip_allowed(&self, ip: IpAddr) -> bool {
        let canon = canonical(ip);
        if is_metadata_address(canon) {
            return self.exact.contains(&canon);
        }
        !is_forbidden_by_default(canon)
            || self
                .networks
                .iter()
                .any(|net| net.contains(canon) || net.contains(ip))
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

/// Redirect policy: at most `max_hops` redirects, and every hop's URL must
/// pass [`TargetGuard::check_literal`] (host names are covered by the
/// resolver when the hop connects).
pub fn redirect_policy(guard: Arc<TargetGuard>, max_hops: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        // `previous` holds the URLs already requested, the original included,
        // so it equals the number of this hop.
        if attempt.previous().len() > max_hops {
            return attempt.error(GuardError::TooManyRedirects { max: max_hops });
        }
        match guard.check_literal(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard(entries: &[&str]) -> TargetGuard {
        TargetGuard::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn default_refuses_internal_ranges() {
        let g = TargetGuard::default();
        for bad in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!g.is_ip_allowed(ip(bad)), "{bad} should be refused");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert!(g.is_ip_allowed(ip(good)), "{good} should be allowed");
        }
    }

    #[test]
    fn allow_list_opens_ranges() {
        let g = guard(&["127.0.0.1/32", "::1/128", "10.0.0.0/8", "192.168.1.7"]);
        assert!(guard(&["::ffff:10.9.9.9"]).is_ip_allowed(ip("10.9.9.9")));
        assert!(g.is_ip_allowed(ip("127.0.0.1")));
        assert!(g.is_ip_allowed(ip("::ffff:127.0.0.1")));
        assert!(!g.is_ip_allowed(ip("127.0.0.2")));
        assert!(g.is_ip_allowed(ip("::1")));
        assert!(g.is_ip_allowed(ip("10.200.0.1")));
        assert!(g.is_ip_allowed(ip("192.168.1.7")));
        assert!(!g.is_ip_allowed(ip("192.168.1.8")));
    }

    #[test]
    fn metadata_needs_an_exact_entry() {
        for broad in ["0.0.0.0/0", "169.254.0.0/16", "169.254.169.0/24"] {
            let g = guard(&[broad]);
            assert!(!g.is_ip_allowed(ip("169.254.169.254")), "{broad}");
            assert!(!g.is_ip_allowed(ip("::ffff:169.254.169.254")), "{broad}");
        }
        assert!(guard(&["169.254.0.0/16"]).is_ip_allowed(ip("169.254.1.1")));
        assert!(!guard(&["::/0", "fd00::/8"]).is_ip_allowed(ip("fd00:ec2::254")));
        assert!(guard(&["169.254.169.254"]).is_ip_allowed(ip("169.254.169.254")));
        assert!(guard(&["169.254.169.254/32"]).is_ip_allowed(ip("169.254.169.254")));
        assert!(guard(&["fd00:ec2::254/128"]).is_ip_allowed(ip("fd00:ec2::254")));
    }

    #[test]
    fn parse_errors_name_the_entry() {
        let cases = [
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.300/8", "not an IP"),
            ("::1/129", "prefix length"),
            ("10.0.0.0/x", "prefix length"),
            ("bad host!", "not an IP address, CIDR or host name"),
            ("127.1", "not an IP address, CIDR or host name"),
        ];
        for (entry, needle) in cases {
            let err = TargetGuard::new(&[entry.to_string()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(entry), "{err}");
            assert!(err.contains(needle), "{err}");
        }
        assert!(matches!(
            TargetGuard::new(&["".to_string()]),
            Err(GuardError::EmptyEntry { index: 0 })
        ));
    }

    #[test]
    fn env_value_and_hostnames() {
        let g = TargetGuard::from_env_value(" 127.0.0.1/32 , Example.COM., [::1] ,").unwrap();
        assert!(g.is_ip_allowed(ip("127.0.0.1")));
        assert!(g.is_ip_allowed(ip("::1")));
        assert!(g.is_host_allowed("example.com"));
        assert!(g.is_host_allowed("EXAMPLE.com."));
        assert!(!g.is_host_allowed("sub.example.com"));
        assert!(TargetGuard::from_env_value("").unwrap().hosts.is_empty());
    }

    #[test]
    fn cidr_contains() {
        let net = Cidr::parse("x", "10.0.0.0", "8").unwrap();
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("::ffff:10.0.0.1")));
        let all = Cidr::parse("x", "0.0.0.0", "0").unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(!all.contains(ip("::1")));
        assert_eq!(net.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn literal_checks() {
        let g = TargetGuard::default();
        let check = |u: &str| g.check_literal(&Url::parse(u).unwrap());
        assert!(matches!(
            check("ftp://example.com/"),
            Err(GuardError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            check("http://169.254.169.254/latest/meta-data/"),
            Err(GuardError::ForbiddenAddress { .. })
        ));
        // URL parsers normalise odd IPv4 spellings; they must not slip through.
        assert!(check("http://0x7f.1/").is_err());
        assert!(check("http://2130706433/").is_err());
        assert!(check("http://[::ffff:7f00:1]/").is_err());
        assert!(check("https://example.com/").is_ok());
    }
}

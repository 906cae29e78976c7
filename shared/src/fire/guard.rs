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

/// How the guard treats the addresses of one [`SpecialRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Refused unless an allow-list entry opens it.
    Forbidden,
    /// Ordinary public unicast space (only `2000::/3`, the one IPv6 block
    /// allocated for global unicast, needs saying: everything else of IPv6
    /// is refused by the `::/0` row).
    Public,
    /// An IPv6 form that carries IPv4 addresses: judged by those.
    Embeds(Embedding),
}

/// Where an IPv6 form keeps the IPv4 address(es) it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// The last 32 bits (mapped, translated, compatible, NAT64 `/96`).
    Low32,
    /// 6to4: bits 16..48.
    SixToFour,
    /// Teredo: the server in bits 32..64 and the client in the last 32 bits
    /// XOR `0xffff_ffff`; both are judged.
    Teredo,
}

/// One row of the special-purpose address table.
#[derive(Debug, Clone, Copy)]
pub struct SpecialRange {
    /// The block.
    pub network: Cidr,
    /// Its name in the registry.
    pub name: &'static str,
    /// Where it is defined.
    pub rfc: &'static str,
    /// What the guard does with it.
    pub treatment: Treatment,
}

const fn row(
    network: Cidr,
    name: &'static str,
    rfc: &'static str,
    treatment: Treatment,
) -> SpecialRange {
    SpecialRange {
        network,
        name,
        rfc,
        treatment,
    }
}

use Treatment::{Embeds, Forbidden, Public};

/// The IANA IPv4 and IPv6 Special-Purpose Address Registries
/// (<https://www.iana.org/assignments/iana-ipv4-special-registry>,
/// <https://www.iana.org/assignments/iana-ipv6-special-registry>), every
/// entry, plus the blocks those registries leave to others (multicast,
/// IPv6 space outside global unicast, retired site-local, the obsolete
/// IPv4-translated form). No webhook lives at any of them, so every entry
/// is refused, the anycast service addresses the registry marks globally
/// reachable (PCP, TURN, AS112, AMT, ...) included; forms that carry an
/// IPv4 address are judged by that address instead. The most specific row
/// containing an address decides.
#[rustfmt::skip]
pub static SPECIAL_RANGES: &[SpecialRange] = &[
    // IPv4 special-purpose registry.
    row(Cidr::v4(0, 0, 0, 0, 8), "\"This network\"", "RFC 791 §3.2", Forbidden),
    row(Cidr::v4(0, 0, 0, 0, 32), "\"This host on this network\"", "RFC 1122 §3.2.1.3", Forbidden),
    row(Cidr::v4(10, 0, 0, 0, 8), "Private-Use", "RFC 1918", Forbidden),
    row(Cidr::v4(100, 64, 0, 0, 10), "Shared Address Space", "RFC 6598", Forbidden),
    row(Cidr::v4(127, 0, 0, 0, 8), "Loopback", "RFC 1122 §3.2.1.3", Forbidden),
    row(Cidr::v4(169, 254, 0, 0, 16), "Link Local", "RFC 3927", Forbidden),
    row(Cidr::v4(172, 16, 0, 0, 12), "Private-Use", "RFC 1918", Forbidden),
    row(Cidr::v4(192, 0, 0, 0, 24), "IETF Protocol Assignments", "RFC 6890 §2.1", Forbidden),
    row(Cidr::v4(192, 0, 0, 0, 29), "IPv4 Service Continuity Prefix", "RFC 7335", Forbidden),
    row(Cidr::v4(192, 0, 0, 8, 32), "IPv4 dummy address", "RFC 7600", Forbidden),
    row(Cidr::v4(192, 0, 0, 9, 32), "Port Control Protocol Anycast", "RFC 7723", Forbidden),
    row(Cidr::v4(192, 0, 0, 10, 32), "Traversal Using Relays around NAT Anycast", "RFC 8155", Forbidden),
    row(Cidr::v4(192, 0, 0, 170, 32), "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", Forbidden),
    row(Cidr::v4(192, 0, 0, 171, 32), "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", Forbidden),
    row(Cidr::v4(192, 0, 2, 0, 24), "Documentation (TEST-NET-1)", "RFC 5737", Forbidden),
    row(Cidr::v4(192, 31, 196, 0, 24), "AS112-v4", "RFC 7535", Forbidden),
    row(Cidr::v4(192, 52, 193, 0, 24), "AMT", "RFC 7450", Forbidden),
    row(Cidr::v4(192, 88, 99, 0, 24), "Deprecated (6to4 Relay Anycast)", "RFC 7526", Forbidden),
    row(Cidr::v4(192, 88, 99, 2, 32), "6a44-relay anycast address", "RFC 6751", Forbidden),
    row(Cidr::v4(192, 168, 0, 0, 16), "Private-Use", "RFC 1918", Forbidden),
    row(Cidr::v4(192, 175, 48, 0, 24), "Direct Delegation AS112 Service", "RFC 7534", Forbidden),
    row(Cidr::v4(198, 18, 0, 0, 15), "Benchmarking", "RFC 2544", Forbidden),
    row(Cidr::v4(198, 51, 100, 0, 24), "Documentation (TEST-NET-2)", "RFC 5737", Forbidden),
    row(Cidr::v4(203, 0, 113, 0, 24), "Documentation (TEST-NET-3)", "RFC 5737", Forbidden),
    row(Cidr::v4(240, 0, 0, 0, 4), "Reserved", "RFC 1112 §4", Forbidden),
    row(Cidr::v4(255, 255, 255, 255, 32), "Limited Broadcast", "RFC 8190, RFC 919 §7", Forbidden),
    // IPv4 blocks outside that registry.
    row(Cidr::v4(224, 0, 0, 0, 4), "Multicast (IPv4 Multicast Address Space Registry)", "RFC 5771", Forbidden),
    // IPv6 special-purpose registry.
    row(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "Unspecified Address", "RFC 4291", Forbidden),
    row(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "Loopback Address", "RFC 4291", Forbidden),
    row(Cidr::v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), "IPv4-mapped Address", "RFC 4291", Embeds(Embedding::Low32)),
    row(Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), "IPv4-IPv6 Translat.", "RFC 6052", Embeds(Embedding::Low32)),
    // Local-use NAT64: the translator is the operator's own, and its
    // prefix length (so where the IPv4 bits sit) is unknown: refused whole.
    row(Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "IPv4-IPv6 Translat.", "RFC 8215", Forbidden),
    row(Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "Discard-Only Address Block", "RFC 6666", Forbidden),
    row(Cidr::v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64), "Dummy IPv6 Prefix", "RFC 9780", Forbidden),
    row(Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), "IETF Protocol Assignments", "RFC 2928", Forbidden),
    row(Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "TEREDO", "RFC 4380, RFC 8190", Embeds(Embedding::Teredo)),
    row(Cidr::v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128), "Port Control Protocol Anycast", "RFC 7723", Forbidden),
    row(Cidr::v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128), "Traversal Using Relays around NAT Anycast", "RFC 8155", Forbidden),
    row(Cidr::v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128), "DNS-SD Service Registration Protocol Anycast", "RFC 9665", Forbidden),
    row(Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), "Benchmarking", "RFC 5180, RFC Errata 1752", Forbidden),
    row(Cidr::v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32), "AMT", "RFC 7450", Forbidden),
    row(Cidr::v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48), "AS112-v6", "RFC 7535", Forbidden),
    row(Cidr::v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28), "Deprecated (previously ORCHID)", "RFC 4843", Forbidden),
    row(Cidr::v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), "ORCHIDv2", "RFC 7343", Forbidden),
    row(Cidr::v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28), "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374", Forbidden),
    row(Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "Documentation", "RFC 3849", Forbidden),
    row(Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), "6to4", "RFC 3056", Embeds(Embedding::SixToFour)),
    row(Cidr::v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48), "Direct Delegation AS112 Service", "RFC 7534", Forbidden),
    row(Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "Documentation", "RFC 9637", Forbidden),
    row(Cidr::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), "Segment Routing (SRv6) SIDs", "RFC 9602", Forbidden),
    row(Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "Unique-Local", "RFC 4193, RFC 8190", Forbidden),
    row(Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "Link-Local Unicast", "RFC 4291", Forbidden),
    // IPv6 blocks outside that registry.
    row(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 0), "Not global unicast (IANA IPv6 Address Space: reserved, multicast ff00::/8, ...)", "RFC 4291 §2.4", Forbidden),
    row(Cidr::v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3), "Global Unicast", "RFC 4291 §2.4", Public),
    row(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 96), "IPv4-compatible Address (deprecated)", "RFC 4291 §2.5.5.1", Embeds(Embedding::Low32)),
    row(Cidr::v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), "IPv4-translated Address", "RFC 2765 §2.1", Embeds(Embedding::Low32)),
    row(Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "Site-Local (deprecated)", "RFC 3879", Forbidden),
];

/// The most specific row of [`SPECIAL_RANGES`] containing `ip`, if any
/// (always one for IPv6, thanks to the `::/0` row).
pub fn special_range(ip: IpAddr) -> Option<&'static SpecialRange> {
    SPECIAL_RANGES
        .iter()
        .filter(|r| r.network.contains(ip))
        .max_by_key(|r| r.network.prefix)
}

/// Cloud metadata / credential endpoints; see the module docs.
const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// The IPv4 addresses an IPv6 form carries (mapped, translated,
/// compatible, NAT64, 6to4, Teredo), empty for anything else.
pub fn embedded_ipv4(ip: IpAddr) -> Vec<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return Vec::new();
    };
    let bits = u128::from(v6);
    let word = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);
    match special_range(ip).map(|r| r.treatment) {
        Some(Embeds(Embedding::Low32)) => vec![word(0)],
        Some(Embeds(Embedding::SixToFour)) => vec![word(80)],
        Some(Embeds(Embedding::Teredo)) => {
            vec![word(64), Ipv4Addr::from(!((bits & 0xffff_ffff) as u32))]
        }
        _ => Vec::new(),
    }
}

/// The address to judge: an IPv6 address that merely wraps an IPv4 one
/// (mapped `::ffff:a.b.c.d`, translated `::ffff:0:a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, deprecated compatible `::a.b.c.d`) *is* that IPv4
/// host, so it is judged and allow-listed as that IPv4 address. (6to4 and
/// Teredo name a gateway, not a host: see [`embedded_ipv4`].)
pub fn canonical(ip: IpAddr) -> IpAddr {
    match special_range(ip).map(|r| r.treatment) {
        Some(Embeds(Embedding::Low32)) => {
            embedded_ipv4(ip).first().map_or(ip, |v4| IpAddr::V4(*v4))
        }
        _ => ip,
    }
}

/// Is `ip` refused when no allow-list entry opens it?
pub fn is_forbidden_by_default(ip: IpAddr) -> bool {
    !TargetGuard::default().is_ip_allowed(ip)
}

/// Is `ip` a cloud metadata / credential endpoint, or a form that carries
/// one (`::ffff:169.254.169.254`, `2002:a9fe:a9fe::`) or may carry one
/// (`64:ff9b:1::a9fe:a9fe`)?
pub fn is_metadata_address(ip: IpAddr) -> bool {
    !carried_metadata(ip).is_empty()
}

/// The metadata addresses `ip` is, carries, or, in the local-use NAT64
/// block, may carry under any of the RFC 6052 layouts its translator might
/// use (prefix lengths 48, 56, 64 and 96).
fn carried_metadata(ip: IpAddr) -> Vec<IpAddr> {
    let canon = canonical(ip);
    let mut candidates: Vec<IpAddr> = vec![canon];
    candidates.extend(embedded_ipv4(canon).into_iter().map(IpAddr::V4));
    if let IpAddr::V6(v6) = canon {
        if LOCAL_USE_NAT64.contains(canon) {
            let bits = u128::from(v6);
            // RFC 6052 §2.2: bits 64..72 (the "u" octet) never carry IPv4.
            let squeezed = ((bits >> 64) << 56) | (bits & ((1u128 << 56) - 1));
            for prefix in [48u32, 56, 64] {
                let v4 = (squeezed >> (120 - prefix - 32)) as u32;
                candidates.push(IpAddr::V4(Ipv4Addr::from(v4)));
            }
            candidates.push(IpAddr::V4(Ipv4Addr::from(bits as u32)));
        }
    }
    candidates.retain(|a| METADATA.contains(a));
    candidates.dedup();
    candidates
}

/// The local-use IPv4/IPv6 translation prefix (RFC 8215).
const LOCAL_USE_NAT64: Cidr = Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48);

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

    /// One address inside every registry entry, with the default verdict
    /// (`true` = allowed) and the row that decides it.
    #[rustfmt::skip]
    const REGISTRY_CASES: &[(&str, bool, &str)] = &[
        ("0.1.2.3", false, "\"This network\""),
        ("0.0.0.0", false, "\"This host on this network\""),
        ("10.20.30.40", false, "Private-Use"),
        ("100.100.0.1", false, "Shared Address Space"),
        ("127.0.0.1", false, "Loopback"),
        ("169.254.1.1", false, "Link Local"),
        ("172.20.0.1", false, "Private-Use"),
        ("192.0.0.200", false, "IETF Protocol Assignments"),
        ("192.0.0.5", false, "IPv4 Service Continuity Prefix"),
        ("192.0.0.8", false, "IPv4 dummy address"),
        ("192.0.0.9", false, "Port Control Protocol Anycast"),
        ("192.0.0.10", false, "Traversal Using Relays around NAT Anycast"),
        ("192.0.0.170", false, "NAT64/DNS64 Discovery"),
        ("192.0.0.171", false, "NAT64/DNS64 Discovery"),
        ("192.0.2.1", false, "Documentation (TEST-NET-1)"),
        ("192.31.196.1", false, "AS112-v4"),
        ("192.52.193.1", false, "AMT"),
        ("192.88.99.1", false, "Deprecated (6to4 Relay Anycast)"),
        ("192.88.99.2", false, "6a44-relay anycast address"),
        ("192.168.1.1", false, "Private-Use"),
        ("192.175.48.1", false, "Direct Delegation AS112 Service"),
        ("198.19.255.1", false, "Benchmarking"),
        ("198.51.100.7", false, "Documentation (TEST-NET-2)"),
        ("203.0.113.9", false, "Documentation (TEST-NET-3)"),
        ("250.1.2.3", false, "Reserved"),
        ("255.255.255.255", false, "Limited Broadcast"),
        ("239.1.2.3", false, "Multicast (IPv4 Multicast Address Space Registry)"),
        ("::", false, "Unspecified Address"),
        ("::1", false, "Loopback Address"),
        ("::ffff:8.8.8.8", true, "IPv4-mapped Address"),
        ("64:ff9b::808:808", true, "IPv4-IPv6 Translat."),
        ("64:ff9b:1::808:808", false, "IPv4-IPv6 Translat."),
        ("100::1", false, "Discard-Only Address Block"),
        ("100:0:0:1::1", false, "Dummy IPv6 Prefix"),
        ("2001:100::1", false, "IETF Protocol Assignments"),
        // Teredo: server 8.8.8.8, client 1.1.1.1 (XOR-ed): both public.
        ("2001:0:808:808::fefe:fefe", true, "TEREDO"),
        ("2001:1::1", false, "Port Control Protocol Anycast"),
        ("2001:1::2", false, "Traversal Using Relays around NAT Anycast"),
        ("2001:1::3", false, "DNS-SD Service Registration Protocol Anycast"),
        ("2001:2::1", false, "Benchmarking"),
        ("2001:3::1", false, "AMT"),
        ("2001:4:112::1", false, "AS112-v6"),
        ("2001:10::1", false, "Deprecated (previously ORCHID)"),
        ("2001:20::1", false, "ORCHIDv2"),
        ("2001:30::1", false, "Drone Remote ID Protocol Entity Tags (DETs) Prefix"),
        ("2001:db8::1", false, "Documentation"),
        ("2002:808:808::1", true, "6to4"),
        ("2620:4f:8000::1", false, "Direct Delegation AS112 Service"),
        ("3fff::1", false, "Documentation"),
        ("5f00::1", false, "Segment Routing (SRv6) SIDs"),
        ("fd12:3456::1", false, "Unique-Local"),
        ("fe80::1", false, "Link-Local Unicast"),
        ("ff02::1", false, "Not global unicast (IANA IPv6 Address Space: reserved, multicast ff00::/8, ...)"),
        ("2606:4700::1111", true, "Global Unicast"),
        ("::8.8.8.8", true, "IPv4-compatible Address (deprecated)"),
        ("::ffff:0:808:808", true, "IPv4-translated Address"),
        ("fec0::1", false, "Site-Local (deprecated)"),
    ];

    #[test]
    fn every_registry_entry_has_its_verdict() {
        let g = TargetGuard::default();
        for &(addr, allowed, name) in REGISTRY_CASES {
            let row = special_range(ip(addr)).unwrap_or_else(|| panic!("{addr}: no row"));
            assert_eq!(row.name, name, "{addr} decided by the wrong row");
            assert_eq!(
                g.is_ip_allowed(ip(addr)),
                allowed,
                "{addr} ({name}, {})",
                row.rfc
            );
            assert_eq!(is_forbidden_by_default(ip(addr)), !allowed, "{addr}");
        }
        // The cases cover the whole table: one address decided by each row.
        for r in SPECIAL_RANGES {
            assert!(
                REGISTRY_CASES
                    .iter()
                    .any(|(a, _, _)| std::ptr::eq(special_range(ip(a)).unwrap(), r)),
                "no case for {} {}",
                r.network,
                r.name
            );
        }
        // Ordinary public addresses are in no row (IPv4) or in global unicast.
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.1.1",
            "2a00:1450::1",
        ] {
            assert!(g.is_ip_allowed(ip(good)), "{good}");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_by_the_ipv4() {
        let g = TargetGuard::default();
        for (bad, carried) in [
            // IPv4-mapped, -translated, -compatible.
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:0:7f00:1", "127.0.0.1"),
            ("::ffff:0:a9fe:a9fe", "169.254.169.254"),
            ("::10.0.0.1", "10.0.0.1"),
            // NAT64 well-known prefix.
            ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
            ("64:ff9b::c000:201", "192.0.2.1"),
            // 6to4: bits 16..48.
            ("2002:7f00:1::", "127.0.0.1"),
            ("2002:a9fe:a9fe::", "169.254.169.254"),
            ("2002:c0a8:101:1::1", "192.168.1.1"),
            // Teredo server 127.0.0.1 (bits 32..64), client public.
            ("2001:0:7f00:1::fefe:fefe", "127.0.0.1"),
            // Teredo client 169.254.169.254: last 32 bits XOR 0xffffffff.
            ("2001:0:808:808:0:0:5601:5601", "169.254.169.254"),
            // Teredo client 10.0.0.1.
            ("2001:0:808:808::f5ff:fffe", "10.0.0.1"),
        ] {
            assert!(!g.is_ip_allowed(ip(bad)), "{bad} should be refused");
            let v4: Ipv4Addr = carried.parse().unwrap();
            assert!(
                embedded_ipv4(ip(bad)).contains(&v4),
                "{bad} carries {carried}"
            );
        }
        // Local-use NAT64 is refused whatever it carries; opening the
        // block does not open what may be a metadata address, in any of
        // the RFC 6052 layouts (/48, /56, /64, /96).
        for bad in [
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
        ] {
            assert!(!g.is_ip_allowed(ip(bad)), "{bad}");
        }
        let local_use = guard(&["64:ff9b:1::/48", "::/0"]);
        for form in [
            "64:ff9b:1:a9fe:a9:fe00::",
            "64:ff9b:1:a9:fe:a9fe::",
            "64:ff9b:1:0:a9:fea9:fe00:0",
            "64:ff9b:1::a9fe:a9fe",
        ] {
            assert!(is_metadata_address(ip(form)), "{form}");
            assert!(!local_use.is_ip_allowed(ip(form)), "{form}");
            let exact = guard(&["64:ff9b:1::/48", "169.254.169.254"]);
            assert!(exact.is_ip_allowed(ip(form)), "{form}");
        }
        assert!(local_use.is_ip_allowed(ip("64:ff9b:1::808:808")));
        // Metadata, whatever form it arrives in, needs its exact entry.
        for form in [
            "::ffff:169.254.169.254",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::",
            "2001:0:808:808:0:0:5601:5601",
        ] {
            assert!(is_metadata_address(ip(form)), "{form}");
            for broad in [
                "0.0.0.0/0",
                "::/0",
                "2002::/16",
                "2001::/32",
                "169.254.0.0/16",
            ] {
                assert!(
                    !guard(&[broad, "0.0.0.0/0"]).is_ip_allowed(ip(form)),
                    "{form} {broad}"
                );
            }
            assert!(
                guard(&["169.254.169.254"]).is_ip_allowed(ip(form)),
                "{form}"
            );
        }
        // An allow entry for the IPv4 opens the forms that reach it; one
        // for the carrier block opens what it carries (metadata aside).
        let local = guard(&["127.0.0.1/32"]);
        for form in ["::ffff:127.0.0.1", "::ffff:0:7f00:1", "2002:7f00:1::"] {
            assert!(local.is_ip_allowed(ip(form)), "{form}");
        }
        assert!(!local.is_ip_allowed(ip("2002:7f00:2::")));
        assert!(guard(&["2002::/16"]).is_ip_allowed(ip("2002:c0a8:101::")));
        assert!(guard(&["64:ff9b:1::/48"]).is_ip_allowed(ip("64:ff9b:1::a00:1")));
        // Documentation ranges stay closed until opened.
        assert!(guard(&["192.0.2.0/24"]).is_ip_allowed(ip("192.0.2.1")));
        assert!(guard(&["2001:db8::/32"]).is_ip_allowed(ip("2001:db8::1")));
    }

    #[test]
    fn literal_urls_of_embedded_forms_are_refused() {
        let g = TargetGuard::default();
        for url in [
            "http://[::ffff:0:7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://[2001:0:7f00:1::fefe:fefe]/",
            "http://[2001:0:808:808:0:0:5601:5601]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://192.0.2.1/",
            "http://198.51.100.1/",
            "http://203.0.113.1/",
            "http://[2001:db8::1]/",
        ] {
            assert!(
                matches!(
                    g.check_literal(&Url::parse(url).unwrap()),
                    Err(GuardError::ForbiddenAddress { .. })
                ),
                "{url}"
            );
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

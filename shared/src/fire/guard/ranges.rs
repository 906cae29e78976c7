//! The address table the guard decides by: [`Cidr`], the IANA IPv4 and
//! IPv6 special-purpose registries as [`SPECIAL_RANGES`] (one row per
//! entry, with its RFC), the IPv4 forms IPv6 addresses carry, and the
//! cloud metadata addresses that only an exact allow-list entry opens.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{GuardError, Result, TargetGuard};

/// An IP network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub(super) network: IpAddr,
    pub(super) prefix: u8,
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
    pub(super) fn parse(entry: &str, addr: &str, prefix: &str) -> Result<Self> {
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
    pub(super) fn single_address(&self) -> Option<IpAddr> {
        let full = if self.network.is_ipv4() { 32 } else { 128 };
        (self.prefix == full).then_some(self.network)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

pub(super) fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
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

pub(super) fn strip_brackets(s: &str) -> &str {
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
pub(super) const METADATA: &[IpAddr] = &[
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
pub(super) fn carried_metadata(ip: IpAddr) -> Vec<IpAddr> {
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

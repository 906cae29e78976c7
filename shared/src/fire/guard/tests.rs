use std::net::Ipv4Addr;

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

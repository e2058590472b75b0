//! Unit tests of the egress rules: patterns, wildcards, ports, brackets, the closed ranges.

use super::*;

fn rule(s: &str) -> Rule {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn allow(patterns: &[&str]) -> Allow {
    Allow {
        any: false,
        rules: patterns.iter().map(|p| rule(p)).collect(),
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn patterns_parse_and_print_back() {
    for (text, want) in [
        (
            "example.org",
            Rule::Host {
                name: "example.org".into(),
                port: None,
            },
        ),
        (
            "Example.ORG.",
            Rule::Host {
                name: "example.org".into(),
                port: None,
            },
        ),
        (
            "example.org:8443",
            Rule::Host {
                name: "example.org".into(),
                port: Some(8443),
            },
        ),
        (
            "*.example.org",
            Rule::Subdomains {
                suffix: "example.org".into(),
                port: None,
            },
        ),
        (
            "*.example.org:22",
            Rule::Subdomains {
                suffix: "example.org".into(),
                port: Some(22),
            },
        ),
        ("127.0.0.1:8080", Rule::Addr(sa("127.0.0.1:8080"))),
        ("[::1]:8080", Rule::Addr(sa("[::1]:8080"))),
        (
            "localhost",
            Rule::Host {
                name: "localhost".into(),
                port: None,
            },
        ),
        (
            "files_x.example-2.org",
            Rule::Host {
                name: "files_x.example-2.org".into(),
                port: None,
            },
        ),
    ] {
        assert_eq!(rule(text), want, "{text}");
        let printed = want.to_string();
        assert_eq!(rule(&printed), want, "{printed}");
    }
    assert_eq!(rule("[::1]:8080").to_string(), "[::1]:8080");
    assert_eq!(rule("*.example.org:22").to_string(), "*.example.org:22");
}

#[test]
fn bad_patterns_are_refused_with_the_reason() {
    for (text, reason) in [
        ("", "empty"),
        ("*", "all"),
        ("*:443", "all"),
        ("10.0.0.0/8", "CIDR"),
        ("127.0.0.1", "needs a port"),
        ("[::1]", "needs a port"),
        ("::1", "brackets"),
        ("::1:80", "brackets"),
        ("[::1", "unclosed"),
        ("[127.0.0.1]:80", "IPv6"),
        ("[::1]x", "after"),
        ("example.org:0", "1 to 65535"),
        ("example.org:65536", "1 to 65535"),
        ("example.org:", "1 to 65535"),
        ("example.org:http", "1 to 65535"),
        ("ex*ample.org", "only start"),
        ("*.*.example.org", "only start"),
        ("*example.org", "only start"),
        ("foo.*", "only start"),
        ("-bad.example.org", "letters"),
        ("bad..example.org", "labels"),
        ("exa mple.org", "letters"),
        ("127.1", "dotted IPv4"),
        ("2130706433", "dotted IPv4"),
        ("1.2.3.4.5", "dotted IPv4"),
        ("http://example.org", "URL"),
        ("user@example.org", "URL"),
    ] {
        let e = text.parse::<Rule>().unwrap_err();
        assert!(e.reason.contains(reason), "{text:?}: {e}");
        assert_eq!(e.pattern, text);
        assert!(
            e.to_string().starts_with("invalid allowlist pattern"),
            "{e}"
        );
    }
    let long = format!("{}.org", "a".repeat(64));
    assert!(long.parse::<Rule>().is_err());
}

#[test]
fn a_host_rule_allows_its_name_on_80_and_443_or_its_own_port() {
    let a = allow(&["example.org", "api.example.net:8443"]);
    assert!(a.name("example.org", 443));
    assert!(a.name("example.org", 80));
    assert!(!a.name("example.org", 22));
    assert!(!a.name("www.example.org", 443));
    assert!(!a.name("example.org.evil.com", 443));
    assert!(!a.name("evilexample.org", 443));
    assert!(a.name("api.example.net", 8443));
    assert!(!a.name("api.example.net", 443));
}

#[test]
fn a_wildcard_allows_subdomains_only() {
    let a = allow(&["*.example.org"]);
    assert!(a.name("www.example.org", 443));
    assert!(a.name("a.b.example.org", 80));
    assert!(!a.name("example.org", 443));
    assert!(!a.name("badexample.org", 443));
    assert!(!a.name("www.example.org", 8080));
    assert!(!a.name("www.example.org.evil", 443));
}

#[test]
fn address_rules_never_match_names() {
    let a = allow(&["127.0.0.1:8080"]);
    assert!(!a.name("localhost", 8080));
    assert!(!a.name("127.0.0.1", 8080));
}

#[test]
fn the_closed_ranges() {
    let closed_ones = [
        "127.0.0.1",
        "127.255.255.254",
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "169.254.169.254",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "::",
        "::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "febf::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a9fe:a9fe::1",
    ];
    for ip in closed_ones {
        assert!(
            closed(ip.parse().unwrap(), &[]).is_some(),
            "{ip} should be closed"
        );
    }
    // Open: the public internet, and the documentation and benchmarking ranges.
    let open_ones = [
        "1.1.1.1",
        "172.15.255.255",
        "172.32.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "192.0.2.1",
        "198.18.0.1",
        "198.51.100.7",
        "203.0.113.9",
        "2001:db8::1",
        "2606:4700::1111",
        "::ffff:1.1.1.1",
        "2002:0101:0101::1",
        "fec0::1",
    ];
    for ip in open_ones {
        assert!(
            closed(ip.parse().unwrap(), &[]).is_none(),
            "{ip} should be open"
        );
    }
    assert_eq!(
        closed("169.254.169.254".parse().unwrap(), &[]),
        Some("link-local")
    );
    assert_eq!(
        closed("::ffff:127.0.0.1".parse().unwrap(), &[]),
        Some("loopback")
    );
}

#[test]
fn the_hosts_own_addresses_are_closed() {
    let own: Vec<IpAddr> = vec![
        "198.51.100.7".parse().unwrap(),
        "2001:db8::7".parse().unwrap(),
    ];
    assert_eq!(
        closed("198.51.100.7".parse().unwrap(), &own),
        Some("an address of this host")
    );
    assert!(closed("::ffff:198.51.100.7".parse().unwrap(), &own).is_some());
    assert!(closed("2001:db8::7".parse().unwrap(), &own).is_some());
    assert!(closed("198.51.100.8".parse().unwrap(), &own).is_none());
    let a = Allow {
        any: true,
        rules: vec![],
    };
    assert!(!a.address(sa("198.51.100.7:443"), &own, true));
    assert!(a.address(sa("198.51.100.8:443"), &own, false));
}

#[test]
fn closed_addresses_open_only_to_an_exact_rule() {
    let a = allow(&["127.0.0.1:8080", "[::1]:9090", "example.org"]);
    // An allowed name resolving into a closed range stays closed.
    assert!(!a.address(sa("127.0.0.1:443"), &[], true));
    assert!(!a.address(sa("10.0.0.1:443"), &[], true));
    // The exact address and port, also written as IPv4-mapped.
    assert!(a.address(sa("127.0.0.1:8080"), &[], false));
    assert!(a.address(sa("[::ffff:127.0.0.1]:8080"), &[], false));
    assert!(!a.address(sa("127.0.0.1:8081"), &[], false));
    assert!(!a.address(sa("127.0.0.2:8080"), &[], false));
    assert!(a.address(sa("[::1]:9090"), &[], false));
    assert!(!a.address(sa("[::1]:8080"), &[], false));
    // Open addresses: only through an allowed name (or under `all`).
    assert!(a.address(sa("1.1.1.1:443"), &[], true));
    assert!(!a.address(sa("1.1.1.1:443"), &[], false));
    let all = Allow {
        any: true,
        rules: vec![],
    };
    assert!(all.name("anything.example", 22));
    assert!(all.address(sa("1.1.1.1:22"), &[], false));
    for ip in [
        "127.0.0.1:80",
        "[::1]:80",
        "169.254.169.254:80",
        "[::ffff:10.0.0.1]:80",
    ] {
        assert!(!all.address(sa(ip), &[], true), "{ip}");
    }
}

#[test]
fn targets_parse_like_connect_and_socks() {
    let t = Target::parse("Example.org:443", None).unwrap();
    assert_eq!(t.host, Host::Name("example.org".into()));
    assert_eq!(t.to_string(), "example.org:443");
    assert_eq!(Target::parse("example.org", Some(80)).unwrap().port, 80);
    assert!(Target::parse("example.org", None).is_err());
    let t = Target::parse("[::1]:80", None).unwrap();
    assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
    assert_eq!(t.to_string(), "[::1]:80");
    assert_eq!(
        Target::parse("127.0.0.1:3128", None).unwrap().host,
        Host::Ip("127.0.0.1".parse().unwrap())
    );
    assert!(Target::parse("2130706433:80", None).is_err());
    assert!(Target::parse("a b:80", None).is_err());
    assert_eq!(
        Target::from_name("::1", 80).unwrap().host,
        Host::Ip("::1".parse().unwrap())
    );
    assert!(Target::from_name("127.1", 80).is_err());
    assert_eq!(
        Target::from_name("WWW.Example.org.", 443).unwrap().host,
        Host::Name("www.example.org".into())
    );
}

#[test]
fn rules_round_trip_through_serde() {
    let r: Vec<Rule> = serde_json::from_str(r#"["example.org", "[::1]:80"]"#).unwrap();
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"["example.org","[::1]:80"]"#
    );
    let e = serde_json::from_str::<Vec<Rule>>(r#"["*"]"#).unwrap_err();
    assert!(e.to_string().contains("all"), "{e}");
}

//! Where the fleet may send a request it was told to send (a webhook): not into its own
//! network. A URL is checked when a subscription is made (scheme, host, a literal address)
//! and every address its name resolves to is checked again when it is called (the webhooks
//! service's resolver), so a name that points inside — or is changed to, after the check — is
//! refused (SSRF).
//!
//! Refused ([`refused_range`]): private, loopback, link-local, unique-local, CGNAT, multicast,
//! documentation, benchmarking and reserved ranges and the cloud metadata address, and IPv6
//! forms that embed a refused IPv4 address (mapped, NAT64, 6to4). `WEBHOOK_ALLOWED_CIDRS`
//! opens some of them (tests); `WEBHOOK_ALLOW_HTTP` allows `http://`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// Settings of where webhooks may go; the api and the webhooks service must agree.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutboundArgs {
    /// Allow http:// webhook URLs (tests; production takes https only)
    #[arg(long, env = "WEBHOOK_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,

    /// Comma-separated CIDRs webhooks may reach although they are private, loopback or otherwise refused (e.g. 127.0.0.1/32 for tests)
    #[arg(long, env = "WEBHOOK_ALLOWED_CIDRS", value_delimiter = ',')]
    pub webhook_allowed_cidrs: Vec<String>,
}

/// Why a URL or an address is refused. Names the address and its range; never anything else
/// of the URL (which may carry a token in its path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a URL")]
    Unparsable,
    #[error("scheme {0} is not allowed (https only)")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL carries a user name or password (the fleet would have to store it)")]
    Credentials,
    #[error("{addr} is {range}")]
    Address { addr: IpAddr, range: &'static str },
    #[error("{0} resolves to no address")]
    Unresolved(String),
}

#[derive(Debug, thiserror::Error)]
#[error("WEBHOOK_ALLOWED_CIDRS: {0:?} is not a CIDR (e.g. 127.0.0.1/32)")]
pub struct CidrError(String);

/// The policy: which schemes, and which refused ranges are allowed anyway.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow_http: bool,
    allowed: Vec<IpNet>,
}

impl Policy {
    pub fn new(args: &OutboundArgs) -> Result<Self, CidrError> {
        let allowed = args
            .webhook_allowed_cidrs
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .map(|c| {
                IpNet::from_str(c)
                    .or_else(|_| IpAddr::from_str(c).map(IpNet::from))
                    .map_err(|_| CidrError(c.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allow_http: args.webhook_allow_http,
            allowed,
        })
    }

    /// A webhook URL as it may be stored: https (or http when allowed), a host, no
    /// credentials, and not a refused literal address.
    pub fn check_url(&self, text: &str) -> Result<url::Url, Refused> {
        let url = url::Url::parse(text.trim()).map_err(|_| Refused::Unparsable)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refused::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        match url.host() {
            None => Err(Refused::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_addr(IpAddr::V4(ip)).map(|()| url),
            Some(url::Host::Ipv6(ip)) => self.check_addr(IpAddr::V6(ip)).map(|()| url),
            Some(url::Host::Domain(_)) => Ok(url),
        }
    }

    /// Whether a request may go to `addr`: allowed by a CIDR, or in no refused range.
    pub fn check_addr(&self, addr: IpAddr) -> Result<(), Refused> {
        let canonical = canonical(addr);
        if self
            .allowed
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&addr))
        {
            return Ok(());
        }
        match refused_range(addr) {
            Some(range) => Err(Refused::Address { addr, range }),
            None => Ok(()),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The range `addr` belongs to when a webhook must not go there; `None` for a public address.
/// IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4) are judged by that address.
pub fn refused_range(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn in_v4(addr: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(addr) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn refused_v4(a: Ipv4Addr) -> Option<&'static str> {
    // The cloud metadata address first: it is also link-local, but this is the name that
    // tells an operator why it matters.
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([169, 254, 169, 254], 32, "the cloud metadata service"),
        ([0, 0, 0, 0], 8, "unspecified (this network)"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, bits, _)| in_v4(a, *net, *bits))
        .map(|(_, _, name)| *name)
}

fn in_v6(addr: Ipv6Addr, net: Ipv6Addr, bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits)
    };
    u128::from(addr) & mask == u128::from(net) & mask
}

fn refused_v6(a: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let bits = u128::from(a);
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
    if in_v6(a, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return refused_v4(Ipv4Addr::from(bits as u32));
    }
    if in_v6(a, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16)
        && let Some(range) = refused_v4(Ipv4Addr::from((bits >> 80) as u32))
    {
        return Some(range);
    }
    const RANGES: &[(Ipv6Addr, u32, &str)] = &[
        (
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
            128,
            "the cloud metadata service",
        ),
        (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
        (Ipv6Addr::LOCALHOST, 128, "loopback"),
        // The deprecated IPv4-compatible form (::a.b.c.d): nothing public lives there.
        (Ipv6Addr::UNSPECIFIED, 96, "IPv4-compatible (deprecated)"),
        (
            Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
            64,
            "discard-only",
        ),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            "documentation",
        ),
        (
            Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
            7,
            "unique-local",
        ),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
        (
            Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
            10,
            "site-local (deprecated)",
        ),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(a, *net, *prefix))
        .map(|(_, _, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_inside_range_is_refused_by_name() {
        for (addr, range) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("100.127.255.254", "shared address space (CGNAT)"),
            ("0.0.0.0", "unspecified (this network)"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.10", "documentation"),
            ("203.0.113.10", "documentation"),
            ("2001:db8::1", "documentation"),
            ("169.254.169.254", "the cloud metadata service"),
            ("fd00:ec2::254", "the cloud metadata service"),
            // IPv4-mapped and other embeddings are judged as the IPv4 address.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "the cloud metadata service"),
            ("::ffff:100.64.0.1", "shared address space (CGNAT)"),
            ("::ffff:0.0.0.0", "unspecified (this network)"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a9fe:a9fe::", "the cloud metadata service"),
            ("::127.0.0.1", "IPv4-compatible (deprecated)"),
        ] {
            assert_eq!(refused_range(ip(addr)), Some(range), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(refused_range(ip(addr)), None, "{addr}");
        }
    }

    fn policy(http: bool, cidrs: &[&str]) -> Policy {
        Policy::new(&OutboundArgs {
            webhook_allow_http: http,
            webhook_allowed_cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn urls_are_https_with_a_host_and_no_credentials_or_inside_literal() {
        let strict = policy(false, &[]);
        assert!(strict.check_url("https://hooks.example.com/x?y=1").is_ok());
        assert_eq!(
            strict.check_url("http://hooks.example.com/"),
            Err(Refused::Scheme("http".into()))
        );
        assert_eq!(
            strict.check_url("ftp://hooks.example.com/"),
            Err(Refused::Scheme("ftp".into()))
        );
        assert_eq!(strict.check_url("not a url"), Err(Refused::Unparsable));
        assert_eq!(
            strict.check_url("https://u:p@hooks.example.com/"),
            Err(Refused::Credentials)
        );
        for literal in [
            "https://127.0.0.1/",
            "https://[::1]:8443/",
            "https://[::ffff:169.254.169.254]/",
            "https://169.254.169.254/latest/meta-data",
            "https://0x7f000001/",
            "https://2130706433/",
        ] {
            assert!(
                matches!(strict.check_url(literal), Err(Refused::Address { .. })),
                "{literal}: {:?}",
                strict.check_url(literal)
            );
        }
    }

    #[test]
    fn an_allowed_cidr_opens_exactly_its_range_and_its_mapped_form() {
        let tests = policy(true, &["127.0.0.1/32"]);
        assert!(tests.check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(tests.check_addr(ip("::ffff:127.0.0.1")).is_ok());
        assert!(tests.check_addr(ip("127.0.0.2")).is_err());
        assert!(tests.check_addr(ip("169.254.169.254")).is_err());
        assert!(
            Policy::new(&OutboundArgs {
                webhook_allow_http: false,
                webhook_allowed_cidrs: vec!["nonsense".into()],
            })
            .is_err()
        );
    }
}

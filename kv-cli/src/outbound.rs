//! Outbound HTTP from components (`wasi:http/outgoing-handler`): denied unless the destination
//! is on the allow-list (`--allow-outbound`, `[outbound] allowed_hosts`), written like Spin's
//! `allowed_outbound_hosts`: `SCHEME://HOST[:PORT]`, where the scheme is `http`, `https` or `*`,
//! the host a name, `*.domain`, `*`, or an IP address, and the port a number or `*` (default:
//! the scheme's). Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
//! fd00:ec2::254, 100.100.100.200) stay denied even under `*`, unless an entry names that IP.
//! docs/security.md.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use http_body_util::BodyExt as _;
use serde::Deserialize;
use tracing::warn;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One allowed destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    /// `None`: any scheme.
    scheme: Option<String>,
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`: any subdomain (not `example.com` itself).
    Suffix(String),
    Name(String),
    Ip(IpAddr),
}

/// The config file's `[outbound]` table: `allowed_hosts = ["https://api.example.com", …]`,
/// checked by [`OutboundPolicy::parse`] when the server starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct OutboundTable {
    /// Where a component's outbound HTTP may go, before `--allow-outbound`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// The allow-list of one server or run; empty denies every request.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed: Vec<AllowedHost>,
}

impl OutboundPolicy {
    /// Parses the allow-list entries; an entry that is not `SCHEME://HOST[:PORT]` is an error.
    pub fn parse(entries: &[String]) -> anyhow::Result<OutboundPolicy> {
        let allowed = entries
            .iter()
            .map(|entry| {
                parse_entry(entry).map_err(|reason| {
                    anyhow::anyhow!(
                        "allowed outbound host {entry:?}: {reason} (expected SCHEME://HOST[:PORT], \
                         e.g. https://api.example.com, https://*.example.com:8443, *://10.0.0.5:*)"
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(OutboundPolicy { allowed })
    }

    /// Whether a request to `scheme://host:port` may leave; `Err` says why not.
    fn check_target(&self, scheme: &str, host: &str, port: u16) -> Result<(), String> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        let allowed = self.allowed.iter().any(|entry| {
            entry.scheme.as_deref().is_none_or(|s| s == scheme)
                && entry.port.is_none_or(|p| p == port)
                && match (&entry.host, ip) {
                    (HostPattern::Any, _) => true,
                    (HostPattern::Ip(allowed), Some(ip)) => *allowed == ip,
                    (HostPattern::Name(name), None) => *name == host,
                    (HostPattern::Suffix(suffix), None) => {
                        host.len() > suffix.len() + 1
                            && host.ends_with(suffix.as_str())
                            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    }
                    _ => false,
                }
        });
        if !allowed {
            return Err(format!(
                "{scheme}://{host}:{port} is not on the outbound allow-list"
            ));
        }
        Ok(())
    }

    /// Whether `ip` may be reached: link-local and metadata addresses only when an entry names
    /// that IP.
    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if is_metadata_or_link_local(ip)
            && !self
                .allowed
                .iter()
                .any(|entry| entry.host == HostPattern::Ip(ip))
        {
            return Err(format!(
                "{ip} is a link-local or cloud metadata address; allow it by IP to reach it"
            ));
        }
        Ok(())
    }

    /// The full check of one request URI: the allow-list, then every address the host has.
    async fn check(&self, uri: &hyper::Uri) -> Result<(), String> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().ok_or("the request has no host")?;
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        self.check_target(&scheme, host, port)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(ip),
            Err(_) => {
                // A name that resolves to a metadata address is refused too. (The connection
                // resolves again; a name whose records change in between is a residual risk
                // docs/security.md states.)
                let addresses = tokio::net::lookup_host((bare, port))
                    .await
                    .map_err(|err| format!("cannot resolve {bare}: {err}"))?;
                for address in addresses {
                    self.check_ip(address.ip())?;
                }
                Ok(())
            }
        }
    }
}

/// AWS's IPv6 instance metadata address.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn is_metadata_or_link_local(ip: IpAddr) -> bool {
    match ip {
        // 169.254.0.0/16 holds AWS, GCP and Azure metadata; 100.100.100.200 is Alibaba's.
        IpAddr::V4(v4) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == AWS_METADATA_V6
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_metadata_or_link_local(v4.into()))
        }
    }
}

fn parse_entry(entry: &str) -> Result<AllowedHost, String> {
    let (scheme, rest) = entry
        .split_once("://")
        .ok_or("no scheme (write http://, https:// or *://)")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "*" => None,
        s @ ("http" | "https") => Some(s.to_string()),
        other => return Err(format!("scheme {other:?} is not http, https or *")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err("only a host and a port may follow the scheme".into());
    }
    let (host, port) = split_host_port(rest)?;
    let host = host.to_ascii_lowercase();
    let host = if host == "*" {
        HostPattern::Any
    } else if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') {
            return Err("a wildcard host is `*` or `*.domain`".into());
        }
        HostPattern::Suffix(suffix.to_string())
    } else if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
        HostPattern::Ip(ip)
    } else if host.is_empty() || host.contains('*') {
        return Err("a wildcard host is `*` or `*.domain`".into());
    } else {
        HostPattern::Name(host)
    };
    let port = match port {
        Some("*") => None,
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| format!("port {port:?} is not 1-65535 or *"))?,
        ),
        None => match scheme.as_deref() {
            Some("http") => Some(80),
            Some(_) => Some(443),
            None => return Err("`*://` needs an explicit port (a number or *)".into()),
        },
    };
    Ok(AllowedHost { scheme, host, port })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = text.strip_prefix('[') {
        let (ip, after) = inner.split_once(']').ok_or("unclosed `[`")?;
        return match after {
            "" => Ok((ip, None)),
            port => Ok((ip, Some(port.strip_prefix(':').ok_or("junk after `]`")?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((host, Some(port))),
        Some(_) => Err("write IPv6 addresses in brackets: [::1]:8080".into()),
        None => Ok((text, None)),
    }
}

/// `wasi:http` hooks that send only what the policy allows; everything else fails with
/// `HTTP-request-denied` (or `destination-IP-prohibited`) and a log line.
#[derive(Clone, Default)]
pub struct OutboundHooks {
    policy: Arc<OutboundPolicy>,
}

impl OutboundHooks {
    /// Hooks enforcing `policy`.
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        OutboundHooks { policy }
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    hyper::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        drop(fut);
        let policy = self.policy.clone();
        Box::new(async move {
            if let Err(reason) = policy.check(request.uri()).await {
                warn!(uri = %request.uri(), "outbound request denied: {reason}");
                return Err(if reason.contains("metadata") {
                    HttpError::DestinationIpProhibited
                } else {
                    HttpError::HttpRequestDenied
                });
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(|body| body.boxed_unsync()),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn empty_denies_everything() {
        let none = OutboundPolicy::default();
        assert!(none.check_target("https", "example.com", 443).is_err());
        assert!(none.check_target("http", "127.0.0.1", 80).is_err());
    }

    #[test]
    fn patterns_match_like_spin() {
        let p = policy(&[
            "https://api.example.com",
            "https://*.svc.example:8443",
            "http://127.0.0.1:*",
            "*://[::1]:9000",
        ]);
        assert!(p.check_target("https", "api.example.com", 443).is_ok());
        assert!(p.check_target("https", "API.example.com", 443).is_ok());
        assert!(p.check_target("http", "api.example.com", 80).is_err());
        assert!(p.check_target("https", "api.example.com", 8443).is_err());
        assert!(p.check_target("https", "evil.com", 443).is_err());
        assert!(p.check_target("https", "a.svc.example", 8443).is_ok());
        assert!(p.check_target("https", "svc.example", 8443).is_err());
        assert!(p.check_target("https", "a.xsvc.example", 8443).is_err());
        assert!(p.check_target("http", "127.0.0.1", 3000).is_ok());
        assert!(p.check_target("http", "127.0.0.2", 3000).is_err());
        assert!(p.check_target("http", "[::1]", 9000).is_ok());
        assert!(p.check_target("https", "::1", 9000).is_ok());
    }

    #[test]
    fn metadata_addresses_need_an_explicit_ip() {
        let any = policy(&["*://*:*"]);
        assert!(any.check_target("http", "169.254.169.254", 80).is_ok());
        for ip in [
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
        ] {
            assert!(any.check_ip(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert!(any.check_ip("10.0.0.1".parse().unwrap()).is_ok());
        let explicit = policy(&["http://169.254.169.254"]);
        assert!(
            explicit
                .check_ip("169.254.169.254".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn bad_entries_are_errors() {
        for bad in [
            "api.example.com",
            "ftp://x",
            "https://x/path",
            "https://user@x",
            "https://x:0",
            "https://x:http",
            "https://a*.example.com",
            "*://x",
            "https://::1",
            "https://[::1",
        ] {
            assert!(OutboundPolicy::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}

//! Where gate checks may send requests: the cluster admin's decision (chart values),
//! never the tenant's. A tenant names a URL; before anything is sent, its host is
//! resolved and every address checked, and the request then goes to exactly those
//! addresses (no second lookup an attacker's DNS could answer differently), with no
//! redirects and no proxy from the environment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use reqwest::Url;

/// The admin's egress policy for gate checks.
#[derive(Clone, Debug, Default)]
pub struct EgressPolicy {
    /// Address ranges gates may reach. Empty: any address but the denied ones. An
    /// address inside an allowed range is reachable even where the defaults deny it
    /// (an admin who allows 127.0.0.0/8 means it).
    pub allow: Vec<IpNet>,
    /// Ranges gates may never reach, on top of the defaults.
    pub deny: Vec<IpNet>,
    /// Allow plain `http://` Prometheus addresses (off: https only).
    pub allow_http: bool,
    /// Addresses of the Kubernetes API server, denied unless allowed explicitly.
    pub api_server: Vec<IpAddr>,
    /// The API server's own addresses behind that Service, as the operator watches
    /// them: denied the same way.
    pub api_endpoints: ApiEndpoints,
}

/// Most API server addresses remembered (a cluster has a handful).
const MAX_API_ADDRESSES: usize = 1024;

/// The addresses of the `kubernetes` Service's EndpointSlices (the API server's real
/// addresses, which a tenant can reach with the cluster CA every namespace holds), kept
/// current by the operator. Until the operator has read them, when it is meant to
/// (`watched`), no gate request is sent: an address not known to be safe is not safe.
#[derive(Clone, Debug, Default)]
pub struct ApiEndpoints {
    known: std::sync::Arc<std::sync::RwLock<Option<Vec<IpAddr>>>>,
    watched: bool,
}

impl ApiEndpoints {
    /// Endpoints the operator will read (and until then, refuses every request).
    pub fn watched() -> Self {
        Self { watched: true, ..Default::default() }
    }

    /// Adds the addresses as now listed to those seen before (an address the API server
    /// had stays denied: its endpoints come and go while one restarts).
    pub fn set(&self, addresses: Vec<IpAddr>) {
        let mut known = self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = known.get_or_insert_with(Vec::new);
        for a in addresses {
            if !seen.contains(&a) && seen.len() < MAX_API_ADDRESSES {
                seen.push(a);
            }
        }
    }

    /// Whether requests may be judged yet (the addresses were read, when they are meant
    /// to be): gate runs wait for it rather than fail.
    pub fn known(&self) -> bool {
        !self.watched || self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    fn denies(&self, reached: &[IpAddr]) -> Result<(), &'static str> {
        let known = self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match known.as_ref() {
            None if self.watched => Err(API_ADDRESSES_UNKNOWN),
            None => Ok(()),
            Some(api) if reached.iter().any(|a| api.iter().any(|s| embedded(*s).contains(a))) => {
                Err("the Kubernetes API server")
            }
            Some(_) => Ok(()),
        }
    }
}

const API_ADDRESSES_UNKNOWN: &str =
    "the API server's addresses are not known yet: the operator reads EndpointSlice default/kubernetes first";

/// Why a request was not sent: safe to show a tenant (no remote bytes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl EgressPolicy {
    /// The policy in the environment the operator runs in: the API server's address
    /// (from the in-cluster variables) joins the denied set.
    pub fn from_env(allow: Vec<IpNet>, deny: Vec<IpNet>, allow_http: bool) -> Self {
        let api_server =
            std::env::var("KUBERNETES_SERVICE_HOST").ok().and_then(|h| h.parse().ok()).into_iter().collect();
        Self { allow, deny, allow_http, api_server, api_endpoints: ApiEndpoints::watched() }
    }

    /// Checks the URL's shape, resolves its host and checks every address. Returns the
    /// host and the addresses to connect to.
    pub async fn resolve(&self, url: &Url, http_allowed_here: bool) -> Result<(String, Vec<SocketAddr>), Refused> {
        let (host, port, literal) = self.shape(url, http_allowed_here)?;
        let addrs: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let lookup =
                    tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host((bare, port)));
                match lookup.await {
                    Ok(Ok(found)) => found.take(16).collect(),
                    Ok(Err(_)) | Err(_) => return Err(Refused(format!("host {host} does not resolve"))),
                }
            }
        };
        if addrs.is_empty() {
            return Err(Refused(format!("host {host} does not resolve")));
        }
        for a in &addrs {
            self.check(a.ip())
                .map_err(|why| Refused(format!("{host} resolves to an address gates may not reach ({why})")))?;
        }
        Ok((host, addrs))
    }

    /// What can be said of a URL without sending anything or resolving a name (at
    /// `kubectl apply`): its shape, and an address written as an IP that gates may not
    /// reach. A host name is judged when the check runs, as `resolve` does.
    pub fn admissible(&self, url: &Url, http_allowed_here: bool) -> Result<(), Refused> {
        let (host, _, literal) = self.shape(url, http_allowed_here)?;
        let Some(ip) = literal else { return Ok(()) };
        match self.check(ip) {
            // Not known yet is not known bad: the check runs once they are.
            Err(why) if why == API_ADDRESSES_UNKNOWN => Ok(()),
            Err(why) => Err(Refused(format!("{host} is an address gates may not reach ({why})"))),
            Ok(()) => Ok(()),
        }
    }

    /// The URL's scheme and credentials checked; its host, port, and the host as an
    /// address when it is written as one.
    fn shape(&self, url: &Url, http_allowed_here: bool) -> Result<(String, u16, Option<IpAddr>), Refused> {
        match url.scheme() {
            "https" => {}
            "http" if http_allowed_here && self.allow_http => {}
            "http" if http_allowed_here => {
                return Err(Refused(
                    "plain http:// is not allowed for gate checks by this installation; use https:// (the admin can \
                     allow http with the chart value gates.allowHttp)"
                        .into(),
                ));
            }
            other => return Err(Refused(format!("scheme {other}:// is not allowed; use https://"))),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused("credentials in the URL are not allowed".into()));
        }
        let host = url.host_str().ok_or_else(|| Refused("the URL has no host".into()))?.to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        Ok((host, port, literal))
    }

    /// Whether gates may reach `ip`, and if not, a word on why.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        // Every address the connection may reach: the one written, and the IPv4 ones it
        // embeds. A deny matches any of them; an allow only the address written (a 6to4
        // or Teredo form of an allowed IPv4 host goes through a relay, not to that host),
        // or the IPv4 host of an IPv4-mapped address (which is that host).
        let reached = embedded(ip);
        if reached.iter().any(|a| self.deny.iter().any(|n| n.contains(a))) {
            return Err("denied by the installation");
        }
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            v4 => Some(v4),
        };
        if self.allow.iter().any(|n| n.contains(&ip) || mapped.is_some_and(|m| n.contains(&m))) {
            return Ok(());
        }
        if !self.allow.is_empty() {
            return Err("outside the ranges the installation allows");
        }
        for a in &reached {
            if self.api_server.iter().any(|s| embedded(*s).contains(a)) {
                return Err("the Kubernetes API server");
            }
            default_denied(*a)?;
        }
        self.api_endpoints.denies(&reached)
    }
}

/// `ip` and every IPv4 address it embeds (`canonical`, and both ends of a Teredo address).
fn embedded(ip: IpAddr) -> Vec<IpAddr> {
    let mut all = vec![ip];
    let folded = canonical(ip);
    if folded != ip {
        all.push(folded);
    }
    if let IpAddr::V6(v6) = ip
        && let [0x2001, 0, hi, lo, ..] = v6.segments()
    {
        // Teredo's server address.
        all.push(IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))));
    }
    all
}

/// An IPv4 address written as IPv6 is checked as the IPv4 address it reaches: mapped
/// (`::ffff:127.0.0.1`), compatible (`::127.0.0.1`), NAT64 (`64:ff9b::7f00:1`, the
/// well-known prefix), 6to4 (`2002:7f00:1::`) and Teredo (the client address, stored
/// inverted). Otherwise `64:ff9b::169.254.169.254` would reach the metadata service
/// through a NAT64 gateway while the check saw an ordinary IPv6 address.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let low32 = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => ip,
        [0, 0, 0, 0, 0, 0, _, _] => IpAddr::V4(low32),
        // SIIT's IPv4-translated form, `::ffff:0:a.b.c.d`.
        [0, 0, 0, 0, 0xffff, 0, _, _] => IpAddr::V4(low32),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => IpAddr::V4(low32),
        // NAT64's local-use prefix (64:ff9b:1::/48): the IPv4 address in bits 48-63 and
        // 72-87 (RFC 6052's /48 layout; bits 64-71 are zero).
        [0x64, 0xff9b, 1, a, b, c, ..] => {
            IpAddr::V4(Ipv4Addr::new((a >> 8) as u8, a as u8, (b & 0xff) as u8, (c >> 8) as u8))
        }
        [0x2002, hi, lo, ..] => IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        [0x2001, 0, ..] => IpAddr::V4(Ipv4Addr::from(!u32::from(low32))),
        _ => ip,
    }
}

/// Loopback, link-local (cloud metadata lives there), the metadata services outside it,
/// unspecified, multicast and broadcast addresses: never a gate's business by default.
fn default_denied(ip: IpAddr) -> Result<(), &'static str> {
    const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    // Alibaba Cloud's metadata service, Azure's wire server.
    const METADATA_V4: [Ipv4Addr; 2] = [Ipv4Addr::new(100, 100, 100, 200), Ipv4Addr::new(168, 63, 129, 16)];
    let denied = match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local, where cloud metadata services live")
            } else if METADATA_V4.contains(&v4) {
                Some("a cloud metadata service")
            } else if v4.is_unspecified() || v4 == Ipv4Addr::BROADCAST || v4.is_multicast() {
                Some("not a host")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unicast_link_local() || v6 == METADATA_V6 {
                Some("link-local, where cloud metadata services live")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a host")
            } else {
                None
            }
        }
    };
    denied.map_or(Ok(()), Err)
}

/// An HTTP client bound to the checked addresses: no redirects, no proxy, bodies read
/// by `read_capped`.
pub fn client(
    host: &str,
    addrs: &[SocketAddr],
    timeout: std::time::Duration,
    ca_bundle: Option<&[u8]>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve_to_addrs(host.trim_start_matches('[').trim_end_matches(']'), addrs);
    if let Some(pem) = ca_bundle {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|_| "the caBundle is not valid PEM".to_string())?;
        if certs.is_empty() {
            return Err("the caBundle holds no certificate".into());
        }
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|_| "cannot build an HTTP client".to_string())
}

/// Most bytes read of a gate's answer.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads at most `MAX_BODY` bytes of a response; more is an error, not a truncation
/// that could change the meaning of a JSON document.
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(format!("the answer is larger than {} KiB", MAX_BODY / 1024));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| "the answer broke off".to_string())? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the answer is larger than {} KiB", MAX_BODY / 1024));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            deny: vec![],
            allow_http: false,
            api_server: vec!["10.96.0.1".parse().unwrap()],
            api_endpoints: ApiEndpoints::default(),
        }
    }

    #[test]
    fn the_api_servers_own_addresses_are_denied_once_read_and_nothing_goes_before() {
        let mut p = policy(&[]);
        p.api_endpoints = ApiEndpoints::watched();
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(p.check(public).unwrap_err().contains("not known yet"), "fail closed until read");
        p.api_endpoints.set(vec!["192.0.2.10".parse().unwrap()]);
        assert!(p.check(public).is_ok());
        assert_eq!(p.check("192.0.2.10".parse().unwrap()), Err("the Kubernetes API server"));
        assert!(p.check("::ffff:192.0.2.10".parse().unwrap()).is_err(), "in any form");
        assert!(p.check("64:ff9b::192.0.2.10".parse().unwrap()).is_err(), "in any form");
        // An admin who allows the range means it.
        let mut allowed = policy(&["192.0.2.0/24"]);
        allowed.api_endpoints = p.api_endpoints.clone();
        assert!(allowed.check("192.0.2.10".parse().unwrap()).is_ok());
        // A restarting API server's slice empties for a moment: what it had stays denied.
        p.api_endpoints.set(Vec::new());
        assert!(p.check("192.0.2.10".parse().unwrap()).is_err());
        assert!(p.api_endpoints.known());
    }

    #[test]
    fn defaults_keep_gates_off_the_node_the_metadata_service_and_the_api_server() {
        let p = policy(&[]);
        for denied in [
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "0.0.0.0",
            "10.96.0.1",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
            // IPv4 in IPv6 transition forms: compatible, NAT64, 6to4, Teredo.
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.96.0.1",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "100.100.100.200",
            "168.63.129.16",
            "::ffff:168.63.129.16",
            "::ffff:0:127.0.0.1",
            "64:ff9b:1:a9fe:a9:fe00::",
            // Teredo whose server end is the metadata service.
            "2001:0:a9fe:a9fe::1",
        ] {
            assert!(p.check(denied.parse().unwrap()).is_err(), "{denied}");
        }
        for allowed in
            ["10.0.3.7", "192.168.1.20", "203.0.113.9", "2001:db8::1", "64:ff9b::cb00:7109", "2002:cb00:7109::"]
        {
            assert!(p.check(allowed.parse().unwrap()).is_ok(), "{allowed}");
        }
    }

    #[test]
    fn a_deny_matches_any_form_and_an_allow_only_the_address_itself() {
        let mut p = policy(&["10.0.0.0/8"]);
        assert!(p.check("::ffff:10.0.0.1".parse().unwrap()).is_ok(), "mapped is the host itself");
        assert!(p.check("2002:a00:1::".parse().unwrap()).is_err(), "6to4 of an allowed host goes via a relay");
        p.allow.clear();
        p.deny = vec!["2002::/16".parse().unwrap(), "192.0.2.0/24".parse().unwrap()];
        assert!(p.check("2002:cb00:7109::".parse().unwrap()).is_err(), "an IPv6 deny matches the address written");
        assert!(p.check("64:ff9b::192.0.2.5".parse().unwrap()).is_err(), "an IPv4 deny matches what it embeds");
    }

    #[test]
    fn an_allow_list_is_all_there_is_and_wins_over_defaults() {
        let p = policy(&["127.0.0.0/8", "10.10.0.0/16"]);
        assert!(p.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("10.10.4.4".parse().unwrap()).is_ok());
        assert!(p.check("10.11.0.1".parse().unwrap()).is_err());
        let mut denied = p.clone();
        denied.deny = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(denied.check("127.0.0.1".parse().unwrap()).is_err(), "deny wins");
    }

    #[tokio::test]
    async fn urls_are_refused_before_anything_is_sent() {
        let p = policy(&[]);
        let refuse = |u: &str, http| {
            let p = p.clone();
            let u = Url::parse(u).unwrap();
            async move { p.resolve(&u, http).await.unwrap_err().0 }
        };
        assert!(refuse("http://10.0.0.1:9090", true).await.contains("gates.allowHttp"));
        assert!(refuse("https://u:p@10.0.0.1", false).await.contains("credentials"));
        assert!(refuse("https://169.254.169.254/latest", false).await.contains("metadata"));
        assert!(refuse("https://[::1]:8443/", false).await.contains("loopback"));
        assert!(refuse("https://localhost:8443/", false).await.contains("loopback"));
        assert!(p.resolve(&Url::parse("https://10.0.0.1/").unwrap(), false).await.is_ok());
    }
}

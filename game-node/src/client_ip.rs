//! The client's address: the TCP peer, or — only when that peer is a trusted reverse proxy
//! (`--trusted-proxies`) — the address the proxies recorded in `X-Forwarded-For` or `Forwarded`
//! (RFC 7239). One function, [`client_ip`], decides it; the per-IP rate limit (a tower_governor
//! key extractor), the request log span and any per-IP cap use it, through the [`ClientIp`]
//! extractor or directly.
//!
//! Why the chain is walked from the right: each proxy appends the address it received the request
//! from, so the right end was written by the proxy nearest to us and the left end by whoever sent
//! the request first — possibly the client, who can write anything there. Walking from the right
//! and skipping trusted hops, the first untrusted address is the last one a trusted proxy vouched
//! for: the client as far as we can know. An untrusted peer's headers are never read, so a spoofed
//! header sent straight to the node changes nothing.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request, header};
use clap::ValueEnum;
use tower_governor::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use crate::error::{ApiError, Error};

pub use crashfleet_core::net::{Cidr, CidrList};

/// Which header the trusted proxies write. Only one is read: a proxy that manages one of them
/// passes the other through from the client untouched, so reading both would let the client
/// choose its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (ingress-nginx, nginx, HAProxy `option forwardfor`,
    /// Envoy, cloud load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (HAProxy `option forwarded`, some CDNs).
    Forwarded,
}

/// The reverse proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    cidrs: Vec<Cidr>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(cidrs: Vec<Cidr>, header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies { cidrs, header }
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(ip))
    }
}

/// The client's address for a request that arrived from `peer` with `headers` (see the module
/// comment for the rule). Without trusted proxies this is always `peer`.
pub fn client_ip(trusted: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.trusts(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = match trusted.header {
        ForwardedHeader::XForwardedFor => headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
            .map(parse_hop)
            .collect(),
        ForwardedHeader::Forwarded => headers
            .get_all(header::FORWARDED)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
            .map(forwarded_for)
            .collect(),
    };
    // `nearest` is the last address a trusted party vouched for.
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted.trusts(*ip) => nearest = *ip,
            Some(ip) => return *ip,
            // `unknown`, an obfuscated identifier or garbage: the trusted hop that wrote it could
            // not say who its client was, so that hop is the best key we have.
            None => return nearest,
        }
    }
    nearest
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    IpAddr::from_str(s)
        .or_else(|_| SocketAddr::from_str(s).map(|a| a.ip()))
        .or_else(|_| IpAddr::from_str(s.trim_start_matches('[').trim_end_matches(']')))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.60;proto=http`,
/// `for="[2001:db8::17]:4711"`); `None` when it has none or it is `unknown`/obfuscated.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_hop(value.trim().trim_matches('"'))
    })
}

/// The client address of the request being handled, as [`client_ip`] decides it. The router's
/// outermost layer computes it once per request and stores it in the request's extensions;
/// handlers take it as an extractor (`ClientIp(ip): ClientIp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// From a request's extensions: the stored value, else computed from the TCP peer
    /// (`ConnectInfo`, or axum's `MockConnectInfo` for a router driven in-process) and the
    /// headers. `None` when the request carries no peer address at all.
    pub fn of<B>(req: &Request<B>, trusted: &TrustedProxies) -> Option<ClientIp> {
        let ext = req.extensions();
        if let Some(ip) = ext.get::<ClientIp>() {
            return Some(*ip);
        }
        let peer = ext
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .or_else(|| ext.get::<MockConnectInfo<SocketAddr>>().map(|c| c.0))?
            .ip();
        Some(ClientIp(client_ip(trusted, peer, req.headers())))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<ClientIp>().copied().ok_or_else(|| {
            ApiError(Error::Internal(
                "the client address was not recorded".into(),
            ))
        })
    }
}

/// The per-IP REST limiter's key: [`ClientIp`].
#[derive(Debug, Clone)]
pub struct ClientIpKey(pub Arc<TrustedProxies>);

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        ClientIp::of(req, &self.0)
            .map(|c| c.0)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// The per-IP REST rate limiter, shared by the router (which checks it) and the node's pruning
/// task (which forgets idle addresses).
#[derive(Clone)]
pub struct IpLimiter {
    config: Arc<GovernorConfig<ClientIpKey, governor::middleware::NoOpMiddleware>>,
}

impl IpLimiter {
    /// `per_second` sustained requests per client address, bursts of twice that (a page load
    /// fetches several resources at once). `None` for 0 (no limit).
    pub fn new(per_second: u32, trusted: Arc<TrustedProxies>) -> Option<IpLimiter> {
        if per_second == 0 {
            return None;
        }
        let per_ms = (1_000 / u64::from(per_second)).max(1);
        let config = GovernorConfigBuilder::default()
            .per_millisecond(per_ms)
            .burst_size(per_second.saturating_mul(2))
            .key_extractor(ClientIpKey(trusted))
            .finish()?;
        Some(IpLimiter {
            config: Arc::new(config),
        })
    }

    pub fn layer(
        &self,
    ) -> tower_governor::GovernorLayer<
        ClientIpKey,
        governor::middleware::NoOpMiddleware,
        axum::body::Body,
    > {
        tower_governor::GovernorLayer::new(self.config.clone()).error_handler(rate_limit_error)
    }

    /// Forgets addresses whose bucket has refilled, so the map holds only recent clients.
    pub fn prune(&self) {
        self.config.limiter().retain_recent();
        self.config.limiter().shrink_to_fit();
    }

    /// Addresses currently tracked.
    pub fn len(&self) -> usize {
        self.config.limiter().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The limiter's refusal as our JSON error. `Retry-After` is the governor's own wait rounded up:
/// it reports whole seconds rounded down, so one more second is always enough and never more than
/// a second too long (with any rate of at least 1/s the wait is below a second: `Retry-After: 1`).
fn rate_limit_error(e: GovernorError) -> axum::response::Response {
    use axum::response::IntoResponse;
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let mut response = ApiError(Error::RateLimited).into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from(wait_time.saturating_add(1)),
            );
            response
        }
        GovernorError::UnableToExtractKey => ApiError(Error::Internal(
            "the rate limiter found no client address".into(),
        ))
        .into_response(),
        other => ApiError(Error::BadRequest(format!("{other}"))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(list: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(
            list.iter().map(|c| c.parse().expect("cidr")).collect(),
            header,
        )
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn an_untrusted_peers_headers_are_ignored() {
        let t = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(client_ip(&t, ip("198.51.100.7"), &h), ip("198.51.100.7"));
        // No trusted proxies at all: always the peer.
        let none = TrustedProxies::default();
        assert_eq!(client_ip(&none, ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_chain_is_walked_from_the_right_skipping_trusted_hops() {
        let t = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        // The client forged "6.6.6.6"; the edge proxy appended the real client, an inner proxy
        // appended the edge proxy.
        let h = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.5", "10.0.0.9"]);
        assert_eq!(client_ip(&t, ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // Ports and IPv6 brackets are tolerated.
        let h = headers("x-forwarded-for", &["[2001:db8::1]:443, 203.0.113.5:1234"]);
        assert_eq!(client_ip(&t, ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // Every hop trusted: the furthest one.
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.9"]);
        assert_eq!(client_ip(&t, ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // No header from a trusted peer: the peer.
        assert_eq!(
            client_ip(&t, ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
        // Garbage nearest to us: the trusted hop that wrote it.
        let h = headers("x-forwarded-for", &["203.0.113.5, nonsense, 10.0.0.9"]);
        assert_eq!(client_ip(&t, ip("10.0.0.2"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let fwd = trusted(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let mut h = headers("x-forwarded-for", &["203.0.113.5"]);
        h.append(
            header::FORWARDED,
            HeaderValue::from_static("for=6.6.6.6;proto=https"),
        );
        assert_eq!(client_ip(&xff, ip("10.0.0.2"), &h), ip("203.0.113.5"));
        assert_eq!(client_ip(&fwd, ip("10.0.0.2"), &h), ip("6.6.6.6"));
        let h = headers(
            "forwarded",
            &[
                "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=http",
                "For=10.1.1.1",
            ],
        );
        assert_eq!(client_ip(&fwd, ip("10.0.0.2"), &h), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=203.0.113.5, for=unknown"]);
        assert_eq!(client_ip(&fwd, ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn a_request_is_keyed_by_its_recorded_peer() {
        let t = trusted(&["127.0.0.1/32"], ForwardedHeader::XForwardedFor);
        let mut req = Request::builder()
            .header("x-forwarded-for", "203.0.113.5")
            .body(())
            .expect("request");
        assert_eq!(ClientIp::of(&req, &t), None, "no peer, no address");
        req.extensions_mut()
            .insert(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
        assert_eq!(ClientIp::of(&req, &t), Some(ClientIp(ip("203.0.113.5"))));
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 9))));
        assert_eq!(ClientIp::of(&req, &t), Some(ClientIp(ip("192.0.2.1"))));
        // Computed once: the stored value wins.
        req.extensions_mut().insert(ClientIp(ip("198.51.100.1")));
        assert_eq!(ClientIp::of(&req, &t), Some(ClientIp(ip("198.51.100.1"))));
    }

    #[test]
    fn the_limiter_forgets_idle_addresses_when_pruned() {
        let limiter = IpLimiter::new(1_000, Arc::new(TrustedProxies::default())).expect("limiter");
        for i in 0..50u8 {
            let _ = limiter
                .config
                .limiter()
                .check_key(&IpAddr::from([192, 0, 2, i]));
        }
        assert_eq!(limiter.len(), 50);
        // One request at 1,000/s is forgotten once its token is back (1 ms); poll, do not guess.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !limiter.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            limiter.prune();
        }
        assert!(limiter.is_empty(), "{} addresses left", limiter.len());
    }
}

//! `front:` — how an app's `http` front treats clients: deadlines for slow ones and which peers
//! may tell it who the real client is.

use super::units::{Dur, Size};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// `front: { header_timeout: 30s, idle_timeout: 75s, response_timeout: 60s, unhealthy_after: 3,
/// trusted_proxies: [10.0.0.0/8] }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontConfig {
    /// The whole request head must arrive within this long of its first byte (nginx's
    /// `client_header_timeout`): a client trickling a head is cut, answered 408.
    pub header_timeout: Dur,
    /// A keep-alive client connection with no request in progress is closed after this long.
    pub idle_timeout: Dur,
    /// A worker must start answering within this long of receiving the whole request, and may
    /// not fall silent longer than this in the middle of an answer: otherwise the client gets a
    /// 504 and the worker a failure (nginx's `proxy_read_timeout`).
    pub response_timeout: Dur,
    /// A client may not fall silent longer than this while sending a request body
    /// (nginx's `client_body_timeout`).
    pub body_timeout: Dur,
    /// The most client connections this app's front holds at once (past it, new ones wait in
    /// the kernel's accept queue). By default three quarters of the agent's budget for all fronts
    /// (half the fd limit, less a reserve: logged at start), so a flood on one app's port leaves
    /// the other apps room. Set when the front is created (start, or a SIGHUP that changes the
    /// app's port or front).
    pub max_connections: Option<u32>,
    /// A `tcp` front connection, or an upgraded one (websocket) on the `http` front, with no byte
    /// either way for this long is closed (HAProxy's `timeout tunnel`), so silent connections
    /// cannot hold the fronts' connection budget for ever. Keep it above your websocket pings.
    pub tunnel_idle_timeout: Dur,
    /// The largest request body passed to a worker (`100M` by default, like a large upload;
    /// bodies are streamed, never buffered). A bigger `Content-Length` is answered 413 before
    /// the worker sees a byte; a chunked body that grows past it is cut (nginx's
    /// `client_max_body_size`).
    pub max_body: Size,
    /// One JSON line per request in `state_dir/logs/<app>.access.log` (rotated like the app's
    /// log): time, peer, method, path, status, bytes, milliseconds, worker and request id.
    pub access_log: bool,
    /// Passive health: after this many response timeouts or refused connects in a row, a worker
    /// leaves the rotation and is replaced through the reload path (its replacement ready
    /// first). `0` turns it off. A worker that hangs (a deadlock, `SIGSTOP`) costs at most the
    /// requests already sent to it.
    pub unhealthy_after: u32,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-For/-Proto/-Host`, `Forwarded` and
    /// `X-Real-IP` are believed: a load balancer in front of the agent. Anyone else's are dropped
    /// and replaced by what the front saw, so a client cannot claim to be on https or another IP.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            header_timeout: Dur(Duration::from_secs(30)),
            idle_timeout: Dur(Duration::from_secs(75)),
            response_timeout: Dur(Duration::from_secs(60)),
            body_timeout: Dur(Duration::from_secs(60)),
            max_body: Size(100 << 20),
            tunnel_idle_timeout: Dur(Duration::from_secs(600)),
            max_connections: None,
            access_log: false,
            unhealthy_after: 3,
            trusted_proxies: Vec::new(),
        }
    }
}

impl FrontConfig {
    /// Whether `peer` is one of the `trusted_proxies`.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }
}

/// An address block written `10.0.0.0/8`, `fd00::/8` or a single address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as `::ffff:a.b.c.d`.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::checked::text(d, "an address block like `10.0.0.0/8` or an address like `192.168.1.10`")
    }
}

impl TryFrom<String> for Cidr {
    type Error = super::ValueError;
    fn try_from(s: String) -> Result<Self, super::ValueError> {
        let bad = || super::ValueError::Cidr(s.clone());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { net, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("192.168.1.10").contains(ip("192.168.1.10")));
        assert!(!cidr("192.168.1.10").contains(ip("192.168.1.11")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(cidr("127.0.0.1").contains(ip("::ffff:127.0.0.1")), "a v4 client on a v6 socket");
        assert!(cidr("fd00::/8").contains(ip("fd12::1")));
        assert!(!cidr("fd00::/8").contains(ip("10.0.0.1")));
    }

    #[test]
    fn bad_blocks_are_refused() {
        for bad in ["10.0.0.0/33", "nope", "10.0.0/8", "::/129", "1.2.3.4/-1"] {
            assert!(Cidr::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}

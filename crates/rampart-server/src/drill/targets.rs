//! One `--target` URL, parsed and checked to be loopback before anything
//! is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hyper::header::HeaderValue;
use hyper::Uri;

use super::config::DrillError;

/// One parsed, loopback-checked target.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) host: HeaderValue,
    /// The path-and-query, split at each `{key}`.
    segments: Vec<String>,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, DrillError> {
        let bad = |reason: &str| DrillError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let scheme_end = url
            .find("://")
            .ok_or_else(|| bad("expected http://HOST:PORT/PATH"))?;
        let scheme = &url[..scheme_end];
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad("https is not supported (drill speaks plain HTTP/1.1)"));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("only http:// URLs are supported"));
        }
        let rest = &url[scheme_end + 3..];
        if rest.contains('#') {
            return Err(bad("fragments (#...) are never sent; remove it"));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if authority.contains('@') {
            return Err(bad("user info (user@host) is not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed `[` in the host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected `:PORT` after `]`"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(bad("IPv6 addresses must be in brackets, e.g. [::1]"))
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        let refused = || DrillError::NotLoopback {
            url: url.to_owned(),
            host: host.to_owned(),
        };
        let ip = if authority.starts_with('[') {
            let v6: Ipv6Addr = host
                .parse()
                .map_err(|_| bad("invalid IPv6 address in brackets"))?;
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        } else if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            // Anything that is not a literal address (a host name, `127.1`,
            // ...) would need a resolver we do not trust to stay local.
            IpAddr::V4(host.parse::<Ipv4Addr>().map_err(|_| refused())?)
        };
        if !ip.is_loopback() {
            return Err(refused());
        }
        let host_header = HeaderValue::from_str(authority).map_err(|_| bad("invalid host"))?;
        let target = Self {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
            host: host_header,
            segments: path.split("{key}").map(str::to_owned).collect(),
        };
        Uri::try_from(target.path_for("1"))
            .map_err(|e| bad(&format!("invalid path `{path}`: {e}")))?;
        Ok(target)
    }

    pub(crate) fn path_for(&self, key: &str) -> String {
        let mut path = String::with_capacity(
            self.segments.iter().map(String::len).sum::<usize>()
                + key.len() * (self.segments.len() - 1),
        );
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                path.push_str(key);
            }
            path.push_str(segment);
        }
        path
    }
}

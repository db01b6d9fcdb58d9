//! What keeps the web pages a developer visits from using the local server behind their back.
//!
//! A page on any site can send requests to `localhost:8088`: a `text/plain` POST needs no
//! preflight, and a name the attacker controls can be made to resolve to 127.0.0.1 (DNS
//! rebinding). So every request must name the server itself in `Host` (localhost, a loopback
//! or listening address, at the listening port, or a name the developer allows), and a request
//! that changes something, or any `/local/` operator route, is refused when a browser says it
//! comes from another origin (`Origin`, or `Sec-Fetch-Site` where a browser sends no `Origin`),
//! unless it is an origin the developer named for the API. Clients that are not browsers send
//! neither header and are not affected.

use std::net::{IpAddr, SocketAddr};

use hyper::Method;
use hyper::header::{self, HeaderMap, HeaderValue};
use rockets::http::ApiError;

use crate::cors::Cors;
use crate::operations;

/// The checks, for a server listening on some addresses.
#[derive(Clone, Debug)]
pub struct Guard {
    /// Every `Host` the server answers to, lowercase.
    hosts: Vec<String>,
    cors: Cors,
}

impl Guard {
    /// The checks for a server listening on `addrs`, also answering to `extra` hosts (`name` or
    /// `name:port`), with the API open to the origins `cors` names.
    pub fn new(addrs: &[SocketAddr], extra: &[String], cors: Cors) -> Self {
        let mut hosts: Vec<String> = extra.iter().map(|h| h.to_ascii_lowercase()).collect();
        for addr in addrs {
            let port = addr.port();
            let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "[::1]".into()];
            match addr.ip() {
                ip if ip.is_unspecified() => {}
                IpAddr::V4(ip) => names.push(ip.to_string()),
                IpAddr::V6(ip) => names.push(format!("[{ip}]")),
            }
            for name in names {
                if port == 80 {
                    hosts.push(name.clone());
                }
                hosts.push(format!("{name}:{port}"));
            }
        }
        Guard { hosts, cors }
    }

    /// Refuses the request, naming the header at fault, if a page elsewhere may have sent it.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let refuse = |field, reason: String| Err(ApiError::Untrusted { field, reason });
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let Some(host) = host.filter(|h| self.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
        else {
            return refuse(
                "Host",
                "this server answers only to its own addresses (localhost, or \
                 ROCKETS_ALLOWED_HOSTS)"
                    .into(),
            );
        };
        let operator = path.starts_with(operations::PREFIX);
        let changes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !operator && !changes {
            return Ok(());
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let own = HeaderValue::from_str(&format!("http://{host}")).ok();
            let same =
                own.is_some_and(|own| own.as_bytes().eq_ignore_ascii_case(origin.as_bytes()));
            if same || (!operator && self.cors.lets(origin)) {
                return Ok(());
            }
            let routes = if operator {
                "the /local/ routes"
            } else {
                "this request"
            };
            return refuse(
                "Origin",
                format!("{routes} may not come from a page on another origin"),
            );
        }
        let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
        if site.is_some_and(|site| site != b"same-origin" && site != b"none") {
            return refuse(
                "Sec-Fetch-Site",
                "this request may not come from a page on another origin".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(cors: Cors) -> Guard {
        let addrs = [
            "127.0.0.1:8088".parse().unwrap(),
            "[::1]:8088".parse().unwrap(),
        ];
        Guard::new(&addrs, &["rockets.internal".into()], cors)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        (pairs.iter())
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn refused(result: Result<(), ApiError>) -> Option<&'static str> {
        match result {
            Err(ApiError::Untrusted { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn only_the_servers_own_names_are_answered() {
        let g = guard(Cors::Off);
        for host in [
            "localhost:8088",
            "LOCALHOST:8088",
            "127.0.0.1:8088",
            "[::1]:8088",
            "rockets.internal",
        ] {
            let ok = g.check(&Method::GET, "/rockets", &headers(&[("host", host)]));
            assert!(ok.is_ok(), "{host}");
        }
        for host in [
            "attacker.example:8088",
            "localhost:9999",
            "localhost",
            "127.0.0.1.nip.io:8088",
        ] {
            let refused = refused(g.check(&Method::GET, "/rockets", &headers(&[("host", host)])));
            assert_eq!(refused, Some("Host"), "{host}");
        }
        assert_eq!(
            refused(g.check(&Method::GET, "/", &HeaderMap::new())),
            Some("Host")
        );
    }

    #[test]
    fn pages_elsewhere_cannot_change_anything_or_reach_the_operator_routes() {
        let g = guard(Cors::Origins(vec![HeaderValue::from_static(
            "http://localhost:3000",
        )]));
        let host = ("host", "localhost:8088");
        let check = |method, path, more: &[(&'static str, &'static str)]| {
            let mut all = vec![host];
            all.extend_from_slice(more);
            refused(g.check(&method, path, &headers(&all)))
        };
        // Not a browser, or the server's own page: anything goes.
        assert_eq!(check(Method::POST, "/messages", &[]), None);
        assert_eq!(
            check(Method::POST, "/local/dead-letters/redrive", &[]),
            None
        );
        let own = [
            ("origin", "http://localhost:8088"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(check(Method::POST, "/messages", &own), None);
        assert_eq!(check(Method::DELETE, "/local/rockets/a/parked", &own), None);
        // Another site: no writes, no operator routes, reads are for CORS to decide.
        let evil = [
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(check(Method::POST, "/messages", &evil), Some("Origin"));
        assert_eq!(
            check(Method::POST, "/local/dead-letters/redrive", &evil),
            Some("Origin")
        );
        assert_eq!(
            check(Method::GET, "/local/dead-letters", &evil),
            Some("Origin")
        );
        assert_eq!(check(Method::GET, "/rockets", &evil), None);
        let navigation = [("sec-fetch-site", "cross-site")];
        assert_eq!(
            check(Method::GET, "/local/dead-letters", &navigation),
            Some("Sec-Fetch-Site")
        );
        assert_eq!(
            check(Method::GET, "/local/queue", &[("sec-fetch-site", "none")]),
            None
        );
        // Another port of localhost is another origin, unless the developer named it, and
        // then only for the API.
        let dev = [
            ("origin", "http://localhost:3000"),
            ("sec-fetch-site", "same-site"),
        ];
        assert_eq!(check(Method::POST, "/messages", &dev), None);
        assert_eq!(check(Method::GET, "/local/queue", &dev), Some("Origin"));
        let other = [
            ("origin", "http://localhost:4000"),
            ("sec-fetch-site", "same-site"),
        ];
        assert_eq!(check(Method::POST, "/messages", &other), Some("Origin"));
    }
}

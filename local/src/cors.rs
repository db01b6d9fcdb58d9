//! CORS as the template's HTTP API answers it (`CorsConfiguration`), so that a page served
//! from an origin the developer names can call the local server exactly as it calls the
//! deployed API. By default no other origin gets CORS answers: only the page the server serves
//! itself, which needs none.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//! `204` before routing, as API Gateway answers it; an allowed origin gets the allowed
//! methods, headers and max age. Every other response to an allowed origin carries
//! `Access-Control-Allow-Origin` and the exposed headers.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};

/// The template's `AllowMethods`, `AllowHeaders`, `ExposeHeaders` and `MaxAge`.
const ALLOW_METHODS: &str = "GET,POST,OPTIONS";
const ALLOW_HEADERS: &str = "content-type,authorization";
const EXPOSE_HEADERS: &str = "retry-after";
const MAX_AGE_SECS: &str = "600";

/// Which origins may call the API: the template's `CorsAllowOrigin` parameter.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Cors {
    /// `*`: every origin.
    AnyOrigin,
    /// These origins, e.g. `https://dashboard.example.com`.
    Origins(Vec<HeaderValue>),
    /// No CORS headers at all: only the server's own page calls it.
    #[default]
    Off,
}

impl std::str::FromStr for Cors {
    type Err = String;

    /// `*`, origins separated by commas, or `none` (or nothing) for no CORS headers.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "none" => return Ok(Cors::Off),
            "*" => return Ok(Cors::AnyOrigin),
            _ => {}
        }
        let origin = |origin: &str| {
            let origin = origin.trim().trim_end_matches('/');
            let scheme = origin.starts_with("http://") || origin.starts_with("https://");
            (scheme.then(|| HeaderValue::from_str(origin).ok()).flatten()).ok_or_else(|| {
                format!("{origin}: expected *, origins such as https://example.com, or none")
            })
        };
        text.split(',')
            .map(origin)
            .collect::<Result<_, _>>()
            .map(Cors::Origins)
    }
}

impl Cors {
    /// Whether a page on `origin` may call the API.
    pub fn lets(&self, origin: &HeaderValue) -> bool {
        match self {
            Cors::AnyOrigin => true,
            Cors::Origins(allowed) => allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(origin.as_bytes())),
            Cors::Off => false,
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin.filter(|origin| self.lets(origin))?;
        Some(match self {
            Cors::AnyOrigin => HeaderValue::from_static("*"),
            _ => origin.clone(),
        })
    }

    /// The answer to a preflight request, or `None` when the request is not one.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<hyper::StatusCode> {
        let is_preflight = self != &Cors::Off
            && method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        is_preflight.then_some(StatusCode::NO_CONTENT)
    }

    /// Adds the headers a preflight answer carries for the request's origin.
    pub fn add_preflight_headers(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if let Some(origin) = self.allowed(request.get(header::ORIGIN)) {
            self.add_origin(origin, response);
            response.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            response.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            response.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE_SECS),
            );
        }
    }

    /// Adds the headers every other answer to an allowed origin carries.
    pub fn add_response_headers(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        if let Some(origin) = self.allowed(origin) {
            self.add_origin(origin, response);
            response.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }

    fn add_origin(&self, origin: HeaderValue, response: &mut HeaderMap) {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if matches!(self, Cors::Origins(_)) {
            // The answer differs by origin, so caches must keep them apart.
            response.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn settings_parse_as_the_template_parameter_reads() {
        assert_eq!("*".parse::<Cors>().unwrap(), Cors::AnyOrigin);
        assert_eq!("".parse::<Cors>().unwrap(), Cors::Off);
        assert_eq!(
            "https://a.example/, http://localhost:3000"
                .parse::<Cors>()
                .unwrap(),
            Cors::Origins(vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://localhost:3000")
            ])
        );
        assert!("a.example".parse::<Cors>().is_err());
        assert!("https://a.example,".parse::<Cors>().is_err());
        assert_eq!(Cors::default(), Cors::Off);
    }

    #[test]
    fn a_preflight_needs_an_origin_and_a_requested_method() {
        let preflight = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ]);
        let cors = Cors::AnyOrigin;
        assert_eq!(
            cors.preflight(&Method::OPTIONS, &preflight),
            Some(StatusCode::NO_CONTENT)
        );
        assert_eq!(cors.preflight(&Method::GET, &preflight), None);
        let plain = headers(&[("origin", "https://a.example")]);
        assert_eq!(cors.preflight(&Method::OPTIONS, &plain), None);
        assert_eq!(Cors::Off.preflight(&Method::OPTIONS, &preflight), None);

        let mut answer = HeaderMap::new();
        cors.add_preflight_headers(&preflight, &mut answer);
        assert_eq!(answer["access-control-allow-origin"], "*");
        assert_eq!(answer["access-control-allow-methods"], ALLOW_METHODS);
        assert_eq!(answer["access-control-allow-headers"], ALLOW_HEADERS);
        assert_eq!(answer["access-control-max-age"], "600");
    }

    #[test]
    fn one_allowed_origin_is_echoed_and_others_get_nothing() {
        let cors: Cors = "https://a.example".parse().unwrap();
        let mut answer = HeaderMap::new();
        cors.add_response_headers(
            Some(&HeaderValue::from_static("https://a.example")),
            &mut answer,
        );
        assert_eq!(answer["access-control-allow-origin"], "https://a.example");
        assert_eq!(answer["access-control-expose-headers"], "retry-after");
        assert_eq!(answer["vary"], "origin");

        let mut answer = HeaderMap::new();
        cors.add_response_headers(
            Some(&HeaderValue::from_static("https://b.example")),
            &mut answer,
        );
        cors.add_response_headers(None, &mut answer);
        assert!(answer.is_empty());
    }
}

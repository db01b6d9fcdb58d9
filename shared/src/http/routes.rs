//! The API's routes: the one table the functions, the local server, the template's test and
//! the OpenAPI document's test read, and a request matched to one of them.

use lambda_http::Request;
use lambda_http::http::Method;

use super::ApiError;
use crate::message::{Channel, ValidationError};

/// The request's path as the API defines it: without the stage prefix API Gateway adds for a
/// named stage (`/v1/rockets` on stage `v1` is `/rockets`).
pub fn api_path(request: &Request) -> &str {
    use lambda_http::RequestExt as _;
    use lambda_http::request::RequestContext;
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.as_deref(),
        _ => None,
    };
    without_stage(request.uri().path(), stage)
}

pub(super) fn without_stage<'a>(path: &'a str, stage: Option<&str>) -> &'a str {
    match stage {
        Some(stage) if stage != "$default" => path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(stage))
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .map_or(path, |rest| if rest.is_empty() { "/" } else { rest }),
        _ => path,
    }
}

/// Which function serves a route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Function {
    Ingest,
    Query,
}

impl Function {
    /// Its name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Function::Ingest => "ingest",
            Function::Query => "query",
        }
    }
}

/// One route of the API: what API Gateway matches, which function it invokes, and what the
/// function does with it.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub method: &'static str,
    /// `{channel}` stands for one path segment.
    pub path: &'static str,
    /// `METHOD path`, as the template's routes and the metrics name it.
    pub label: &'static str,
    pub function: Function,
    endpoint: Endpoint,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endpoint {
    PostMessage,
    ListRockets,
    GetRocket,
    GetHistory,
    Health,
    Dashboard,
    ApiDocument,
}

/// The API's routes, the one table the functions, the local server, the template's test and
/// the OpenAPI document's test read.
pub const ROUTES: [RouteSpec; 7] = [
    RouteSpec {
        method: "POST",
        path: "/messages",
        label: "POST /messages",
        function: Function::Ingest,
        endpoint: Endpoint::PostMessage,
    },
    RouteSpec {
        method: "GET",
        path: "/rockets",
        label: "GET /rockets",
        function: Function::Query,
        endpoint: Endpoint::ListRockets,
    },
    RouteSpec {
        method: "GET",
        path: "/rockets/{channel}",
        label: "GET /rockets/{channel}",
        function: Function::Query,
        endpoint: Endpoint::GetRocket,
    },
    RouteSpec {
        method: "GET",
        path: "/rockets/{channel}/events",
        label: "GET /rockets/{channel}/events",
        function: Function::Query,
        endpoint: Endpoint::GetHistory,
    },
    RouteSpec {
        method: "GET",
        path: "/health",
        label: "GET /health",
        function: Function::Query,
        endpoint: Endpoint::Health,
    },
    RouteSpec {
        method: "GET",
        path: "/",
        label: "GET /",
        function: Function::Query,
        endpoint: Endpoint::Dashboard,
    },
    RouteSpec {
        method: "GET",
        path: "/openapi.yaml",
        label: "GET /openapi.yaml",
        function: Function::Query,
        endpoint: Endpoint::ApiDocument,
    },
];

impl RouteSpec {
    /// The `{channel}` segment (or `Some(None)` for a pattern without one) when `path`'s
    /// segments (without its leading slash) fit the pattern.
    fn matches<'a>(&self, path: &'a str) -> Option<Option<&'a str>> {
        let (mut want, mut got) = (self.path[1..].split('/'), path.split('/'));
        let mut channel = None;
        loop {
            match (want.next(), got.next()) {
                (None, None) => return Some(channel),
                (Some("{channel}"), Some(segment)) => channel = Some(segment),
                (Some(w), Some(g)) if w == g => {}
                _ => return None,
            }
        }
    }
}

/// A request matched to a route, with its path parameters parsed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Route {
    PostMessage,
    ListRockets,
    GetRocket(Channel),
    GetHistory(Channel),
    Health,
    /// The dashboard page.
    Dashboard,
    /// The OpenAPI document.
    ApiDocument,
}

impl Route {
    fn endpoint(&self) -> Endpoint {
        match self {
            Route::PostMessage => Endpoint::PostMessage,
            Route::ListRockets => Endpoint::ListRockets,
            Route::GetRocket(_) => Endpoint::GetRocket,
            Route::GetHistory(_) => Endpoint::GetHistory,
            Route::Health => Endpoint::Health,
            Route::Dashboard => Endpoint::Dashboard,
            Route::ApiDocument => Endpoint::ApiDocument,
        }
    }

    fn spec(&self) -> &'static RouteSpec {
        let endpoint = self.endpoint();
        ROUTES
            .iter()
            .find(|spec| spec.endpoint == endpoint)
            .expect("every route is in the table")
    }

    /// The function that serves this route.
    pub fn function(&self) -> Function {
        self.spec().function
    }

    /// `METHOD path`, as the template's routes and the metrics name it.
    pub fn label(&self) -> &'static str {
        self.spec().label
    }

    /// Matches a method and path against [`ROUTES`]; a trailing slash is ignored. A path that
    /// matches with another method is a 405, one that matches nothing a 404, and a malformed
    /// channel a 400.
    pub fn resolve(method: &Method, path: &str) -> Result<Route, ApiError> {
        let trimmed = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let relative = trimmed.strip_prefix('/').unwrap_or(trimmed);
        let mut allowed = None;
        for spec in &ROUTES {
            let Some(channel) = spec.matches(relative) else {
                continue;
            };
            let channel = channel.map(path_channel).transpose()?;
            if method.as_str() != spec.method {
                allowed = Some(spec.method);
                continue;
            }
            return Ok(match (spec.endpoint, channel) {
                (Endpoint::PostMessage, _) => Route::PostMessage,
                (Endpoint::ListRockets, _) => Route::ListRockets,
                (Endpoint::Health, _) => Route::Health,
                (Endpoint::Dashboard, _) => Route::Dashboard,
                (Endpoint::ApiDocument, _) => Route::ApiDocument,
                (Endpoint::GetRocket, Some(channel)) => Route::GetRocket(channel),
                (Endpoint::GetHistory, Some(channel)) => Route::GetHistory(channel),
                (Endpoint::GetRocket | Endpoint::GetHistory, None) => {
                    unreachable!("their patterns hold {{channel}}")
                }
            });
        }
        match allowed {
            Some(allowed) => Err(ApiError::MethodNotAllowed {
                method: method.clone(),
                allowed,
            }),
            None => Err(ApiError::NotFound(format!("no route for {path}"))),
        }
    }
}

/// The channel a path segment names, percent-decoded; a `400` naming `channel` if it is none.
pub fn path_channel(segment: &str) -> Result<Channel, ApiError> {
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ValidationError::invalid("channel", "is not validly percent-encoded"))?;
    Channel::parse(&decoded).map_err(|reason| ValidationError::invalid("channel", reason).into())
}

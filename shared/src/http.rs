//! The HTTP boundary: routes, the API's error enum and JSON responses.

use base64::Engine as _;
use std::future::Future;

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::http::{HeaderMap, Method, StatusCode, header};
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::json;

use crate::message::{Channel, ValidationError};
use crate::ports::Cause;

/// Every way an HTTP request can fail. Each variant names its status; 5xx details are logged
/// with context and never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the body names the field.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// 404: no such route, or no such rocket.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists with other methods.
    #[error("method {method} is not allowed; use {allowed}")]
    MethodNotAllowed {
        method: Method,
        allowed: &'static str,
    },
    /// 408: the request's body did not arrive in time.
    #[error("the request body did not arrive within {seconds} s")]
    BodyTimeout { seconds: u64 },
    /// 413: the body is larger than the API accepts.
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 400: the queue refused the message for a reason of its own (its code is given);
    /// resending the same message cannot succeed.
    #[error("the queue refused this message ({code})")]
    QueueRefused {
        code: String,
        #[source]
        cause: Cause,
    },
    /// 503 with `Retry-After`: a dependency is down; the same request may succeed later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// 500: a bug or unreadable data.
    #[error("internal error: {0}")]
    Internal(#[source] Cause),
}

/// Seconds a client is asked to wait before resending after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::QueueRefused { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(e) => e.code(),
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BodyTimeout { .. } => "request_timeout",
            ApiError::QueueRefused { .. } => "refused_by_queue",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The request field at fault, for the errors one field causes.
    fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::Invalid(e) => Some(e.field()).filter(|f| !f.is_empty()),
            ApiError::BodyTimeout { .. } | ApiError::PayloadTooLarge { .. } => Some("body"),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let message = match &self {
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "dependency unavailable, asking the client to retry");
                "temporarily unavailable; retry shortly".to_string()
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_string()
            }
            ApiError::QueueRefused { cause, .. } => {
                tracing::warn!(error = %cause, "the queue refused a message");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut error = json!({"code": self.code(), "message": message});
        if let Some(field) = self.field() {
            error["field"] = json!(field);
        }
        let mut response = json_response(status, &json!({ "error": error }));
        let headers = response.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allowed, .. } => {
                headers.insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            }
            _ => {}
        }
        response
    }
}

impl From<crate::ports::StoreError> for ApiError {
    fn from(error: crate::ports::StoreError) -> Self {
        use crate::ports::StoreError;
        match error {
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::Failed(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<crate::ports::QueueError> for ApiError {
    fn from(error: crate::ports::QueueError) -> Self {
        use crate::ports::QueueError;
        match error {
            QueueError::Unavailable(detail) => ApiError::Unavailable(detail),
            QueueError::Refused { code, cause } => ApiError::QueueRefused { code, cause },
            QueueError::Failed(detail) => ApiError::Internal(detail),
        }
    }
}

pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let mut text = Vec::with_capacity(128);
    serde_json::to_writer(&mut text, body).expect("response bodies serialise");
    let text = String::from_utf8(text).expect("serde_json writes UTF-8");
    json_text_response(status, text)
}

/// A response with `text`, already JSON, as its body.
pub fn json_text_response(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The event API Gateway's HTTP API (payload format 2.0, `$default` stage) hands a function for
/// this request, so that local serving and tests give the handlers exactly what Lambda gives them.
pub fn api_gateway_event(
    method: Method,
    path: &str,
    query: Option<&str>,
    headers: HeaderMap,
    body: Vec<u8>,
) -> ApiGatewayV2httpRequest {
    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some("$default".into());
    event.raw_path = Some(path.into());
    event.raw_query_string = Some(query.unwrap_or_default().into());
    event.headers = headers;
    if !body.is_empty() {
        match String::from_utf8(body) {
            Ok(text) => event.body = Some(text),
            Err(binary) => {
                let bytes = binary.into_bytes();
                event.body = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                event.is_base64_encoded = true;
            }
        }
    }
    let context = &mut event.request_context;
    context.stage = Some("$default".into());
    context.route_key = Some("$default".into());
    context.time_epoch = chrono::Utc::now().timestamp_millis();
    context.http.method = method;
    context.http.path = Some(path.into());
    context.http.protocol = Some("HTTP/1.1".into());
    event
}

/// [`api_gateway_event`] converted by [`gateway_request`].
pub fn api_gateway_request(
    method: Method,
    path: &str,
    query: Option<&str>,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<Request, ApiError> {
    gateway_request(api_gateway_event(method, path, query, headers, body))
}

/// The request an API Gateway event describes, converted by lambda_http itself.
///
/// That conversion builds a URL from the `Host` and `X-Forwarded-Proto` headers, the path and
/// the query, and panics when they make none, as it does on a body marked base64 that is not.
/// Such an event is refused here instead, naming what is wrong, before lambda_http sees it.
pub fn gateway_request(event: ApiGatewayV2httpRequest) -> Result<Request, ApiError> {
    check_convertible(&event)?;
    Ok(LambdaRequest::ApiGatewayV2(event).into())
}

fn check_convertible(event: &ApiGatewayV2httpRequest) -> Result<(), ApiError> {
    let invalid = |field, reason: &str| ApiError::Invalid(ValidationError::invalid(field, reason));
    let path = event.raw_path.as_deref().unwrap_or_default();
    let host = event
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(event.request_context.domain_name.as_deref());
    let mut uri = match host {
        None => url::Url::parse(&format!("http://localhost{path}"))
            .map_err(|_| invalid("path", "is not a valid URL path"))?
            .path()
            .to_string(),
        Some(host) => {
            // A Host that carries a path, query or user would move the URL's path away from
            // the one API Gateway routed.
            if host.contains(['/', '?', '#', '@', '\\'])
                || url::Url::parse(&format!("https://{host}/")).is_err()
            {
                return Err(invalid("headers.host", "is not a valid host"));
            }
            let scheme = match event
                .headers
                .get("x-forwarded-proto")
                .map(|p| p.to_str().unwrap_or_default())
            {
                None => "https",
                Some(p) if p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("http") => p,
                Some(_) => {
                    return Err(invalid(
                        "headers.x-forwarded-proto",
                        "must be http or https",
                    ));
                }
            };
            url::Url::parse(&format!("{scheme}://{host}{path}"))
                .map_err(|_| invalid("path", "is not a valid URL path"))?
                .to_string()
        }
    };
    if let Some(query) = event.raw_query_string.as_deref().filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(query);
    }
    uri.parse::<lambda_http::http::Uri>()
        .map_err(|_| invalid("query", "is not a valid URL query"))?;
    if event.is_base64_encoded
        && let Some(body) = &event.body
        && base64::engine::general_purpose::STANDARD
            .decode(body)
            .is_err()
    {
        return Err(invalid("body", "is marked base64 but is not"));
    }
    Ok(())
}

/// The HTTP API response for a handler's response.
pub fn gateway_response(response: Response<Body>) -> ApiGatewayV2httpResponse {
    let (parts, body) = response.into_parts();
    let mut gateway = ApiGatewayV2httpResponse::default();
    gateway.status_code = i64::from(parts.status.as_u16());
    gateway.is_base64_encoded = matches!(body, Body::Binary(_));
    gateway.body = match body {
        Body::Empty => None,
        other => Some(other),
    };
    gateway.headers = parts.headers;
    gateway
}

/// One HTTP API event through [`gateway_request`] (a 400 for one that cannot be converted),
/// the handler, and [`gateway_response`].
pub async fn serve_event<F, Fut>(
    handler: &F,
    event: ApiGatewayV2httpRequest,
) -> ApiGatewayV2httpResponse
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let response = match gateway_request(event) {
        Ok(request) => handler(request).await,
        Err(error) => error.into_response(),
    };
    gateway_response(response)
}

/// Serves an HTTP API function in Lambda, each event through [`serve_event`], and reports
/// each request's metrics (see [`request_metrics`]).
pub async fn run<F, Fut>(function: Function, handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<ApiGatewayV2httpRequest>| {
            let started = std::time::Instant::now();
            let route = route_label(&event.payload);
            // Boxed, as lambda_http boxes its handler's future: the handlers' futures nest the
            // SDK's deeply, and unboxed their type is more than the compiler will lay out.
            let served: std::pin::Pin<Box<dyn Future<Output = ApiGatewayV2httpResponse> + '_>> =
                Box::pin(serve_event(handler, event.payload));
            async move {
                let response = served.await;
                request_metrics(function, route, &response, started.elapsed()).emit();
                Ok::<_, lambda_runtime::Error>(response)
            }
        },
    ))
    .await
}

/// The route an event was sent to, as the template names it (`GET /rockets/{channel}`), or
/// `other`.
fn route_label(event: &ApiGatewayV2httpRequest) -> &'static str {
    let path = without_stage(
        event.raw_path.as_deref().unwrap_or_default(),
        event.request_context.stage.as_deref(),
    );
    let Ok(route) = Route::resolve(&event.request_context.http.method, path) else {
        return "other";
    };
    let endpoint = route.endpoint();
    ROUTES
        .iter()
        .find(|spec| spec.endpoint == endpoint)
        .map_or("other", |spec| spec.label)
}

/// One request's metrics: `Requests` and `Latency` per route and status; for ingest also
/// `Accepted`, `Rejected` (per error code) and `QueueUnavailable`.
pub fn request_metrics(
    function: Function,
    route: &'static str,
    response: &ApiGatewayV2httpResponse,
    elapsed: std::time::Duration,
) -> crate::metrics::Metrics {
    use crate::metrics::{Metrics, names};
    let status = response.status_code;
    let mut metrics = Metrics::new(function.name());
    metrics
        .per_all("route", route)
        .per_all("status", status.to_string())
        .count(names::REQUESTS, 1)
        .millis(names::LATENCY, elapsed.as_secs_f64() * 1000.0);
    if function == Function::Ingest {
        match status {
            200..=299 => {
                metrics.count(names::ACCEPTED, 1);
            }
            503 => {
                metrics.count(names::QUEUE_UNAVAILABLE, 1);
            }
            400..=499 => {
                metrics
                    .per(
                        "code",
                        error_code(response).unwrap_or_else(|| "other".into()),
                    )
                    .count(names::REJECTED, 1);
            }
            _ => {}
        }
    }
    metrics
}

/// The `error.code` of an error response's body.
fn error_code(response: &ApiGatewayV2httpResponse) -> Option<String> {
    let Some(Body::Text(text)) = &response.body else {
        return None;
    };
    let body: serde_json::Value = serde_json::from_str(text).ok()?;
    body["error"]["code"].as_str().map(str::to_string)
}

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

fn without_stage<'a>(path: &'a str, stage: Option<&str>) -> &'a str {
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

    /// The function that serves this route.
    pub fn function(&self) -> Function {
        let endpoint = self.endpoint();
        ROUTES
            .iter()
            .find(|spec| spec.endpoint == endpoint)
            .expect("every route is in the table")
            .function
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

fn path_channel(segment: &str) -> Result<Channel, ApiError> {
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ValidationError::invalid("channel", "is not validly percent-encoded"))?;
    Channel::parse(&decoded).map_err(|reason| ValidationError::invalid("channel", reason).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_reports_its_route_status_and_for_ingest_its_outcome() {
        let event = |method: Method, path: &str| {
            let mut event = api_gateway_event(method, path, None, HeaderMap::new(), Vec::new());
            event.request_context.stage = Some("v1".into());
            event.raw_path = Some(format!("/v1{path}"));
            event
        };
        assert_eq!(
            route_label(&event(Method::GET, "/rockets/abc")),
            "GET /rockets/{channel}"
        );
        assert_eq!(route_label(&event(Method::GET, "/nowhere")), "other");
        let answer = |status: i64, body: &str| {
            let mut response = ApiGatewayV2httpResponse::default();
            response.status_code = status;
            response.body = Some(Body::Text(body.into()));
            response
        };
        let elapsed = std::time::Duration::from_millis(3);
        let rejected = request_metrics(
            Function::Ingest,
            "POST /messages",
            &answer(
                400,
                r#"{"error":{"code":"invalid_value","field":"x","message":"m"}}"#,
            ),
            elapsed,
        )
        .to_json(1);
        assert_eq!(rejected["Rejected"], 1.0);
        assert_eq!(rejected["code"], "invalid_value");
        assert_eq!(rejected["status"], "400");
        assert_eq!(rejected["Latency"], 3.0);
        let accepted = request_metrics(
            Function::Ingest,
            "POST /messages",
            &answer(202, "{}"),
            elapsed,
        )
        .to_json(1);
        assert_eq!(accepted["Accepted"], 1.0);
        assert!(accepted.get("Rejected").is_none());
        let down = request_metrics(
            Function::Ingest,
            "POST /messages",
            &answer(503, "{}"),
            elapsed,
        )
        .to_json(1);
        assert_eq!(down["QueueUnavailable"], 1.0);
        let read = request_metrics(Function::Query, "GET /rockets", &answer(200, "{}"), elapsed)
            .to_json(1);
        assert_eq!(
            (read["Requests"].clone(), read["route"].clone()),
            (1.0.into(), "GET /rockets".into())
        );
        assert!(read.get("Accepted").is_none());
    }

    fn resolve(method: Method, path: &str) -> Result<Route, ApiError> {
        Route::resolve(&method, path)
    }

    #[test]
    fn routes_match_the_route_table() {
        let c = Channel::parse("abc:1").unwrap();
        assert_eq!(
            resolve(Method::POST, "/messages").unwrap(),
            Route::PostMessage
        );
        assert_eq!(
            resolve(Method::GET, "/rockets").unwrap(),
            Route::ListRockets
        );
        assert_eq!(
            resolve(Method::GET, "/rockets/").unwrap(),
            Route::ListRockets
        );
        assert_eq!(
            resolve(Method::GET, "/rockets/abc:1").unwrap(),
            Route::GetRocket(c.clone())
        );
        assert_eq!(
            resolve(Method::GET, "/rockets/abc%3A1").unwrap(),
            Route::GetRocket(c.clone())
        );
        assert_eq!(
            resolve(Method::GET, "/rockets/abc:1/events").unwrap(),
            Route::GetHistory(c)
        );
        assert_eq!(resolve(Method::GET, "/health").unwrap(), Route::Health);
        assert_eq!(resolve(Method::GET, "/").unwrap(), Route::Dashboard);
        assert_eq!(
            resolve(Method::GET, "/openapi.yaml").unwrap(),
            Route::ApiDocument
        );
        for spec in ROUTES {
            let path = spec.path.replace("{channel}", "x");
            let route = resolve(spec.method.parse().unwrap(), &path).unwrap();
            assert_eq!(route.function(), spec.function, "{}", spec.path);
        }
    }

    #[test]
    fn wrong_method_unknown_path_and_bad_channel() {
        let err = resolve(Method::GET, "/messages").unwrap_err();
        assert_eq!(err.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(err.into_response().headers()["allow"], "POST");
        assert_eq!(
            resolve(Method::DELETE, "/rockets/x").unwrap_err().status(),
            405
        );
        assert_eq!(resolve(Method::POST, "/").unwrap_err().status(), 405);
        assert_eq!(resolve(Method::GET, "/x").unwrap_err().status(), 404);
        assert_eq!(
            resolve(Method::GET, "/rockets/a/b").unwrap_err().status(),
            404
        );
        assert_eq!(resolve(Method::GET, "/rocketsx").unwrap_err().status(), 404);
        let bad = resolve(Method::GET, "/rockets/a%20b").unwrap_err();
        assert_eq!(bad.status(), 400);
        assert_eq!(
            resolve(Method::GET, "/rockets/%zz").unwrap_err().status(),
            400
        );
    }

    #[test]
    fn error_bodies_name_the_field_and_hide_internals() {
        let invalid = ApiError::from(ValidationError::Missing {
            field: "metadata.channel",
        });
        let body = body_json(invalid.into_response());
        assert_eq!(body["error"]["field"], "metadata.channel");
        assert_eq!(body["error"]["code"], "missing_field");

        let internal = ApiError::Internal("table rockets: secret detail".into()).into_response();
        assert_eq!(internal.status(), 500);
        assert!(!format!("{:?}", internal.body()).contains("secret"));

        let unavailable = ApiError::Unavailable("sqs down".into()).into_response();
        assert_eq!(unavailable.status(), 503);
        assert_eq!(unavailable.headers()["retry-after"], "1");
        assert_eq!(unavailable.headers()["content-type"], "application/json");
    }

    #[test]
    fn a_named_stage_is_not_part_of_the_route() {
        let mut event = ApiGatewayV2httpRequest::default();
        event.raw_path = Some("/v1/rockets/abc".into());
        event.request_context.stage = Some("v1".into());
        event.request_context.http.method = Method::GET;
        let request: Request = LambdaRequest::ApiGatewayV2(event).into();
        assert_eq!(api_path(&request), "/rockets/abc");
        let plain = api_gateway_request(Method::GET, "/v1/rockets", None, HeaderMap::new(), vec![])
            .unwrap();
        assert_eq!(
            api_path(&plain),
            "/v1/rockets",
            "$default has no prefix to strip"
        );
    }

    fn event_with(headers: &[(&str, &[u8])], query: &str) -> ApiGatewayV2httpRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        api_gateway_event(Method::GET, "/rockets", Some(query), map, Vec::new())
    }

    fn refused_field(event: ApiGatewayV2httpRequest) -> String {
        match gateway_request(event) {
            Ok(_) => "accepted".into(),
            Err(error) => {
                assert_eq!(error.status(), 400);
                body_json(error.into_response())["error"]["field"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        }
    }

    #[test]
    fn headers_lambda_http_cannot_turn_into_a_url_are_a_400_naming_them() {
        let refused = |headers: &[(&str, &[u8])]| refused_field(event_with(headers, ""));
        for host in [&b"a b"[..], b"[x]", b"x:99999", b"a/b?c", b"[", b"x\\y"] {
            assert_eq!(refused(&[("host", host)]), "headers.host", "{host:?}");
        }
        for proto in [&b"h ttp"[..], b"javascript", b"ftp", b"", b"\xff"] {
            let headers: &[(&str, &[u8])] =
                &[("host", b"example.com"), ("x-forwarded-proto", proto)];
            assert_eq!(refused(headers), "headers.x-forwarded-proto", "{proto:?}");
        }
        for fine in [
            &b"example.com"[..],
            b"127.0.0.1:8088",
            b"[::1]:8088",
            b"localhost",
        ] {
            assert_eq!(
                refused(&[("host", fine), ("x-forwarded-proto", b"HTTP")]),
                "accepted"
            );
        }
        // A Host that is not visible ASCII is ignored by lambda_http, as here.
        assert_eq!(refused(&[("host", b"caf\xc3\xa9")]), "accepted");
        assert_eq!(refused_field(event_with(&[], "a=\"b\"")), "query");
        let mut bad_body = event_with(&[], "");
        bad_body.body = Some("not base64!".into());
        bad_body.is_base64_encoded = true;
        assert_eq!(refused_field(bad_body), "body");
    }

    proptest::proptest! {
        #[test]
        fn no_header_path_or_query_makes_the_conversion_panic(
            host in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            proto in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            path in "/[ -~]{0,24}",
            query in "[ -~]{0,24}",
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = header::HeaderValue::from_bytes(&host) {
                headers.insert(header::HOST, value);
            }
            if let Ok(value) = header::HeaderValue::from_bytes(&proto) {
                headers.insert("x-forwarded-proto", value);
            }
            let event = api_gateway_event(Method::GET, &path, Some(&query), headers, Vec::new());
            let _ = gateway_request(event);
        }
    }

    fn body_json(response: Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }
}

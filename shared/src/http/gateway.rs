//! API Gateway's HTTP API events (payload format 2.0): the event a request becomes, its
//! conversion by lambda_http into a request, and a response back into the event's answer.
//!
//! lambda_http's conversion panics on some events (a `Host` it cannot make a URL of, a body
//! marked base64 that is not), so each event is checked first and refused as a `400` naming
//! the field, which is also why the functions do not use `lambda_http::run`.

use base64::Engine as _;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::http::{HeaderMap, Method, header};
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request, Response};

use super::ApiError;
use crate::message::ValidationError;

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

/// Who sent a request, as API Gateway's authorizer vouched: `jwt:` and the token's `sub`
/// claim, or `iam:` and the caller's ARN (an assumed role's without its session name, so that
/// every session of a sender's role is that sender). `None` without an authorizer.
pub fn sender(request: &Request) -> Option<String> {
    use lambda_http::RequestExt as _;
    use lambda_http::request::RequestContext;
    let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else {
        return None;
    };
    let authorizer = context.authorizer.as_ref()?;
    if let Some(subject) = (authorizer.jwt.as_ref()).and_then(|jwt| jwt.claims.get("sub")) {
        return Some(format!("jwt:{subject}"));
    }
    let arn = authorizer.iam.as_ref()?.user_arn.as_deref()?;
    let arn = match arn.split_once(":assumed-role/") {
        Some((account, role)) => {
            let role = role.split_once('/').map_or(role, |(role, _session)| role);
            format!("{account}:assumed-role/{role}")
        }
        None => arn.to_string(),
    };
    Some(format!("iam:{arn}"))
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

//! The HTTP boundary.
//!
//! - `error.rs`: [`ApiError`], one variant per way a request fails, each with its status and
//!   JSON answer; JSON responses.
//! - `gateway.rs`: API Gateway's HTTP API events, converted by lambda_http into requests, and
//!   responses back into answers.
//! - `routes.rs`: the API's routes ([`ROUTES`]), and a request matched to one ([`Route`]).
//! - `runner.rs`: serving a function in Lambda: each event routed once, handled, answered, and
//!   counted in its metrics.

mod error;
mod gateway;
mod routes;
mod runner;

pub use error::{ApiError, RETRY_AFTER_SECS, json_response};
pub use gateway::{
    api_gateway_event, api_gateway_request, gateway_request, gateway_response, sender,
};
pub use routes::{Function, ROUTES, Route, RouteSpec, api_path, path_channel};
pub use runner::{Served, request_metrics, respond, run, run_with_schedule, serve_event};

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
    use lambda_http::http::{HeaderMap, Method, StatusCode, header};
    use lambda_http::request::LambdaRequest;
    use lambda_http::{Body, Request, Response};
    use serde_json::json;

    use crate::message::{Channel, ValidationError};

    #[tokio::test]
    async fn each_request_reports_its_route_status_and_for_ingest_its_outcome() {
        let event = |method: Method, path: &str| {
            let mut event = api_gateway_event(method, path, None, HeaderMap::new(), Vec::new());
            event.request_context.stage = Some("v1".into());
            event.raw_path = Some(format!("/v1{path}"));
            event
        };
        let answering = |status: u16| {
            move |_: Route, _: Request| async move {
                match status {
                    400 => Err(ApiError::from(ValidationError::invalid("x", "is wrong"))),
                    503 => Err(ApiError::Unavailable("down".into())),
                    _ => Ok(json_response(
                        StatusCode::from_u16(status).unwrap(),
                        &json!({}),
                    )),
                }
            }
        };
        let served = serve_event(&answering(200), event(Method::GET, "/rockets/abc")).await;
        assert_eq!(served.route, "GET /rockets/{channel}");
        let served = serve_event(&answering(200), event(Method::GET, "/nowhere")).await;
        assert_eq!((served.route, served.error), ("other", Some("not_found")));

        let elapsed = std::time::Duration::from_millis(3);
        let post = || event(Method::POST, "/messages");
        let rejected = serve_event(&answering(400), post()).await;
        let rejected = request_metrics(Function::Ingest, &rejected, elapsed).to_json(1);
        assert_eq!(rejected["Rejected"], 1.0);
        assert_eq!(rejected["code"], "invalid_value");
        assert_eq!(rejected["status"], "400");
        assert_eq!(rejected["Latency"], 3.0);
        let accepted = serve_event(&answering(202), post()).await;
        let accepted = request_metrics(Function::Ingest, &accepted, elapsed).to_json(1);
        assert_eq!(accepted["Accepted"], 1.0);
        assert!(accepted.get("Rejected").is_none());
        let down = serve_event(&answering(503), post()).await;
        let down = request_metrics(Function::Ingest, &down, elapsed).to_json(1);
        assert_eq!(down["QueueUnavailable"], 1.0);
        let read = serve_event(&answering(200), event(Method::GET, "/rockets")).await;
        let read = request_metrics(Function::Query, &read, elapsed).to_json(1);
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

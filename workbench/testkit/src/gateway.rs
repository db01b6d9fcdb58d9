/// API Gateway events for `method path` whose headers, query or body lambda_http's conversion
/// cannot turn into a request, each with the field the 400 must name.
pub fn unconvertible_gateway_events(
    method: &str,
    path: &str,
    body: &str,
) -> Vec<(
    aws_lambda_events::apigw::ApiGatewayV2httpRequest,
    &'static str,
)> {
    use lambda_http::http::{HeaderMap, HeaderValue, Method};
    let method: Method = method.parse().expect("a method");
    let event = |headers: &[(&'static str, &'static [u8])], query: &str| {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                *name,
                HeaderValue::from_bytes(value).expect("a header value"),
            );
        }
        rockets::http::api_gateway_event(
            method.clone(),
            path,
            Some(query),
            map,
            body.as_bytes().to_vec(),
        )
    };
    let mut events = vec![
        (event(&[("host", b"a b")], ""), "headers.host"),
        (event(&[("host", b"[rockets]")], ""), "headers.host"),
        (event(&[("host", b"x/messages?")], ""), "headers.host"),
        (
            event(&[("host", b"x"), ("x-forwarded-proto", b"ht tp")], ""),
            "headers.x-forwarded-proto",
        ),
        (
            event(&[("host", b"x"), ("x-forwarded-proto", b"javascript")], ""),
            "headers.x-forwarded-proto",
        ),
        (event(&[], "q=\"x\""), "query"),
    ];
    let mut not_base64 = event(&[], "");
    not_base64.body = Some("%%%".into());
    not_base64.is_base64_encoded = true;
    events.push((not_base64, "body"));
    events
}

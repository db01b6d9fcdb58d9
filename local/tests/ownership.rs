//! A channel belongs to its first sender when auth is on. Tokens are generated here for several
//! senders; each request is the event API Gateway hands ingest once its JWT authorizer (or its
//! IAM authorization) has vouched for the sender, and the owners live in DynamoDB Local.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::http::{HeaderMap, HeaderValue, Method, header};
use rockets::http::{api_gateway_event, serve_event};
use rockets::message::Envelope;
use rockets_aws::{DynamoOwners, emulator_config};
use rockets_testkit::{RecordingQueue, Rng, channel, emulator, flight, unique_name};
use serde_json::{Value, json};

/// A token for `subject`, shaped as an issuer signs one; API Gateway checks its signature, the
/// function reads only the claims the authorizer passes on.
fn token(subject: &str) -> String {
    let part = |value: Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let header = part(json!({"alg": "RS256", "typ": "JWT", "kid": "test"}));
    let claims = part(json!({
        "iss": "https://issuer.example", "aud": "rockets", "sub": subject,
        "exp": chrono::Utc::now().timestamp() + 3600,
    }));
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(subject))
}

/// The event for a POST of `message`, with what the authorizer says of the caller.
fn event(message: &Envelope, authorization: &str, authorizer: Value) -> ApiGatewayV2httpRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(authorization).unwrap(),
    );
    let event = api_gateway_event(
        Method::POST,
        "/messages",
        None,
        headers,
        message.to_json().into_bytes(),
    );
    let mut event = serde_json::to_value(event).unwrap();
    event["requestContext"]["authorizer"] = authorizer;
    serde_json::from_value(event).unwrap()
}

/// What API Gateway's JWT authorizer passes on for a valid `token`: its claims.
fn jwt(token: &str) -> Value {
    let claims = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    let claims: serde_json::Map<String, Value> = (claims.as_object().unwrap().iter())
        .map(|(k, v)| {
            (
                k.clone(),
                json!(v.as_str().map_or(v.to_string(), str::to_owned)),
            )
        })
        .collect();
    json!({"jwt": {"claims": claims, "scopes": null}})
}

/// What API Gateway passes on for an IAM-signed request from `arn`.
fn iam(arn: &str) -> Value {
    json!({"iam": {"accountId": "123456789012", "userArn": arn, "callerId": "AROAEXAMPLE"}})
}

async fn owners(endpoint: &str, table: &str) -> DynamoOwners {
    let client = aws_sdk_dynamodb::Client::new(&emulator_config(endpoint).await);
    DynamoOwners::new(client, table)
}

/// Posts `message` as the caller the authorizer describes; the status and the error's code.
async fn post(
    owners: &DynamoOwners,
    queue: &RecordingQueue,
    message: &Envelope,
    authorization: &str,
    authorizer: Value,
) -> (u16, Option<&'static str>) {
    let handler = |route, request| ingest::handle(queue, owners, route, request);
    let served = serve_event(&handler, event(message, authorization, authorizer)).await;
    (served.response.status_code as u16, served.error)
}

#[tokio::test]
async fn a_channel_belongs_to_its_first_sender() {
    let Some(endpoint) = emulator("ROCKETS_TEST_DYNAMODB_LOCAL") else {
        return;
    };
    let table = support::dynamodb(&endpoint, "owners")
        .await
        .table()
        .to_string();
    let mut rng = Rng::new(17);
    let (alice, bob) = (token(&rng.uuid_channel().to_string()), token("bob"));
    let (x, y) = (rng.uuid_channel(), rng.uuid_channel());
    let xs = flight(&x, 101, &mut rng);
    let queue = RecordingQueue::default();
    let container = owners(&endpoint, &table).await;
    let bearer = |token: &str| format!("Bearer {token}");

    assert_eq!(
        post(&container, &queue, &xs[0], &bearer(&alice), jwt(&alice)).await,
        (202, None)
    );
    // Every message of another sender on it is refused, and none is queued.
    for message in &xs[1..] {
        let answer = post(&container, &queue, message, &bearer(&bob), jwt(&bob)).await;
        assert_eq!(answer, (403, Some("not_your_channel")));
    }
    assert_eq!(queue.sent(), xs[..1]);
    // Bob writes channels of his own; Alice goes on with hers, in another container too.
    let ys = flight(&y, 1, &mut rng);
    assert_eq!(
        post(&container, &queue, &ys[0], &bearer(&bob), jwt(&bob)).await,
        (202, None)
    );
    let cold = owners(&endpoint, &table).await;
    assert_eq!(
        post(&cold, &queue, &xs[1], &bearer(&bob), jwt(&bob))
            .await
            .0,
        403
    );
    assert_eq!(
        post(&cold, &queue, &xs[1], &bearer(&alice), jwt(&alice))
            .await
            .0,
        202
    );
    assert_eq!(queue.sent().len(), 3);

    // Two senders racing for a new channel from two containers: exactly one gets it.
    let z = rng.uuid_channel();
    let zs = flight(&z, 2, &mut rng);
    let (first, second) = (
        owners(&endpoint, &table).await,
        owners(&endpoint, &table).await,
    );
    let (as_alice, as_bob) = (bearer(&alice), bearer(&bob));
    let (a, b) = tokio::join!(
        post(&first, &queue, &zs[0], &as_alice, jwt(&alice)),
        post(&second, &queue, &zs[1], &as_bob, jwt(&bob)),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 403]);
}

#[tokio::test]
async fn with_iam_a_channel_belongs_to_the_senders_role_whatever_the_session() {
    let Some(endpoint) = emulator("ROCKETS_TEST_DYNAMODB_LOCAL") else {
        return;
    };
    let table = support::dynamodb(&endpoint, "owners")
        .await
        .table()
        .to_string();
    let owners = owners(&endpoint, &table).await;
    let queue = RecordingQueue::default();
    let c = channel(&unique_name("iam"));
    let messages = flight(&c, 3, &mut Rng::new(5));
    let role = |name: &str, session: &str| {
        iam(&format!(
            "arn:aws:sts::123456789012:assumed-role/{name}/{session}"
        ))
    };
    let signed = "AWS4-HMAC-SHA256 Credential=…";
    assert_eq!(
        post(&owners, &queue, &messages[0], signed, role("sender", "one"))
            .await
            .0,
        202
    );
    assert_eq!(
        post(&owners, &queue, &messages[1], signed, role("sender", "two"))
            .await
            .0,
        202
    );
    assert_eq!(
        post(&owners, &queue, &messages[2], signed, role("other", "one"))
            .await
            .0,
        403
    );
    assert_eq!(queue.sent(), messages[..2]);
}

use std::sync::Mutex;

use lambda_http::http::{HeaderMap, Method};
use lambda_http::{Body, Response};
use rockets::http::api_gateway_request;
use rockets::message::Envelope;
use rockets::ports::{MessageQueue, QueueError, QueuedMessage};
use serde_json::{Value, json};

/// Records what was sent; refuses everything while `down`.
#[derive(Default)]
struct RecordingQueue {
    sent: Mutex<Vec<QueuedMessage>>,
    down: bool,
}

impl MessageQueue for RecordingQueue {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        if self.down {
            return Err(QueueError::Unavailable("connection refused".into()));
        }
        self.sent.lock().unwrap().push(QueuedMessage::of(message));
        Ok(())
    }
}

fn launched() -> Value {
    json!({
        "metadata": {
            "channel": "193270a9-c9cf-404a-8f83-838e71d9ae67",
            "messageNumber": 1,
            "messageTime": "2022-02-02T19:39:05.86337+01:00",
            "messageType": "RocketLaunched"
        },
        "message": {"type": "Falcon-9", "launchSpeed": 500, "mission": "ARTEMIS"}
    })
}

async fn post(queue: &RecordingQueue, method: Method, path: &str, body: Vec<u8>) -> Response<Body> {
    let request = api_gateway_request(method, path, None, HeaderMap::new(), body)
        .expect("a convertible request");
    rockets::http::respond(
        |route, request| ingest::handle(queue, &rockets::ports::OpenChannels, route, request),
        request,
    )
    .await
}

/// `POST /messages` with a valid `RocketLaunched`.
async fn post_launched(queue: &RecordingQueue) -> Response<Body> {
    post(
        queue,
        Method::POST,
        "/messages",
        launched().to_string().into_bytes(),
    )
    .await
}

fn json_body(response: &Response<Body>) -> Value {
    assert_eq!(response.headers()["content-type"], "application/json");
    serde_json::from_slice(response.body().as_ref()).expect("JSON body")
}

#[tokio::test]
async fn a_valid_message_is_queued_in_its_channels_group_and_accepted() {
    let queue = RecordingQueue::default();
    let response = post_launched(&queue).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        json_body(&response),
        json!({"channel": "193270a9-c9cf-404a-8f83-838e71d9ae67", "messageNumber": 1})
    );
    let sent = queue.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].group_id, "193270a9-c9cf-404a-8f83-838e71d9ae67");
    assert_eq!(
        sent[0].deduplication_id,
        "1:193270a9-c9cf-404a-8f83-838e71d9ae67"
    );
    let body = Envelope::parse(sent[0].body.as_bytes()).unwrap();
    assert_eq!(
        body,
        Envelope::parse(launched().to_string().as_bytes()).unwrap()
    );
}

#[tokio::test]
async fn every_invalid_message_is_a_400_naming_the_field_and_nothing_is_queued() {
    let queue = RecordingQueue::default();
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "body"),
        (b"[]".to_vec(), "body"),
        (Vec::new(), "body"),
    ];
    let mut edit = |path: &[&str], value: Value, field: &'static str| {
        let mut doc = launched();
        let (last, parents) = path.split_last().unwrap();
        let mut target = &mut doc;
        for key in parents {
            target = &mut target[*key];
        }
        if value.is_null() {
            target.as_object_mut().unwrap().remove(*last);
        } else {
            target[*last] = value;
        }
        cases.push((doc.to_string().into_bytes(), field));
    };
    edit(&["metadata"], Value::Null, "metadata");
    edit(&["message"], json!(5), "message");
    edit(
        &["metadata", "channel"],
        json!("no spaces"),
        "metadata.channel",
    );
    edit(
        &["metadata", "messageNumber"],
        json!(0),
        "metadata.messageNumber",
    );
    edit(
        &["metadata", "messageTime"],
        json!("02/02/2022"),
        "metadata.messageTime",
    );
    edit(
        &["metadata", "messageType"],
        json!("RocketLanded"),
        "metadata.messageType",
    );
    edit(&["message", "type"], json!(""), "message.type");
    edit(
        &["message", "launchSpeed"],
        json!(-1),
        "message.launchSpeed",
    );
    edit(&["message", "mission"], Value::Null, "message.mission");
    for (body, field) in cases {
        let response = post(&queue, Method::POST, "/messages", body.clone()).await;
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(&body));
        let error = &json_body(&response)["error"];
        assert_eq!(error["field"].as_str().unwrap_or(""), field);
        assert!(error["code"].is_string() && error["message"].is_string());
    }
    assert!(queue.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_413() {
    let queue = RecordingQueue::default();
    let mut doc = launched();
    doc["padding"] = json!("x".repeat(64 * 1024));
    let response = post(
        &queue,
        Method::POST,
        "/messages",
        doc.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 413);
    assert_eq!(json_body(&response)["error"]["code"], "payload_too_large");
    assert!(queue.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_queue_that_refuses_gives_503_with_retry_after() {
    let queue = RecordingQueue {
        down: true,
        ..Default::default()
    };
    let response = post_launched(&queue).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body = json_body(&response);
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        !body.to_string().contains("connection refused"),
        "internals stay internal"
    );
}

#[tokio::test]
async fn wrong_method_and_unknown_path() {
    let queue = RecordingQueue::default();
    let response = post(&queue, Method::GET, "/messages", Vec::new()).await;
    assert_eq!(response.status(), 405);
    assert_eq!(json_body(&response)["error"]["code"], "method_not_allowed");
    let response = post(
        &queue,
        Method::POST,
        "/elsewhere",
        launched().to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(json_body(&response)["error"]["code"], "not_found");
    assert!(queue.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_event_lambda_http_cannot_convert_is_a_400_naming_the_field_and_queues_nothing() {
    let queue = RecordingQueue::default();
    let handler =
        |route, request| ingest::handle(&queue, &rockets::ports::OpenChannels, route, request);
    let body = launched().to_string();
    for (event, field) in rockets_testkit::unconvertible_gateway_events("POST", "/messages", &body)
    {
        let response = rockets::http::serve_event(&handler, event).await.response;
        assert_eq!(response.status_code, 400, "{field}");
        let Some(Body::Text(text)) = &response.body else {
            panic!("a JSON body")
        };
        let body: Value = serde_json::from_str(text).unwrap();
        assert_eq!(body["error"]["field"], field);
    }
    assert!(queue.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn over_long_text_control_characters_and_noncharacters_are_refused_and_not_queued() {
    let queue = RecordingQueue::default();
    let long = "x".repeat(rockets::message::MAX_TEXT_CHARS + 1);
    for (field, value) in [
        ("mission", long.as_str()),
        ("type", "Falcon\u{0}9"),
        ("mission", "\u{FFFF}"),
    ] {
        let mut message = launched();
        message["message"][field] = json!(value);
        let response = post(
            &queue,
            Method::POST,
            "/messages",
            message.to_string().into_bytes(),
        )
        .await;
        assert_eq!(response.status(), 400);
        assert_eq!(
            json_body(&response)["error"]["field"],
            format!("message.{field}")
        );
    }
    assert!(queue.sent.lock().unwrap().is_empty());
}

/// Makes the error a [`FailingQueue`] answers with.
type MakeError = fn() -> QueueError;

/// Answers every send with one error.
struct FailingQueue(MakeError);

impl MessageQueue for FailingQueue {
    async fn send(&self, _: &Envelope) -> Result<(), QueueError> {
        Err((self.0)())
    }
}

#[tokio::test]
async fn only_a_transient_queue_failure_asks_the_sender_to_retry() {
    let cases: [(MakeError, u16, &str); 3] = [
        (
            || QueueError::Unavailable("throttled".into()),
            503,
            "unavailable",
        ),
        (
            || QueueError::Refused {
                code: "InvalidMessageContents".into(),
                cause: "secret detail".into(),
            },
            400,
            "refused_by_queue",
        ),
        (
            || QueueError::Failed("AccessDenied".into()),
            500,
            "internal_error",
        ),
    ];
    for (error, status, code) in cases {
        let request = api_gateway_request(
            Method::POST,
            "/messages",
            None,
            HeaderMap::new(),
            launched().to_string().into_bytes(),
        )
        .expect("a convertible request");
        let queue = FailingQueue(error);
        let response = rockets::http::respond(
            |route, request| ingest::handle(&queue, &rockets::ports::OpenChannels, route, request),
            request,
        )
        .await;
        assert_eq!(response.status(), status);
        assert_eq!(
            response.headers().contains_key("retry-after"),
            status == 503
        );
        let body = json_body(&response);
        assert_eq!(body["error"]["code"], code);
        assert!(!body.to_string().contains("secret"), "{body}");
    }
}

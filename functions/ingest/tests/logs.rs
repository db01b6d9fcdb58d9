//! What ingest logs, on Lambda's JSON log format. In a test binary of its own: tracing caches
//! whether a span or event is enabled per call site and process, and tests without a
//! subscriber running beside this one would settle that before it installs its own.

use std::sync::Mutex;

use lambda_http::http::{HeaderMap, Method};
use rockets::http::api_gateway_request;
use rockets::message::Envelope;
use rockets::ports::{MessageQueue, QueueError, QueuedMessage};
use serde_json::{Value, json};

#[derive(Default)]
struct RecordingQueue {
    sent: Mutex<Vec<QueuedMessage>>,
}

impl MessageQueue for RecordingQueue {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        self.sent.lock().unwrap().push(QueuedMessage::of(message));
        Ok(())
    }
}

/// Log lines written while the test runs, as Lambda's JSON log format writes them.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A queue that is down.
struct UnavailableQueue;

impl MessageQueue for UnavailableQueue {
    async fn send(&self, _: &Envelope) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("SQS did not answer".into()))
    }
}

/// Posts one launch of channel 193270a9-… number 1 to `queue`, with Lambda's JSON log format at
/// `level`; the status and the lines logged.
async fn post_logging_at<Q: MessageQueue>(
    queue: &Q,
    level: lambda_http::tracing::Level,
) -> (u16, Vec<Value>) {
    use lambda_http::tracing::subscriber;
    let captured = Captured::default();
    let writer = captured.clone();
    let json_logs = subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_writer(move || writer.clone())
        .finish();
    let _logging =
        lambda_http::tracing::subscriber::util::SubscriberInitExt::set_default(json_logs);
    let body = json!({
        "metadata": {
            "channel": "193270a9-c9cf-404a-8f83-838e71d9ae67",
            "messageNumber": 1,
            "messageTime": "2022-02-02T19:39:05.86337+01:00",
            "messageType": "RocketLaunched"
        },
        "message": {"type": "Falcon-9", "launchSpeed": 500, "mission": "ARTEMIS"}
    });
    let request = api_gateway_request(
        Method::POST,
        "/messages",
        None,
        HeaderMap::new(),
        body.to_string().into_bytes(),
    )
    .unwrap();
    let status = rockets::http::respond(
        |route, request| ingest::handle(queue, &rockets::ports::OpenChannels, route, request),
        request,
    )
    .await
    .status()
    .as_u16();
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines = logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (status, lines)
}

#[tokio::test(flavor = "current_thread")]
async fn at_info_an_accepted_message_logs_nothing() {
    let queue = RecordingQueue::default();
    let (status, lines) = post_logging_at(&queue, lambda_http::tracing::Level::INFO).await;
    assert_eq!(status, 202);
    assert_eq!(lines, Vec::<Value>::new());
}

#[tokio::test(flavor = "current_thread")]
async fn at_info_a_message_the_queue_did_not_take_is_logged_with_its_channel_and_number() {
    let (status, lines) =
        post_logging_at(&UnavailableQueue, lambda_http::tracing::Level::INFO).await;
    assert_eq!(status, 503);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["level"], "WARN");
    let error = lines[0]["fields"]["error"].as_str().unwrap();
    assert!(
        error.ends_with("(channel 193270a9-c9cf-404a-8f83-838e71d9ae67 message 1)"),
        "{error}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn at_debug_every_line_logged_for_a_message_carries_its_channel_and_number() {
    let queue = RecordingQueue::default();
    let (status, lines) = post_logging_at(&queue, lambda_http::tracing::Level::DEBUG).await;
    assert_eq!(status, 202);
    assert!(!lines.is_empty(), "nothing logged");
    for line in &lines {
        assert_eq!(line["span"]["name"], "message", "{line}");
        assert_eq!(
            line["span"]["channel"], "193270a9-c9cf-404a-8f83-838e71d9ae67",
            "{line}"
        );
        assert_eq!(line["span"]["number"], 1, "{line}");
    }
}

//! An operator's view of the embedded queue, beside the API under `/local/`: its depth, its
//! dead letters, and a redrive. They are what the SQS console and `aws sqs
//! start-message-move-task` do for the deployed queue, and exist only when the server runs on
//! the embedded queue.
//!
//! - `GET /local/queue`: `{"visible", "inFlight", "deadLetters"}`.
//! - `GET /local/dead-letters`: `{"deadLetters": [message, …]}`, oldest first.
//! - `POST /local/dead-letters/redrive`: moves every dead letter back to the end of its
//!   channel's queue; `{"moved": n}`.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Response};
use rockets::http::{ApiError, json_response};
use rockets_embedded::EmbeddedQueue;
use serde_json::{Value, json};

/// The prefix of these routes; no API route starts with it.
pub const PREFIX: &str = "/local/";

/// The answer to a request under [`PREFIX`], or `None` for any other path.
pub fn handle(
    queue: Option<&EmbeddedQueue>,
    method: &Method,
    path: &str,
) -> Option<Response<Body>> {
    let route = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    let allowed = match route {
        "queue" | "dead-letters" => "GET",
        "dead-letters/redrive" => "POST",
        _ => return Some(ApiError::NotFound(format!("no route for {path}")).into_response()),
    };
    if method.as_str() != allowed {
        return Some(
            ApiError::MethodNotAllowed {
                method: method.clone(),
                allowed,
            }
            .into_response(),
        );
    }
    let Some(queue) = queue else {
        return Some(
            ApiError::NotFound(
                "this server runs on SQS: use the SQS console or aws sqs \
                 start-message-move-task (see docs/operations.md)"
                    .into(),
            )
            .into_response(),
        );
    };
    let body = match route {
        "queue" => {
            let depth = queue.depth();
            json!({
                "visible": depth.visible,
                "inFlight": depth.in_flight,
                "deadLetters": depth.dead,
            })
        }
        "dead-letters" => {
            let letters: Vec<Value> = queue
                .dead_letters()
                .into_iter()
                .map(|body| serde_json::from_str(&body).unwrap_or(Value::String(body)))
                .collect();
            json!({ "deadLetters": letters })
        }
        _ => {
            let moved = queue.redrive();
            tracing::info!(moved, "dead letters redriven to their channels' queues");
            json!({ "moved": moved })
        }
    };
    Some(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rockets::ports::MessageQueue as _;
    use rockets_embedded::{DeadLetters, QueueConfig};
    use rockets_testkit::{Rng, channel, flight};

    fn body(response: &Response<Body>) -> Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[tokio::test]
    async fn dead_letters_are_listed_and_redriven() {
        let queue = std::sync::Arc::new(EmbeddedQueue::new(QueueConfig::default()));
        let message = flight(&channel("ops"), 1, &mut Rng::new(1)).remove(0);
        DeadLetters(queue.clone()).send(&message).await.unwrap();
        let get = |path| handle(Some(&queue), &Method::GET, path).unwrap();
        assert_eq!(
            body(&get("/local/queue")),
            json!({"visible": 0, "inFlight": 0, "deadLetters": 1})
        );
        let letters = body(&get("/local/dead-letters"));
        assert_eq!(letters["deadLetters"][0]["metadata"]["channel"], "ops");
        let redriven = handle(Some(&queue), &Method::POST, "/local/dead-letters/redrive").unwrap();
        assert_eq!(body(&redriven), json!({"moved": 1}));
        assert_eq!(body(&get("/local/queue"))["visible"], 1);
        assert_eq!(body(&get("/local/queue"))["deadLetters"], 0);
    }

    #[test]
    fn other_paths_methods_and_backends_are_told_apart() {
        let queue = EmbeddedQueue::new(QueueConfig::default());
        assert!(handle(Some(&queue), &Method::GET, "/rockets").is_none());
        let status = |q: Option<&EmbeddedQueue>, m: Method, p| handle(q, &m, p).unwrap().status();
        assert_eq!(status(Some(&queue), Method::GET, "/local/nothing"), 404);
        assert_eq!(
            status(Some(&queue), Method::GET, "/local/dead-letters/redrive"),
            405
        );
        assert_eq!(status(None, Method::GET, "/local/queue"), 404);
    }
}

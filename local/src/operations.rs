//! An operator's view beside the API under `/local/`: the embedded queue's depth, its dead
//! letters and a redrive (what the SQS console and `aws sqs start-message-move-task` do for the
//! deployed queue, served only on the embedded queue), and a channel's parked messages (on any
//! backend). These routes are `rockets-local`'s only: never cross-origin, never deployed.
//!
//! - `GET /local/queue`: `{"visible", "inFlight", "deadLetters", "stalledRockets",
//!   "oldestStallSeconds"}`: the queue's depth, and the rockets waiting behind a gap, as the
//!   deployed stack's scheduled check reports them.
//! - `GET /local/dead-letters`: `{"deadLetters": [message, …]}`, oldest first.
//! - `POST /local/dead-letters/redrive`: moves every dead letter back to the end of its
//!   channel's queue; `{"moved": n}`.
//! - `GET /local/rockets/{channel}/parked`: `{"parked": [{"messageNumber", "parkedAt",
//!   "message"}, …]}`, every message the channel holds ahead of its gap.
//! - `DELETE /local/rockets/{channel}/parked`: expires them all now; `{"purged": n}`.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Response};
use rockets::http::{ApiError, json_response};
use rockets::ports::{ChannelStore, RocketReader};
use rockets_embedded::EmbeddedQueue;
use serde_json::{Value, json};

/// The prefix of these routes; no API route starts with it.
pub const PREFIX: &str = "/local/";

/// The answer to a request under [`PREFIX`], or `None` for any other path.
pub async fn handle<S: RocketReader + ChannelStore>(
    queue: Option<&EmbeddedQueue>,
    store: &S,
    method: &Method,
    path: &str,
) -> Option<Response<Body>> {
    let route = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    if let Some(channel) = (route.strip_prefix("rockets/")).and_then(|r| r.strip_suffix("/parked"))
    {
        return Some(
            parked(store, method, channel)
                .await
                .unwrap_or_else(ApiError::into_response),
        );
    }
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
            let stalls = match query::stalls(store, chrono::Utc::now()).await {
                Ok(stalls) => stalls,
                Err(error) => return Some(ApiError::from(error).into_response()),
            };
            json!({
                "visible": depth.visible,
                "inFlight": depth.in_flight,
                "deadLetters": depth.dead,
                "stalledRockets": stalls.stalled_rockets,
                "oldestStallSeconds": stalls.oldest_stall_seconds,
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

/// A channel's parked messages: listed, or purged.
async fn parked<S: ChannelStore>(
    store: &S,
    method: &Method,
    channel: &str,
) -> Result<Response<Body>, ApiError> {
    let channel = rockets::http::path_channel(channel)?;
    let unknown = || ApiError::NotFound(format!("no rocket on channel {channel}"));
    match *method {
        Method::GET => {
            let snapshot = store.load(&channel, 0, &[]).await?.ok_or_else(unknown)?;
            let view = store.parked(&snapshot.rocket).await?;
            Ok(json_response(StatusCode::OK, &parked_json(&view)))
        }
        Method::DELETE => {
            let purged = apply::purge_parked(store, &channel)
                .await?
                .ok_or_else(unknown)?;
            tracing::warn!(%channel, purged, "parked messages purged");
            Ok(json_response(StatusCode::OK, &json!({ "purged": purged })))
        }
        _ => Err(ApiError::MethodNotAllowed {
            method: method.clone(),
            allowed: "GET, DELETE",
        }),
    }
}

/// `{"parked": [{"messageNumber", "parkedAt", "message"}, …]}`, as the route and
/// `rockets-local parked` show a channel's parked messages.
pub fn parked_json(view: &rockets::ordering::ParkedView) -> Value {
    let parked: Vec<Value> = (view.first.iter())
        .map(|m| {
            json!({
                "messageNumber": m.number.get(),
                "parkedAt": view.since.get(&m.number).map(|at| at.to_rfc3339()),
                "message": serde_json::from_str::<Value>(&m.to_json()).unwrap_or_default(),
            })
        })
        .collect();
    json!({ "parked": parked })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rockets::ports::MessageQueue as _;
    use rockets_embedded::{DeadLetters, EmbeddedStore, QueueConfig};
    use rockets_testkit::{Rng, channel, flight};

    fn body(response: &Response<Body>) -> Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[tokio::test]
    async fn dead_letters_are_listed_and_redriven() {
        let queue = std::sync::Arc::new(EmbeddedQueue::new(QueueConfig::default()));
        let store = EmbeddedStore::new();
        let message = flight(&channel("ops"), 1, &mut Rng::new(1)).remove(0);
        DeadLetters(queue.clone()).send(&message).await.unwrap();
        let get = async |path| {
            body(
                &handle(Some(&queue), &store, &Method::GET, path)
                    .await
                    .unwrap(),
            )
        };
        assert_eq!(
            get("/local/queue").await,
            json!({"visible": 0, "inFlight": 0, "deadLetters": 1,
                   "stalledRockets": 0, "oldestStallSeconds": 0})
        );
        let letters = get("/local/dead-letters").await;
        assert_eq!(letters["deadLetters"][0]["metadata"]["channel"], "ops");
        let redriven = handle(
            Some(&queue),
            &store,
            &Method::POST,
            "/local/dead-letters/redrive",
        )
        .await
        .unwrap();
        assert_eq!(body(&redriven), json!({"moved": 1}));
        assert_eq!(get("/local/queue").await["visible"], 1);
        assert_eq!(get("/local/queue").await["deadLetters"], 0);
    }

    #[tokio::test]
    async fn the_queue_route_reports_rockets_stalled_behind_a_gap() {
        let queue = EmbeddedQueue::new(QueueConfig::default());
        let store = EmbeddedStore::new();
        let messages = flight(&channel("stalled"), 3, &mut Rng::new(2));
        let mut timeline =
            rockets::ordering::Timeline::empty(channel("stalled"), chrono::Utc::now());
        timeline.receive(messages[2].clone());
        let change = timeline.into_change().unwrap();
        store.commit(0, &change).await.unwrap();
        let queue_route = body(
            &handle(Some(&queue), &store, &Method::GET, "/local/queue")
                .await
                .unwrap(),
        );
        assert_eq!(queue_route["stalledRockets"], 1);
    }

    #[tokio::test]
    async fn other_paths_methods_and_backends_are_told_apart() {
        let queue = EmbeddedQueue::new(QueueConfig::default());
        let store = EmbeddedStore::new();
        assert!(
            handle(Some(&queue), &store, &Method::GET, "/rockets")
                .await
                .is_none()
        );
        let status = async |q: Option<&EmbeddedQueue>, m: Method, p| {
            handle(q, &store, &m, p).await.unwrap().status()
        };
        assert_eq!(
            status(Some(&queue), Method::GET, "/local/nothing").await,
            404
        );
        assert_eq!(
            status(Some(&queue), Method::GET, "/local/dead-letters/redrive").await,
            405
        );
        assert_eq!(status(None, Method::GET, "/local/queue").await, 404);
        assert_eq!(
            status(None, Method::GET, "/local/rockets/none/parked").await,
            404
        );
        assert_eq!(
            status(None, Method::PUT, "/local/rockets/none/parked").await,
            405
        );
        assert_eq!(
            status(None, Method::GET, "/local/rockets/%FF/parked").await,
            400
        );
    }

    #[tokio::test]
    async fn a_channels_parked_messages_are_listed_and_purged_on_any_backend() {
        let store = EmbeddedStore::new();
        let c = channel("junk");
        let messages = flight(&c, 4, &mut Rng::new(3));
        let mut timeline = rockets::ordering::Timeline::empty(c.clone(), chrono::Utc::now());
        timeline.receive(messages[2].clone());
        timeline.receive(messages[3].clone());
        store
            .commit(0, &timeline.into_change().unwrap())
            .await
            .unwrap();
        let call = async |method: Method| {
            let response = handle(None, &store, &method, "/local/rockets/junk/parked")
                .await
                .unwrap();
            (response.status(), body(&response))
        };
        let (status, listed) = call(Method::GET).await;
        assert_eq!(status, 200);
        assert_eq!(listed["parked"][0]["messageNumber"], 3);
        assert_eq!(
            listed["parked"][1]["message"]["metadata"]["messageNumber"],
            4
        );
        assert!(listed["parked"][0]["parkedAt"].is_string());
        assert_eq!(
            call(Method::DELETE).await,
            (StatusCode::OK, json!({"purged": 2}))
        );
        assert_eq!(call(Method::GET).await.1, json!({"parked": []}));
        let rocket = store.rocket(&c).await.unwrap().unwrap();
        assert_eq!(rocket.pending_messages, 0);
    }
}

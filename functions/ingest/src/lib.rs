//! `POST /messages`: validate a message, check that its sender may write its channel, and put
//! it on the FIFO queue of its channel.
//!
//! With auth on, a channel belongs to the sender that wrote it first ([`ChannelOwners`]); any
//! other sender's message on it is a `403` and is not queued. With auth off, the request has no
//! sender, and anyone may write any channel.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use rockets::http::{ApiError, Route, api_path, json_response, sender};
use rockets::message::{Envelope, MAX_BODY_BYTES};
use rockets::ports::{ChannelOwners, MessageQueue, OpenChannels};
use serde::Serialize;
use tracing::Instrument as _;

/// The 202 body: which message was queued.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    channel: &'a str,
    message_number: u64,
}

/// `POST /messages`: answers 202 only once the queue has the message; a refusal from the queue
/// is a 503 with `Retry-After`, so the sender resends and nothing is lost.
pub async fn handle<Q: MessageQueue, O: ChannelOwners>(
    queue: &Q,
    owners: &O,
    route: Route,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    match route {
        Route::PostMessage => {
            let sender = sender(&request);
            let accepted = accept_body_from(queue, owners, sender.as_deref(), request.body());
            accepted.await
        }
        _ => Err(ApiError::NotFound(format!(
            "no route for {}",
            api_path(&request)
        ))),
    }
}

/// The whole of `POST /messages` once routed: the body is all of the request it reads, so the
/// local server hands it over as it arrived, without building the event Lambda would get.
pub async fn accept_body<Q: MessageQueue>(
    queue: &Q,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    accept_body_from(queue, &OpenChannels, None, body).await
}

/// [`accept_body`] from `sender`, who must be allowed to write the message's channel.
async fn accept_body_from<Q: MessageQueue, O: ChannelOwners>(
    queue: &Q,
    owners: &O,
    sender: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    // Every line logged from here on carries the message's channel and number, once known.
    // Those lines are all DEBUG, so the span is too: at INFO it would cost every POST a span
    // that no line ever shows.
    let span = tracing::debug_span!(
        "message",
        channel = tracing::field::Empty,
        number = tracing::field::Empty
    );
    accept_message(queue, owners, sender, body)
        .instrument(span)
        .await
}

async fn accept_message<Q: MessageQueue, O: ChannelOwners>(
    queue: &Q,
    owners: &O,
    sender: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let message = Envelope::parse_new(body).inspect_err(|error| {
        tracing::debug!(field = error.field(), %error, "message refused");
    })?;
    let span = tracing::Span::current();
    span.record("channel", tracing::field::display(&message.channel));
    span.record("number", message.number.get());
    if let Some(sender) = sender
        && !owners.claim(&message.channel, sender).await?
    {
        tracing::warn!(channel = %message.channel, sender, "refused: the channel belongs to another sender");
        return Err(ApiError::NotYourChannel {
            channel: message.channel.to_string(),
        });
    }
    queue.send(&message).await.map_err(|error| {
        error.about(format_args!(
            "channel {} message {}",
            message.channel, message.number
        ))
    })?;
    tracing::debug!(channel = %message.channel, number = %message.number, "message queued");
    let accepted = Accepted {
        channel: message.channel.as_str(),
        message_number: message.number.get(),
    };
    Ok(json_response(StatusCode::ACCEPTED, &accepted))
}

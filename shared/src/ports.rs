//! The narrow interfaces the handlers depend on, one per side of each function.
//!
//! Ingest only sends ([`MessageQueue`]); apply only loads and commits channels
//! ([`ChannelStore`]); query only reads ([`RocketReader`]). Each has an embedded implementation
//! in the `rockets-embedded` crate and an AWS one in `rockets-aws`, and the same handler code runs over either.

use std::future::Future;

use aws_lambda_events::event::sqs::SqsMessage;

use crate::listing::{ListQuery, RocketPage};
use crate::message::{Channel, Envelope, MessageNumber};
use crate::ordering::{ChannelChange, ParkedView};
use crate::rocket::Rocket;

/// What went wrong in a backend: a description for the logs, and the error that caused it,
/// kept as the [`source`](std::error::Error::source) of the error that carries it.
#[derive(Debug)]
pub struct Cause {
    detail: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    pub fn new(
        detail: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Cause {
            detail: detail.into(),
            source: Some(source.into()),
        }
    }

    /// The same cause, its description naming what it was about.
    pub fn about(mut self, context: impl std::fmt::Display) -> Self {
        self.detail = format!("{} ({context})", self.detail);
        self
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

impl From<String> for Cause {
    fn from(detail: String) -> Self {
        Cause {
            detail,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(detail: &str) -> Self {
        detail.to_string().into()
    }
}

/// A backend could not do what was asked. Handlers never show the detail to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttled, timed out or unreachable: worth retrying later (HTTP 503).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// Refused for a reason retrying will not fix, or answered with something this code
    /// cannot read (HTTP 500).
    #[error("store failed: {0}")]
    Failed(#[source] Cause),
}

/// Why the queue did not take or give a message.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Unreachable, throttled or failing for now: the same request may succeed later.
    #[error("queue unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The queue refused this message (its code says why): sending it again cannot help.
    #[error("queue refused the message ({code}): {cause}")]
    Refused {
        code: String,
        #[source]
        cause: Cause,
    },
    /// Anything else: the queue's configuration or permissions, or a bug.
    #[error("queue failed: {0}")]
    Failed(#[source] Cause),
}

impl QueueError {
    /// The same error, its detail naming what it was about.
    pub fn about(self, context: impl std::fmt::Display) -> Self {
        match self {
            QueueError::Unavailable(cause) => QueueError::Unavailable(cause.about(context)),
            QueueError::Refused { code, cause } => QueueError::Refused {
                code,
                cause: cause.about(context),
            },
            QueueError::Failed(cause) => QueueError::Failed(cause.about(context)),
        }
    }
}

/// A message as it goes onto the FIFO queue.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct QueuedMessage {
    /// The channel: SQS keeps each group in order and hands it to one consumer at a time.
    pub group_id: String,
    /// Stable for a (channel, messageNumber), so the queue drops resends within its window.
    pub deduplication_id: String,
    /// The canonical JSON of the message.
    pub body: String,
}

impl QueuedMessage {
    pub fn of(message: &Envelope) -> Self {
        QueuedMessage {
            group_id: message.channel.as_str().to_owned(),
            deduplication_id: deduplication_id(&message.channel, message.number),
            body: message.to_json(),
        }
    }

    /// A message the apply side refused, as it goes to the dead-letter queue: its own
    /// deduplication id, so that redriving it to the messages queue within that queue's
    /// deduplication window is not taken for the resend it is not.
    pub fn refused(message: &Envelope) -> Self {
        QueuedMessage {
            deduplication_id: format!("~{}", id(&message.channel, message.number.get(), 127)),
            ..Self::of(message)
        }
    }
}

/// `{number}:{channel}` while that fits SQS's 128-character limit, otherwise the number and a
/// 128-bit hash of the channel. The characters are all ones SQS accepts.
pub fn deduplication_id(channel: &Channel, number: MessageNumber) -> String {
    id(channel, number.get(), 128)
}

fn id(channel: &Channel, number: u64, limit: usize) -> String {
    let mut digits = itoa::Buffer::new();
    let plain = [digits.format(number), ":", channel.as_str()].concat();
    if plain.len() <= limit {
        return plain;
    }
    // FNV-1a, 128-bit: stable across builds and platforms, which std's hasher is not.
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for byte in channel.as_str().bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    format!("{number}:#{hash:032x}")
}

/// What a queue record carries.
#[derive(Clone, PartialEq, Debug)]
pub enum Delivery {
    /// A message to apply.
    Message(Envelope),
    /// The signal to go on with a channel's drain, which ran out of time in an earlier batch.
    ContinueDrain(Channel),
}

impl Delivery {
    pub fn channel(&self) -> &Channel {
        match self {
            Delivery::Message(message) => &message.channel,
            Delivery::ContinueDrain(channel) => channel,
        }
    }
}

/// A drain's continuation as it goes onto the queue: in its channel's group, behind whatever
/// the channel sent meanwhile, under a deduplication id of its own (`marker`, the channel's
/// version when the drain stopped, is new each time), with a body no message has.
pub fn drain_continuation(channel: &Channel, marker: u64) -> QueuedMessage {
    QueuedMessage {
        group_id: channel.as_str().to_owned(),
        deduplication_id: format!("~drain:{}", id(channel, marker, 121)),
        body: serde_json::json!({ "continueDrain": channel.as_str() }).to_string(),
    }
}

/// The one field of a drain continuation's body.
const CONTINUE_DRAIN: &str = "continueDrain";

/// What a record's body carries: a drain's continuation, or else a message.
pub fn delivery(body: &str) -> Result<Delivery, String> {
    if body.starts_with(r#"{"continueDrain":"#) {
        let continuation: std::collections::HashMap<&str, Channel> =
            serde_json::from_str(body).map_err(|e| format!("unreadable continuation: {e}"))?;
        if let Some(channel) = continuation.get(CONTINUE_DRAIN) {
            return Ok(Delivery::ContinueDrain(channel.clone()));
        }
    }
    Envelope::parse(body.as_bytes())
        .map(Delivery::Message)
        .map_err(|e| e.to_string())
}

/// Who may write a channel when auth is on: the sender that wrote it first.
pub trait ChannelOwners: Send + Sync {
    /// Whether `sender` may write `channel`, binding the channel to `sender` if no sender
    /// has written it yet.
    fn claim(
        &self,
        channel: &Channel,
        sender: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Channels without owners: auth is off, and anyone may write any channel.
pub struct OpenChannels;

impl ChannelOwners for OpenChannels {
    async fn claim(&self, _: &Channel, _: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
}

/// Owners where auth is on, none where it is off.
impl<O: ChannelOwners> ChannelOwners for Option<O> {
    async fn claim(&self, channel: &Channel, sender: &str) -> Result<bool, StoreError> {
        match self {
            Some(owners) => owners.claim(channel, sender).await,
            None => Ok(true),
        }
    }
}

/// Sends validated messages to the apply side.
pub trait MessageQueue: Send + Sync {
    /// Returns only once the queue has durably accepted the message.
    fn send(&self, message: &Envelope) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// What the apply side reads of a queue record: SQS's own record in Lambda, the embedded
/// queue's in process.
pub trait QueueRecord: Send + Sync {
    /// The id a batch reports the record by when it fails.
    fn message_id(&self) -> Option<&str>;
    fn receipt_handle(&self) -> Option<&str>;
    /// The message group, which is the channel; none outside a FIFO queue.
    fn group_id(&self) -> Option<&str>;
    /// How often the record has been received, this time included.
    fn receive_count(&self) -> Option<u32>;
    /// When the record was sent (or else first received), in milliseconds since the epoch.
    fn sent_ms(&self) -> Option<i64>;
    /// The X-Ray trace header of the request that sent it.
    fn trace_header(&self) -> Option<&str>;
    /// The id the queue deduplicates it by.
    fn deduplication_id(&self) -> Option<&str>;
    fn body(&self) -> Option<&str>;

    /// What the record carries: its body read.
    fn delivery(&self) -> Result<Delivery, String> {
        delivery(self.body().ok_or("record has no body")?)
    }
}

impl QueueRecord for SqsMessage {
    fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    fn receipt_handle(&self) -> Option<&str> {
        self.receipt_handle.as_deref()
    }

    fn group_id(&self) -> Option<&str> {
        self.attributes.get("MessageGroupId").map(String::as_str)
    }

    fn receive_count(&self) -> Option<u32> {
        self.attributes.get("ApproximateReceiveCount")?.parse().ok()
    }

    fn sent_ms(&self) -> Option<i64> {
        let attribute = |name: &str| self.attributes.get(name)?.parse::<i64>().ok();
        attribute("SentTimestamp").or_else(|| attribute("ApproximateFirstReceiveTimestamp"))
    }

    fn trace_header(&self) -> Option<&str> {
        self.attributes.get("AWSTraceHeader").map(String::as_str)
    }

    fn deduplication_id(&self) -> Option<&str> {
        self.attributes
            .get("MessageDeduplicationId")
            .map(String::as_str)
    }

    fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

/// The consuming side of the queue, for an event source that feeds the apply handler.
pub trait QueueConsumer: Send + Sync {
    /// The records it hands out.
    type Record: QueueRecord + 'static;

    /// Up to `max` records, waiting up to `wait` for the first.
    fn receive(
        &self,
        max: usize,
        wait: std::time::Duration,
    ) -> impl Future<Output = Result<Vec<Self::Record>, QueueError>> + Send;

    /// Deletes the records with these receipt handles.
    fn delete(
        &self,
        receipt_handles: &[&str],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// What the apply side asks of the queue its records come from.
pub trait SourceQueue: Send + Sync {
    /// Keeps each record (by receipt handle) hidden for its duration from now on, as SQS's
    /// ChangeMessageVisibility does.
    fn hide(
        &self,
        records: Vec<(String, std::time::Duration)>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Queues a continuation of `channel`'s drain ([`drain_continuation`]).
    fn continue_drain(
        &self,
        channel: &Channel,
        marker: u64,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// What the store holds for one channel, and the version to commit against.
#[derive(Clone, PartialEq, Debug)]
pub struct ChannelSnapshot {
    pub rocket: Rocket,
    pub parked: ParkedView,
    /// Increases with every commit; 0 means nothing is stored yet.
    pub version: u64,
}

/// Whether a conditional commit took effect.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CommitOutcome {
    Committed,
    /// Someone committed since the snapshot was read, or accepted another message under a
    /// number the change writes: re-read and try again.
    VersionMismatch,
}

/// The apply side of the store: per-channel state, parked messages and history.
pub trait ChannelStore: Send + Sync {
    /// The channel's rocket and version, its first `window` parked messages (or all, if fewer),
    /// and those parked beyond them with the `probe` numbers; `None` if never stored. What it
    /// reads is bounded by `window` and `probe`, never by how many messages are parked.
    fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> impl Future<Output = Result<Option<ChannelSnapshot>, StoreError>> + Send;

    /// Writes the change atomically if the channel is still at `expected_version`.
    fn commit(
        &self,
        expected_version: u64,
        change: &ChannelChange,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;

    /// The applied messages with these numbers, for telling a resend from a conflict.
    fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send;

    /// Every message parked ahead of `rocket` (as a load just read it), in order, and when each
    /// parked where the store knows: for operators, to list and purge, so it reads as much as
    /// is parked. By default, what a load with an unbounded window reads.
    fn parked(
        &self,
        rocket: &Rocket,
    ) -> impl Future<Output = Result<ParkedView, StoreError>> + Send {
        async move {
            let snapshot = self.load(&rocket.channel, usize::MAX, &[]).await?;
            Ok(snapshot.map_or_else(ParkedView::none, |s| s.parked))
        }
    }
}

/// The query side of the store.
pub trait RocketReader: Send + Sync {
    /// Why the store cannot take writes now, if it knows it cannot (a data directory whose disk
    /// is full): what `GET /health` reports.
    fn refusing_writes(&self) -> Option<String> {
        None
    }

    fn rocket(
        &self,
        channel: &Channel,
    ) -> impl Future<Output = Result<Option<Rocket>, StoreError>> + Send;

    fn rockets(
        &self,
        query: &ListQuery,
    ) -> impl Future<Output = Result<RocketPage, StoreError>> + Send;

    /// Applied messages numbered above `after`, in order, at most `limit`; `None` for a channel
    /// never seen.
    fn history(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<Envelope>>, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deduplication_ids_are_stable_and_within_limits() {
        let short = Channel::parse("abc").unwrap();
        let n = MessageNumber::new(42).unwrap();
        assert_eq!(deduplication_id(&short, n), "42:abc");
        let long = Channel::parse(&"x".repeat(128)).unwrap();
        let max = MessageNumber::new(i64::MAX as u64).unwrap();
        let id = deduplication_id(&long, max);
        assert!(id.len() <= 128, "{id}");
        assert_eq!(id, deduplication_id(&long, max));
        let other = Channel::parse(&format!("{}y", "x".repeat(127))).unwrap();
        assert_ne!(id, deduplication_id(&other, max));
        assert_ne!(id, deduplication_id(&long, MessageNumber::new(1).unwrap()));
        for channel in [&short, &long] {
            let message = Envelope {
                channel: channel.clone(),
                number: max,
                time: chrono::DateTime::parse_from_rfc3339("2022-02-02T19:39:05+01:00").unwrap(),
                event: crate::message::Event::SpeedIncreased { by: 1 },
            };
            let refused = QueuedMessage::refused(&message);
            assert!(refused.deduplication_id.len() <= 128);
            assert_ne!(
                refused.deduplication_id,
                QueuedMessage::of(&message).deduplication_id
            );
            assert_eq!(refused.body, QueuedMessage::of(&message).body);
        }
    }
}

//! What Lambda's SQS event source mapping does, in process: long-poll the queue, hand the apply
//! handler batches of up to ten records shaped as SQS delivers them, delete what succeeded,
//! and leave failures to reappear after their visibility timeout.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use futures_util::FutureExt as _;
use rockets::embedded::{EmbeddedQueue, ReceivedMessage};
use rockets::ports::ChannelStore;

/// How long one receive waits for a message, as SQS long polling does at most.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// A queue the event source can consume.
pub trait EventSource: Send + Sync + 'static {
    /// Up to `max` records, waiting up to [`LONG_POLL`] for the first.
    fn receive(&self, max: usize) -> impl Future<Output = Result<Vec<SqsMessage>, String>> + Send;

    /// Deletes the records with these receipt handles.
    fn delete(&self, receipt_handles: Vec<String>) -> impl Future<Output = ()> + Send;
}

impl EventSource for EmbeddedQueue {
    async fn receive(&self, max: usize) -> Result<Vec<SqsMessage>, String> {
        let batch = EmbeddedQueue::receive(self, max, LONG_POLL).await;
        Ok(batch.into_iter().map(record).collect())
    }

    async fn delete(&self, receipt_handles: Vec<String>) {
        for handle in receipt_handles {
            if !EmbeddedQueue::delete(self, &handle) {
                tracing::warn!(handle, "delete refused: the visibility timeout had ended");
            }
        }
    }
}

/// A received message as the SQS event source hands it to Lambda.
fn record(message: ReceivedMessage) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.attributes = [
        ("ApproximateReceiveCount", message.receive_count.to_string()),
        ("SentTimestamp", message.sent_timestamp_ms.to_string()),
        ("SenderId", "000000000000".to_string()),
        (
            "ApproximateFirstReceiveTimestamp",
            message.first_receive_timestamp_ms.to_string(),
        ),
        ("SequenceNumber", format!("{:020}", message.sequence_number)),
        ("MessageGroupId", message.group_id),
        ("MessageDeduplicationId", message.deduplication_id),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    record.message_id = Some(message.message_id);
    record.receipt_handle = Some(message.receipt_handle);
    record.body = Some(message.body);
    record.event_source = Some("aws:sqs".into());
    record.event_source_arn = Some("arn:aws:sqs:local:000000000000:rockets.fifo".into());
    record.aws_region = Some("local".into());
    record
}

/// Feeds batches from `source` to the apply handler until the task is dropped.
pub async fn pump<E: EventSource, S: ChannelStore>(
    source: Arc<E>,
    store: Arc<S>,
    batch_size: usize,
) {
    loop {
        let records = match source.receive(batch_size).await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "receive failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        let handles: Vec<(String, String)> = records
            .iter()
            .filter_map(|r| Some((r.message_id.clone()?, r.receipt_handle.clone()?)))
            .collect();
        let mut event = SqsEvent::default();
        event.records = records;
        // A panicking handler fails its invocation, as in Lambda; the batch comes back.
        let outcome = AssertUnwindSafe(apply::handle(&*store, event))
            .catch_unwind()
            .await;
        let failed: HashSet<String> = match outcome {
            Ok(Ok(response)) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Ok(Err(error)) => {
                tracing::error!(%error, "batch failed as a whole");
                continue;
            }
            Err(_) => {
                tracing::error!("apply handler panicked; the batch will be redelivered");
                continue;
            }
        };
        let done = handles
            .into_iter()
            .filter(|(id, _)| !failed.contains(id))
            .map(|(_, handle)| handle)
            .collect();
        source.delete(done).await;
    }
}

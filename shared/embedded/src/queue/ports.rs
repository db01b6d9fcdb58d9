//! The embedded queue as the pipeline's ports: ingest sends to it, the event source receives,
//! deletes and hides its records, the apply handler reads them as it reads SQS's, and its
//! dead-letter queue takes what the apply side refuses.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;

use rockets::message::{Channel, Envelope};
use rockets::ports::{
    Delivery, MessageQueue, QueueConsumer, QueueError, QueueRecord, QueuedMessage, SourceQueue,
    deduplication_id, delivery, drain_continuation,
};

use super::fifo::Message;
use super::{Body, EmbeddedQueue, ReceivedMessage, durable, unavailable};
use crate::disk::{Space, Wait};

impl MessageQueue for EmbeddedQueue {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        let deduplication_id = deduplication_id(&message.channel, message.number).into();
        let body = Body::of_message(message.clone());
        self.offer(message.channel.as_str(), deduplication_id, body)
            .await
            .map(drop)
    }
}

impl QueueConsumer for EmbeddedQueue {
    type Record = ReceivedMessage;

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        Ok(EmbeddedQueue::receive(self, max, wait).await)
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<(), QueueError> {
        for &handle in receipt_handles {
            if !EmbeddedQueue::delete(self, handle) {
                tracing::warn!(handle, "delete refused: the visibility timeout had ended");
            }
        }
        Ok(())
    }
}

impl SourceQueue for EmbeddedQueue {
    async fn hide(&self, records: Vec<(String, Duration)>) -> Result<(), QueueError> {
        for (handle, hidden) in records {
            if !EmbeddedQueue::hide(self, &handle, hidden) {
                tracing::warn!(
                    handle,
                    "visibility change refused: the visibility timeout had ended"
                );
            }
        }
        Ok(())
    }

    async fn continue_drain(&self, channel: &Channel, marker: u64) -> Result<(), QueueError> {
        self.accept(drain_continuation(channel, marker))
            .await
            .map(drop)
    }
}

/// What SQS would report of the record, read straight from it.
impl QueueRecord for ReceivedMessage {
    fn message_id(&self) -> Option<&str> {
        Some(&self.message_id)
    }

    fn receipt_handle(&self) -> Option<&str> {
        Some(&self.receipt_handle)
    }

    fn group_id(&self) -> Option<&str> {
        Some(&self.group_id)
    }

    fn receive_count(&self) -> Option<u32> {
        Some(self.receive_count)
    }

    fn sent_ms(&self) -> Option<i64> {
        i64::try_from(self.sent_timestamp_ms).ok()
    }

    fn trace_header(&self) -> Option<&str> {
        None
    }

    fn deduplication_id(&self) -> Option<&str> {
        Some(&self.deduplication_id)
    }

    fn body(&self) -> Option<&str> {
        Some(ReceivedMessage::body(self))
    }

    fn delivery(&self) -> Result<Delivery, String> {
        match ReceivedMessage::message(self) {
            Some(message) => Ok(Delivery::Message(message.clone())),
            None => delivery(self.body()),
        }
    }
}

impl ReceivedMessage {
    /// The record as the SQS event source hands it to Lambda.
    pub fn into_record(self) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.body = Some(self.body().to_owned());
        record.attributes = [
            ("ApproximateReceiveCount", self.receive_count.to_string()),
            ("SentTimestamp", self.sent_timestamp_ms.to_string()),
            ("SenderId", "000000000000".to_string()),
            (
                "ApproximateFirstReceiveTimestamp",
                self.first_receive_timestamp_ms.to_string(),
            ),
            ("SequenceNumber", format!("{:020}", self.sequence_number)),
            ("MessageGroupId", self.group_id.to_string()),
            ("MessageDeduplicationId", self.deduplication_id.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        record.message_id = Some(self.message_id.to_string());
        record.receipt_handle = Some(self.receipt_handle);
        record.event_source = Some("aws:sqs".into());
        record.event_source_arn = Some("arn:aws:sqs:local:000000000000:rockets.fifo".into());
        record.aws_region = Some("local".into());
        record
    }
}

/// An [`EmbeddedQueue`]'s dead-letter queue as a queue to send to, the way the apply side
/// sends a message it refuses ([`QueuedMessage::refused`]). A deduplication id already there is
/// not added again.
#[derive(Clone)]
pub struct DeadLetters(pub Arc<EmbeddedQueue>);

impl MessageQueue for DeadLetters {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        let queued = QueuedMessage::refused(message);
        let written = {
            let mut state = self.0.lock();
            if state
                .dead
                .iter()
                .any(|(_, m)| *m.deduplication_id == *queued.deduplication_id)
            {
                return Ok(());
            }
            let sequence = state.take_sequence();
            let body = Body::of_json(queued.body);
            let message = Message::new(sequence, body, queued.deduplication_id.into());
            let written = self.0.dir.as_ref().map(|dir| {
                let mut ops = std::mem::take(&mut state.journal);
                ops.push(durable::record(Space::Dead, &queued.group_id, &message));
                // Ahead of the delete of the record that brought it, which is what needs it.
                dir.submit(ops, Wait::Written)
            });
            state.dead.push((queued.group_id.into(), message));
            written
        };
        match written {
            Some(written) => written.done().await.map_err(unavailable),
            None => Ok(()),
        }
    }
}

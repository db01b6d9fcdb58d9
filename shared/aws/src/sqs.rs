//! The FIFO queue in SQS: ingest sends to it, the local event source consumes from it.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use futures_util::future::join_all;

use rockets::message::{Channel, Envelope};
use rockets::ports::{
    Cause, MessageQueue, QueueConsumer, QueueError, QueuedMessage, SourceQueue, drain_continuation,
};

/// The longest SQS lets a received message stay hidden: 12 hours.
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;

/// The longest wait SQS allows a receive.
const LONG_POLL_MAX: Duration = Duration::from_secs(20);

/// Entries per DeleteMessageBatch call, SQS's limit.
const DELETE_BATCH_LIMIT: usize = 10;

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

/// Codes SQS answers for a request to try again later, once the SDK's own retries are spent.
const TRANSIENT_CODES: [&str; 8] = [
    "ThrottlingException",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "KmsThrottled",
    "KmsUnavailable",
    "KMS.ThrottlingException",
];

/// Codes SQS answers for a message it will never take.
const REFUSED_CODES: [&str; 3] = [
    "InvalidMessageContents",
    "InvalidParameterValue",
    "MessageTooLong",
];

/// Classifies an SDK error: transient ones are `Unavailable`, a refusal of the message itself
/// is `Refused`, the rest (access, a missing queue) `Failed`.
fn queue_error<E, R>(what: &str, error: aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_sqs::error::SdkError;
    enum Class {
        Unavailable,
        Refused(String),
        Failed,
    }
    let class = match &error {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(code) if TRANSIENT_CODES.contains(&code) => Class::Unavailable,
            Some(code) if REFUSED_CODES.contains(&code) => Class::Refused(code.to_string()),
            _ => Class::Failed,
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Unavailable
        }
        _ => Class::Failed,
    };
    let cause = Cause::new(format!("{what}: {}", DisplayErrorContext(&error)), error);
    match class {
        Class::Unavailable => QueueError::Unavailable(cause),
        Class::Refused(code) => QueueError::Refused { code, cause },
        Class::Failed => QueueError::Failed(cause),
    }
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    /// The environment variable that holds the queue's URL.
    pub const ENV: &'static str = "QUEUE_URL";

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The environment variable that holds the dead-letter queue's URL.
    pub const DEAD_LETTERS_ENV: &'static str = "DEAD_LETTER_QUEUE_URL";

    /// The queue named by `QUEUE_URL`.
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, rockets::config::ConfigError> {
        Ok(Self::new(
            Client::new(config),
            rockets::config::required(Self::ENV)?,
        ))
    }

    /// The dead-letter queue named by `DEAD_LETTER_QUEUE_URL`.
    pub fn dead_letters_from_env(
        config: &aws_config::SdkConfig,
    ) -> Result<Self, rockets::config::ConfigError> {
        Ok(Self::new(
            Client::new(config),
            rockets::config::required(Self::DEAD_LETTERS_ENV)?,
        ))
    }

    /// The dead-letter queue this queue's redrive policy names.
    pub async fn dead_letter_queue(&self) -> Result<SqsQueue, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| queue_error("get queue attributes", e))?;
        let arn = output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok())
            .and_then(|policy| Some(policy.get("deadLetterTargetArn")?.as_str()?.to_owned()))
            .ok_or_else(|| {
                QueueError::Failed(format!("{} names no dead-letter queue", self.url).into())
            })?;
        // arn:aws:sqs:<region>:<account>:<name>
        let parts: Vec<&str> = arn.split(':').collect();
        let [.., account, name] = parts[..] else {
            return Err(QueueError::Failed(
                format!("unexpected queue ARN {arn}").into(),
            ));
        };
        let url = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| queue_error("get dead-letter queue URL", e))?
            .queue_url
            .ok_or_else(|| QueueError::Failed(format!("no URL for {arn}").into()))?;
        Ok(SqsQueue::new(self.client.clone(), url))
    }

    /// This queue's dead-letter queue as a queue to send to, found from the redrive policy on
    /// the first send.
    pub fn redrive_target(&self) -> RedriveTarget {
        RedriveTarget {
            source: self.clone(),
            target: tokio::sync::OnceCell::new(),
        }
    }

    /// Sends an already-prepared message.
    pub async fn send_queued(&self, message: QueuedMessage) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_group_id(message.group_id)
            .message_deduplication_id(message.deduplication_id)
            .message_body(message.body)
            .send()
            .await
            .map_err(|e| queue_error("send", e))?;
        Ok(())
    }
}

/// A queue's dead-letter queue, looked up when first needed. See [`SqsQueue::redrive_target`].
pub struct RedriveTarget {
    source: SqsQueue,
    target: tokio::sync::OnceCell<SqsQueue>,
}

impl RedriveTarget {
    /// `source`'s dead-letter queue, known to be `target`.
    pub fn known(source: SqsQueue, target: SqsQueue) -> Self {
        RedriveTarget {
            source,
            target: tokio::sync::OnceCell::new_with(Some(target)),
        }
    }
}

/// Sends a message the apply side refused, under its own deduplication id
/// ([`QueuedMessage::refused`]).
impl MessageQueue for RedriveTarget {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        let target = self
            .target
            .get_or_try_init(|| self.source.dead_letter_queue())
            .await?;
        target.send_queued(QueuedMessage::refused(message)).await
    }
}

impl MessageQueue for SqsQueue {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        self.send_queued(QueuedMessage::of(message)).await
    }
}

impl QueueConsumer for SqsQueue {
    type Record = SqsMessage;

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            // A long poll waits by design: its bound is the wait plus an ordinary call's.
            .customize()
            .config_override(
                aws_sdk_sqs::Config::builder().timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(wait.min(LONG_POLL_MAX) + super::ATTEMPT_TIMEOUT)
                        .operation_timeout(wait.min(LONG_POLL_MAX) + super::OPERATION_TIMEOUT)
                        .build(),
                ),
            )
            .send()
            .await
            .map_err(|e| queue_error("receive", e))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|message| {
                let mut record = SqsMessage::default();
                record.attributes = message
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, value)| (name.as_str().to_owned(), value))
                    .collect();
                record.message_id = message.message_id;
                record.receipt_handle = message.receipt_handle;
                record.body = message.body;
                record.md5_of_body = message.md5_of_body;
                record.event_source = Some("aws:sqs".into());
                record
            })
            .collect())
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<(), QueueError> {
        let calls = receipt_handles.chunks(DELETE_BATCH_LIMIT).map(|chunk| {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*handle)
                        .build()
                        .expect("id and handle are set")
                })
                .collect();
            self.client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
        });
        for result in join_all(calls).await {
            let output = result.map_err(|e| queue_error("delete", e))?;
            entries_refused("delete refused", output.failed())?;
        }
        Ok(())
    }
}

/// A batch call's entries SQS refused, as an error naming how many and the first reason.
fn entries_refused(what: &str, failed: &[BatchResultErrorEntry]) -> Result<(), QueueError> {
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(QueueError::Failed(
            format!(
                "{what} for {} record(s): {}",
                failed.len(),
                first.message().unwrap_or(first.code())
            )
            .into(),
        )),
    }
}

impl SourceQueue for SqsQueue {
    async fn hide(&self, records: Vec<(String, Duration)>) -> Result<(), QueueError> {
        let calls = records.chunks(DELETE_BATCH_LIMIT).map(|chunk| {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (handle, hidden))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(hidden.as_secs().min(MAX_VISIBILITY_SECS) as i32)
                        .build()
                        .expect("id and handle are set")
                })
                .collect();
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
        });
        for result in join_all(calls).await {
            let output = result.map_err(|e| queue_error("change visibility", e))?;
            entries_refused("visibility change refused", output.failed())?;
        }
        Ok(())
    }

    async fn continue_drain(&self, channel: &Channel, marker: u64) -> Result<(), QueueError> {
        self.send_queued(drain_continuation(channel, marker)).await
    }
}

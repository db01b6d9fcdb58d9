//! Creates the table and queues on an endpoint where they are missing, for local development
//! and tests. The functions never create resources; in AWS the SAM template does.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::dynamo::{LISTED, LISTING, PK, SK};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The queue settings the template also uses.
#[derive(Clone, Copy, Debug)]
pub struct QueueSettings {
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
}

impl Default for QueueSettings {
    /// The template's.
    fn default() -> Self {
        QueueSettings {
            visibility_timeout: Duration::from_secs(60),
            max_receive_count: 16,
        }
    }
}

/// The message queue's attributes, as the template sets them, less its redrive policy (which
/// needs the dead-letter queue's ARN).
pub fn queue_attributes(settings: &QueueSettings) -> Vec<(QueueAttributeName, String)> {
    vec![
        (QueueAttributeName::FifoQueue, "true".into()),
        // Deduplication ids are per (channel, messageNumber), so they may be scoped to the
        // channel's group, which allows high-throughput FIFO.
        (
            QueueAttributeName::ContentBasedDeduplication,
            "false".into(),
        ),
        (
            QueueAttributeName::DeduplicationScope,
            "messageGroup".into(),
        ),
        (
            QueueAttributeName::FifoThroughputLimit,
            "perMessageGroupId".into(),
        ),
        (
            QueueAttributeName::VisibilityTimeout,
            settings.visibility_timeout.as_secs().max(1).to_string(),
        ),
        (QueueAttributeName::MessageRetentionPeriod, "345600".into()),
        (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
    ]
}

/// The dead-letter queue's attributes, as the template sets them, less its redrive-allow
/// policy (the template's names the source queue's ARN; emulators do not all accept one).
pub fn dead_letter_attributes() -> Vec<(QueueAttributeName, String)> {
    vec![
        (QueueAttributeName::FifoQueue, "true".into()),
        (QueueAttributeName::MessageRetentionPeriod, "1209600".into()),
        (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
    ]
}

/// The URLs of the queue and its dead-letter queue.
#[derive(Clone, Debug)]
pub struct Queues {
    pub url: String,
    pub dead_letter_url: String,
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement, Error> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()?)
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, Error> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()?)
}

/// Creates the rocket table with its listing index unless it exists, and waits until it is
/// active.
pub async fn ensure_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), Error> {
    let exists = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .is_ok();
    if !exists {
        let definitions = vec![
            string_attribute(PK)?,
            string_attribute(SK)?,
            string_attribute(LISTED)?,
        ];
        let listing = GlobalSecondaryIndex::builder()
            .index_name(LISTING)
            .key_schema(key(LISTED, KeyType::Hash)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .non_key_attributes("rocket")
                    .build(),
            )
            .build()?;
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .set_attribute_definitions(Some(definitions))
            .global_secondary_indexes(listing)
            .send()
            .await?;
    }
    for _ in 0..120 {
        let description = client.describe_table().table_name(table).send().await?;
        if description.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("table {table} did not become active").into())
}

/// Creates `<name>.fifo` and its dead-letter queue `<name>-dlq.fifo` unless they exist.
pub async fn ensure_queues(
    client: &aws_sdk_sqs::Client,
    name: &str,
    settings: QueueSettings,
) -> Result<Queues, Error> {
    let dead_letter_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq.fifo"))
        .set_attributes(Some(dead_letter_attributes().into_iter().collect()))
        .send()
        .await?
        .queue_url
        .ok_or("CreateQueue returned no URL")?;
    let dead_letter_arn = client
        .get_queue_attributes()
        .queue_url(&dead_letter_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or("GetQueueAttributes returned no ARN")?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": settings.max_receive_count,
    });
    let mut attributes: std::collections::HashMap<_, _> =
        queue_attributes(&settings).into_iter().collect();
    attributes.insert(QueueAttributeName::RedrivePolicy, redrive.to_string());
    let url = client
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .set_attributes(Some(attributes))
        .send()
        .await?
        .queue_url
        .ok_or("CreateQueue returned no URL")?;
    Ok(Queues {
        url,
        dead_letter_url,
    })
}

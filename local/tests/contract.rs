//! The backend contract, run unchanged against the embedded backends and the AWS ones (on
//! moto, DynamoDB Local and LocalStack, which the test command starts).

mod support;

use rockets::testing::{contract, emulator, unique_name};
use rockets_aws::SqsQueue;
use rockets_aws::emulator_config;
use rockets_aws::provision::{QueueSettings, ensure_queues};
use rockets_embedded::{EmbeddedQueue, EmbeddedStore, QueueConfig};

#[tokio::test]
async fn embedded_store() {
    contract::store(&EmbeddedStore::new()).await;
}

#[tokio::test]
async fn embedded_queue() {
    contract::queue(&EmbeddedQueue::new(QueueConfig::default())).await;
}

#[tokio::test]
async fn dynamodb_on_moto() {
    let Some(endpoint) = emulator("ROCKETS_TEST_MOTO") else {
        return;
    };
    contract::store(&support::dynamodb(&endpoint, "contract").await).await;
}

#[tokio::test]
async fn dynamodb_local() {
    let Some(endpoint) = emulator("ROCKETS_TEST_DYNAMODB_LOCAL") else {
        return;
    };
    contract::store(&support::dynamodb(&endpoint, "contract").await).await;
}

#[tokio::test]
async fn dynamodb_on_localstack() {
    let Some(endpoint) = emulator("ROCKETS_TEST_LOCALSTACK") else {
        return;
    };
    contract::store(&support::dynamodb(&endpoint, "contract").await).await;
}

#[tokio::test]
async fn sqs_on_moto() {
    let Some(endpoint) = emulator("ROCKETS_TEST_MOTO") else {
        return;
    };
    sqs(&endpoint).await;
}

#[tokio::test]
async fn sqs_on_localstack() {
    let Some(endpoint) = emulator("ROCKETS_TEST_LOCALSTACK") else {
        return;
    };
    sqs(&endpoint).await;
}

async fn sqs(endpoint: &str) {
    let config = emulator_config(endpoint).await;
    let client = aws_sdk_sqs::Client::new(&config);
    let settings = QueueSettings {
        visibility_timeout: std::time::Duration::from_secs(30),
        max_receive_count: 5,
    };
    let queues = ensure_queues(&client, &unique_name("contract"), settings)
        .await
        .expect("queues created");
    contract::queue(&SqsQueue::new(client, queues.url)).await;
}

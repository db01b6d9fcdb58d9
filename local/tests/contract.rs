//! The backend contract, run unchanged against the embedded backends (in memory and in a data
//! directory) and the AWS ones (on moto, DynamoDB Local and LocalStack, which the test command
//! starts).

mod support;

use rockets::listing::{ListQuery, SortKey};
use rockets::ports::RocketReader;
use rockets_aws::SqsQueue;
use rockets_aws::emulator_config;
use rockets_aws::provision::{QueueSettings, ensure_queues};
use rockets_embedded::{DataDir, DurableStore, EmbeddedQueue, EmbeddedStore, QueueConfig};
use rockets_testkit::{contract, emulator, unique_name};
use support::Scratch;

#[tokio::test]
async fn embedded_store() {
    contract::store(&EmbeddedStore::new()).await;
}

#[tokio::test]
async fn embedded_queue() {
    contract::queue(&EmbeddedQueue::new(QueueConfig::default())).await;
}

#[tokio::test]
async fn durable_store() {
    let scratch = Scratch::new("contract-store");
    let (listed, before) = {
        let dir = DataDir::open(&scratch.0).unwrap();
        let store = DurableStore::open(&dir).unwrap();
        contract::store(&store).await;
        let listed = everything(&store).await;
        let histories = histories(&store, &listed[0]).await;
        (listed, histories)
    };
    // Reopened, it lists the same rockets in every order, and serves the same history.
    let dir = DataDir::open(&scratch.0).unwrap();
    let store = DurableStore::open(&dir).unwrap();
    assert_eq!(everything(&store).await, listed);
    assert_eq!(histories(&store, &listed[0]).await, before);
}

async fn histories<S: RocketReader>(store: &S, rockets: &[rockets::rocket::Rocket]) -> Vec<String> {
    let mut histories = Vec::new();
    for rocket in rockets {
        histories.push(format!(
            "{:?}",
            store.history(&rocket.channel, 0, 1000).await
        ));
    }
    histories
}

/// Every rocket, listed one at a time in every sort key's ascending order.
async fn everything<S: RocketReader>(store: &S) -> Vec<Vec<rockets::rocket::Rocket>> {
    let mut lists = Vec::new();
    for sort_by in SortKey::ALL {
        let mut query = ListQuery {
            sort_by,
            limit: 1,
            ..ListQuery::default()
        };
        let mut list = Vec::new();
        loop {
            let page = store.rockets(&query).await.unwrap();
            list.extend(page.rockets);
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        lists.push(list);
    }
    lists
}

#[tokio::test]
async fn durable_queue() {
    let scratch = Scratch::new("contract-queue");
    let dir = DataDir::open(&scratch.0).unwrap();
    contract::queue(&EmbeddedQueue::open(QueueConfig::default(), &dir).unwrap()).await;
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

//! The states only long traffic reaches, each run to its end through the whole pipeline (SQS
//! FIFO queues with their redrive policy, the event source, the apply handler, a DynamoDB
//! table) on DynamoDB Local and LocalStack, or on the embedded queue under tokio's paused clock
//! for what takes hours:
//!
//! - a commit that wrote history and lost its state write, its records dead-lettered, a
//!   different message parked under the same number, the redrive: the channel drains and stays
//!   usable;
//! - 10,000 messages parked behind a gap (2,000 on LocalStack's slower table),
//!   `maxReceiveCount` 2, a drain that needs many continuations: the rocket completes and the
//!   dead-letter queue stays empty;
//! - a table outage: no valid message reaches the dead-letter queue, for twelve hours on the
//!   paused clock, and on LocalStack's SQS with its visibility timeout scaled down.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rockets::message::{Channel, Envelope, Event};
use rockets::ordering::{ParkedView, Timeline};
use rockets::ports::{
    ChannelSnapshot, ChannelStore, CommitOutcome, MessageQueue, QueuedMessage, RocketReader,
};
use rockets::rocket::Rocket;
use rockets_aws::provision::{QueueSettings, Queues, ensure_queues, ensure_table};
use rockets_aws::{DynamoStore, MessageItem, RedriveTarget, SqsQueue, emulator_config};
use rockets_embedded::{DeadLetters, EmbeddedQueue, QueueConfig};
use rockets_local::{Backends, LocalConfig, LocalServer};
use rockets_testkit::{emulator, message, unique_name};
use support::OutageStore;

/// A table on `store_endpoint` and a queue pair on `queue_endpoint`, with the queue's
/// visibility timeout and `maxReceiveCount`.
struct Stack {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    queues: Queues,
    store: DynamoStore,
}

async fn stack(store_endpoint: &str, queue_endpoint: &str, queue: QueueSettings) -> Stack {
    rockets_testkit::init_test_logs();
    let dynamodb = aws_sdk_dynamodb::Client::new(&emulator_config(store_endpoint).await);
    let table = unique_name("long");
    ensure_table(&dynamodb, &table)
        .await
        .expect("table created");
    let sqs = aws_sdk_sqs::Client::new(&emulator_config(queue_endpoint).await);
    let queues = ensure_queues(&sqs, &unique_name("long"), queue)
        .await
        .expect("queues created");
    Stack {
        store: DynamoStore::new(dynamodb.clone(), table),
        dynamodb,
        sqs,
        queues,
    }
}

impl Stack {
    fn queue(&self) -> SqsQueue {
        SqsQueue::new(self.sqs.clone(), self.queues.url.clone())
    }

    fn dead_letter_queue(&self) -> SqsQueue {
        SqsQueue::new(self.sqs.clone(), self.queues.dead_letter_url.clone())
    }

    /// The pipeline on this stack: the event source long-polling the queue, the apply handler
    /// with `apply`'s settings.
    async fn pipeline(&self, apply: apply::Settings, pollers: usize) -> LocalServer {
        let config = LocalConfig {
            pollers,
            apply,
            ..LocalConfig::ephemeral()
        };
        let dead_letters = RedriveTarget::known(self.queue(), self.dead_letter_queue());
        rockets_local::start_aws(&config, self.queue(), dead_letters, self.store.clone())
            .await
            .expect("the pipeline starts")
    }

    /// Messages visible and in flight in the queue at `url`.
    async fn depth(&self, url: &str) -> u64 {
        let (visible, in_flight) = support::sqs_depth(&self.sqs, url).await;
        visible + in_flight
    }

    /// Moves every dead letter back to the messages queue, as a redrive does: the same body,
    /// a new deduplication id.
    async fn redrive(&self) -> usize {
        let mut moved = 0;
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queues.dead_letter_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
                )
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if received.is_empty() {
                return moved;
            }
            for letter in received {
                let group = letter
                    .attributes()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                    })
                    .cloned()
                    .expect("a FIFO group");
                self.queue()
                    .send_queued(QueuedMessage {
                        group_id: group,
                        deduplication_id: format!("redrive-{}", letter.message_id().unwrap()),
                        body: letter.body().unwrap().to_string(),
                    })
                    .await
                    .unwrap();
                self.sqs
                    .delete_message()
                    .queue_url(&self.queues.dead_letter_url)
                    .receipt_handle(letter.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                moved += 1;
            }
        }
    }
}

/// Waits until `check` holds of the channel's rocket, polling for up to `within`.
async fn until<S: RocketReader>(
    store: &S,
    channel: &Channel,
    within: Duration,
    check: impl Fn(&Rocket) -> bool,
) -> Rocket {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let rocket = store.rocket(channel).await.unwrap();
        if let Some(rocket) = rocket.filter(|r| check(r)) {
            return rocket;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} never got there: {:?}",
            store.rocket(channel).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn speed(n: u64, by: i64) -> Event {
    if n == 1 {
        Event::Launched {
            rocket_type: "Falcon-9".into(),
            launch_speed: 100,
            mission: "ARTEMIS".into(),
        }
    } else {
        Event::SpeedIncreased { by }
    }
}

/// The wedge sequence: a commit of messages 1 and 2 wrote their items and lost its state write;
/// their records went to the dead-letter queue; a different message 2' arrives. (The previous
/// layout parked 2' apart from the history, and the redriven 1's drain met it under a number
/// the history held with other content.) The first message under a number wins, the channel
/// applies what it accepted, and stays usable.
async fn wedge_sequence(stack: Stack) {
    let c = Channel::parse(&unique_name("wedge")).unwrap();
    let m: Vec<Envelope> = (1..=3).map(|n| message(&c, n, speed(n, 10))).collect();
    // What the failed commit left: history items for 1 and 2, no state.
    let layout = stack.store.layout();
    for message in &m[..2] {
        let item = layout.message_item(MessageItem::History, message, message.to_json());
        stack
            .dynamodb
            .put_item()
            .table_name(stack.store.table())
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    // Its records, received twice without being deleted, go to the dead-letter queue.
    for message in &m[..2] {
        stack.queue().send(message).await.unwrap();
    }
    let queue = stack.queue();
    for _ in 0..3 {
        let _ = rockets::ports::QueueConsumer::receive(&queue, 10, Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    assert_eq!(stack.depth(&stack.queues.url).await, 0);
    assert_eq!(stack.depth(&stack.queues.dead_letter_url).await, 2);

    let server = stack.pipeline(apply::Settings::default(), 2).await;
    // It comes after the queue's five-minute deduplication window, or it would be dropped as a
    // resend of 2: sent here under an id of its own.
    let other = message(&c, 2, speed(2, 99));
    stack
        .queue()
        .send_queued(QueuedMessage {
            deduplication_id: "later-2".into(),
            ..QueuedMessage::of(&other)
        })
        .await
        .unwrap();
    // Its load finds what the failed commit accepted, 1 and 2, and applies them; it is a
    // conflict with 2.
    let rocket = until(&stack.store, &c, Duration::from_secs(30), |r| {
        r.last_message_number == 2
    })
    .await;
    assert_eq!(rocket.pending_messages, 0, "{rocket:?}");
    // Redriven, the dead letters are recognised as done.
    assert_eq!(stack.redrive().await, 2);
    // The channel stays usable.
    stack.queue().send(&m[2]).await.unwrap();
    let rocket = until(&stack.store, &c, Duration::from_secs(30), |r| {
        r.last_message_number == 3
    })
    .await;
    assert!(
        rocket.same_state(&Rocket::fold(c.clone(), &m, Utc::now())),
        "{rocket:?}"
    );
    assert_eq!(stack.store.history(&c, 0, 10).await.unwrap().unwrap(), m);
    drop(server);
    assert_eq!(stack.depth(&stack.queues.dead_letter_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wedge_sequence_drains_on_dynamodb_local() {
    let (Some(dynamodb), Some(localstack)) = (
        emulator("ROCKETS_TEST_DYNAMODB_LOCAL"),
        emulator("ROCKETS_TEST_LOCALSTACK"),
    ) else {
        return;
    };
    let settings = QueueSettings {
        visibility_timeout: Duration::from_secs(1),
        max_receive_count: 2,
    };
    wedge_sequence(stack(&dynamodb, &localstack, settings).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wedge_sequence_drains_on_localstack() {
    let Some(localstack) = emulator("ROCKETS_TEST_LOCALSTACK") else {
        return;
    };
    let settings = QueueSettings {
        visibility_timeout: Duration::from_secs(1),
        max_receive_count: 2,
    };
    wedge_sequence(stack(&localstack, &localstack, settings).await).await;
}

/// Parks messages 2..=`parked`+1 of `channel` straight through the store, a hundred a commit,
/// as batches behind a missing message 1 would.
async fn park<S: ChannelStore>(store: &S, messages: &[Envelope]) {
    for chunk in messages.chunks(100) {
        let (rocket, version, parked) = match store.load(&chunk[0].channel, 1, &[]).await.unwrap() {
            Some(ChannelSnapshot {
                rocket,
                version,
                parked,
            }) => (rocket, version, parked),
            None => (
                Rocket::new(chunk[0].channel.clone(), Utc::now()),
                0,
                ParkedView::none(),
            ),
        };
        let mut timeline = Timeline::load(rocket, parked, Utc::now());
        for message in chunk {
            timeline.receive(message.clone());
        }
        let change = timeline.into_change().expect("parks");
        assert_eq!(
            store.commit(version, &change).await.unwrap(),
            CommitOutcome::Committed
        );
    }
}

/// Thousands parked behind a gap; the gap fills; the drain stops at its budget again and again
/// and goes on in continuations through the queue, which the queue's two receives allowed a
/// message never run out on.
async fn long_drain(stack: Stack, parked: u64) {
    let c = Channel::parse(&unique_name("drain")).unwrap();
    let m: Vec<Envelope> = (1..=parked + 1)
        .map(|n| message(&c, n, speed(n, 1)))
        .collect();
    park(&stack.store, &m[1..]).await;
    let settings = apply::Settings {
        park_limit: parked + 10,
        drain_budget: Duration::from_millis(200),
        ..apply::Settings::default()
    };
    let server = stack.pipeline(settings, 2).await;
    stack.queue().send(&m[0]).await.unwrap();
    let rocket = until(&stack.store, &c, Duration::from_secs(600), |r| {
        r.last_message_number == parked + 1
    })
    .await;
    assert_eq!(rocket.pending_messages, 0);
    assert!(rocket.same_state(&Rocket::fold(c.clone(), &m, Utc::now())));
    drop(server);
    assert_eq!(
        stack.depth(&stack.queues.dead_letter_url).await,
        0,
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_drain_goes_on_in_continuations_on_dynamodb_local() {
    let (Some(dynamodb), Some(localstack)) = (
        emulator("ROCKETS_TEST_DYNAMODB_LOCAL"),
        emulator("ROCKETS_TEST_LOCALSTACK"),
    ) else {
        return;
    };
    let settings = QueueSettings {
        visibility_timeout: Duration::from_secs(2),
        max_receive_count: 2,
    };
    long_drain(stack(&dynamodb, &localstack, settings).await, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_drain_goes_on_in_continuations_on_localstack() {
    let Some(localstack) = emulator("ROCKETS_TEST_LOCALSTACK") else {
        return;
    };
    let settings = QueueSettings {
        visibility_timeout: Duration::from_secs(2),
        max_receive_count: 2,
    };
    long_drain(stack(&localstack, &localstack, settings).await, 2_000).await;
}

/// Twelve hours of a table that does not answer, on tokio's paused clock, with the template's
/// queue (a 60 s visibility timeout, sixteen receives): every message waits it out in the
/// queue, and is applied within the hour after the table answers again.
#[tokio::test(start_paused = true)]
async fn a_twelve_hour_table_outage_dead_letters_no_valid_message() {
    let queue = Arc::new(EmbeddedQueue::new(QueueConfig::default()));
    let twelve_hours = Duration::from_secs(12 * 60 * 60);
    let store = Arc::new(OutageStore::lasting(twelve_hours));
    let config = LocalConfig {
        pollers: 2,
        ..LocalConfig::ephemeral()
    };
    let backends = Backends {
        queue: queue.clone(),
        store: store.clone(),
    };
    let dead_letters = Arc::new(DeadLetters(queue.clone()));
    let server = rockets_local::start(
        &config,
        backends.clone(),
        backends,
        dead_letters,
        Some(queue.clone()),
    )
    .await
    .expect("the pipeline starts");
    let channels: Vec<Channel> = (0..3)
        .map(|i| Channel::parse(&format!("outage-{i}")).unwrap())
        .collect();
    for c in &channels {
        for n in 1..=4 {
            queue.send(&message(c, n, speed(n, 5))).await.unwrap();
        }
    }
    tokio::time::sleep(twelve_hours + Duration::from_secs(61 * 60)).await;
    assert!(store.was_met(), "the outage was met");
    assert_eq!(queue.depth().dead, 0, "no valid message dead-lettered");
    for c in &channels {
        let rocket = store.rocket(c).await.unwrap().expect("applied");
        assert_eq!(rocket.last_message_number, 4, "{rocket:?}");
    }
    drop(server);
}

/// The same on LocalStack's SQS, its visibility timeout scaled down to a second and its
/// receives to four (what they outlast: 1 + 4 + 16 seconds; without backing off, 4): a
/// ten-second outage of the table dead-letters nothing, and every message is applied once it
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_outage_dead_letters_no_valid_message_on_localstack() {
    let Some(localstack) = emulator("ROCKETS_TEST_LOCALSTACK") else {
        return;
    };
    let queue_settings = QueueSettings {
        visibility_timeout: Duration::from_secs(1),
        max_receive_count: 4,
    };
    let stack = stack(&localstack, &localstack, queue_settings).await;
    let outage = Duration::from_secs(10);
    let store = OutageStore::lasting(outage);
    let config = LocalConfig {
        pollers: 2,
        queue: QueueConfig {
            visibility_timeout: queue_settings.visibility_timeout,
            ..QueueConfig::default()
        },
        ..LocalConfig::ephemeral()
    };
    let backends = Backends {
        queue: Arc::new(stack.queue()),
        store: Arc::new(store),
    };
    let dead_letters = Arc::new(RedriveTarget::known(
        stack.queue(),
        stack.dead_letter_queue(),
    ));
    let server = rockets_local::start(
        &config,
        backends.clone(),
        backends.clone(),
        dead_letters,
        None,
    )
    .await
    .expect("the pipeline starts");
    let c = Channel::parse(&unique_name("outage")).unwrap();
    for n in 1..=3 {
        stack
            .queue()
            .send(&message(&c, n, speed(n, 5)))
            .await
            .unwrap();
    }
    let rocket = until(
        &*backends.store,
        &c,
        outage + Duration::from_secs(90),
        |r| r.last_message_number == 3,
    )
    .await;
    assert_eq!(rocket.pending_messages, 0);
    assert!(backends.store.was_met(), "the outage was met");
    drop(server);
    assert_eq!(
        stack.depth(&stack.queues.dead_letter_url).await,
        0,
        "nothing dead-lettered"
    );
}

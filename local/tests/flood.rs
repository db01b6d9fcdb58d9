//! A flooded channel: messages 2..N of one channel arrive and message 1 does not. Run
//! unchanged against the embedded store and DynamoDB (on moto, DynamoDB Local and LocalStack).
//!
//! What a batch reads stays bounded by the batch and the park window however many messages
//! are parked; the park limit sends the excess to the dead-letter queue, counted; filling the
//! gap drains in rounds, and a drain longer than its budget goes on in continuations it queues,
//! which no record is received again for; redriving the dead letters completes the rocket.

mod support;

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::Utc;
use rockets::message::Envelope;
use rockets::ports::{ChannelStore, RocketReader, drain_continuation};
use rockets::rocket::Rocket;
use rockets_embedded::EmbeddedStore;
use rockets_testkit::{
    CountingStore, RecordingQueue, Rng, channel, emulator, flight, sqs_record, unique_name,
};

fn records(messages: &[Envelope]) -> Vec<SqsMessage> {
    messages
        .iter()
        .map(|m| sqs_record(&format!("{}-{}", m.channel, m.number), m))
        .collect()
}

async fn flooded_channel<S: ChannelStore + RocketReader>(store: S) {
    rockets_testkit::init_test_logs();
    let store = CountingStore::new(store);
    let (dead_letters, source) = (RecordingQueue::default(), RecordingQueue::default());
    let settings = apply::Settings {
        park_limit: 31,
        park_window: 8,
        ..apply::Settings::default()
    };
    let c = channel(&unique_name("flood"));
    let m = flight(&c, 41, &mut Rng::new(3));
    let apply = async |batch: &[SqsMessage], settings: &apply::Settings| {
        apply::apply_batch(&store, &source, &dead_letters, settings, batch)
            .await
            .unwrap()
    };

    // 2..=41 without 1: the thirty within 31 of the last applied number (none yet) park, the
    // ten beyond go to the dead-letter queue.
    let mut total = apply::BatchSummary::default();
    for batch in m[1..].chunks(10) {
        let (response, summary) = apply(&records(batch), &settings).await;
        assert!(response.batch_item_failures.is_empty());
        total += summary;
        // However many are parked, a batch reads at most the window and its own numbers.
        let read = store.take_most_parked_read();
        assert!(read <= settings.park_window + batch.len(), "read {read}");
    }
    assert_eq!((total.parked, total.refused, total.failed), (30, 10, 0));
    assert_eq!(dead_letters.sent(), m[31..]);
    let rocket = store.inner.rocket(&c).await.unwrap().unwrap();
    assert_eq!(
        (rocket.last_message_number, rocket.pending_messages),
        (0, 30)
    );

    // Resends of parked messages, and one more past the limit, change nothing.
    let (_, summary) = apply(&records(&[m[5].clone(), m[40].clone()]), &settings).await;
    assert_eq!((summary.duplicates, summary.refused), (1, 1));
    assert!(store.take_most_parked_read() <= settings.park_window + 2);

    // Message 1 fills the gap. With no drain budget each delivery drains one window and
    // queues a continuation behind its channel; every record succeeds, none is handed back,
    // and the continuations' deliveries finish the drain.
    let no_budget = apply::Settings {
        drain_budget: Duration::ZERO,
        ..settings
    };
    let mut batch = records(&m[..1]);
    let mut deliveries = 0;
    loop {
        deliveries += 1;
        assert!(deliveries < 20, "the drain makes no progress");
        let (response, _) = apply(&batch, &no_budget).await;
        assert!(response.batch_item_failures.is_empty());
        assert!(store.take_most_parked_read() <= settings.park_window + 1);
        assert!(source.hidden().is_empty(), "no record is handed back");
        let continued = source.continued();
        if continued.len() < deliveries {
            break;
        }
        let (channel, marker) = continued.last().unwrap().clone();
        let continuation = drain_continuation(&channel, marker);
        let mut record = sqs_record(&format!("drain-{deliveries}"), &m[0]);
        record.body = Some(continuation.body);
        batch = vec![record];
    }
    assert!(deliveries >= 3, "{deliveries} deliveries");
    let rocket = store.inner.rocket(&c).await.unwrap().unwrap();
    assert_eq!(
        (rocket.last_message_number, rocket.pending_messages),
        (31, 0)
    );

    // The operator redrives the dead letters; the rocket is complete.
    let redriven = dead_letters.sent();
    for batch in redriven.chunks(10) {
        let (response, _) = apply(&records(batch), &settings).await;
        assert!(response.batch_item_failures.is_empty());
    }
    let rocket = store.inner.rocket(&c).await.unwrap().unwrap();
    let expected = Rocket::fold(c.clone(), &m, Utc::now());
    assert!(rocket.same_state(&expected), "{rocket:?}");
    assert_eq!(rocket.pending_messages, 0);
    assert_eq!(store.inner.history(&c, 0, 100).await.unwrap().unwrap(), m);
}

#[tokio::test]
async fn embedded_store() {
    flooded_channel(EmbeddedStore::new()).await;
}

#[tokio::test]
async fn dynamodb_on_moto() {
    let Some(endpoint) = emulator("ROCKETS_TEST_MOTO") else {
        return;
    };
    flooded_channel(support::dynamodb(&endpoint, "flood").await).await;
}

#[tokio::test]
async fn dynamodb_local() {
    let Some(endpoint) = emulator("ROCKETS_TEST_DYNAMODB_LOCAL") else {
        return;
    };
    flooded_channel(support::dynamodb(&endpoint, "flood").await).await;
}

#[tokio::test]
async fn dynamodb_on_localstack() {
    let Some(endpoint) = emulator("ROCKETS_TEST_LOCALSTACK") else {
        return;
    };
    flooded_channel(support::dynamodb(&endpoint, "flood").await).await;
}

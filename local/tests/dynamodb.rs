//! The DynamoDB table's layout on the emulators the test command starts: every order of the
//! listing walked, how soon the listing follows a commit, and the store's own account of what
//! its commits write, held to the write units DynamoDB reports.

mod support;

use chrono::Utc;
use rockets::listing::{ListQuery, Order, SortKey};
use rockets::message::{Channel, Envelope, Event};
use rockets::ordering::{ChannelChange, Timeline};
use rockets::ports::{ChannelStore, CommitOutcome, RocketReader};
use rockets::rocket::{Rocket, Status};
use rockets_aws::{DynamoStore, emulator_config};
use rockets_testkit::{Rng, channel, emulator, flight, message, unique_name};
use rockets_tools::billing::{Target, commit_writes};
use rockets_tools::capacity::CapacityMeter;

/// Receives `messages` into the channel's timeline and commits the change; the state before,
/// the version it was loaded at and the change, for accounting.
async fn commit<S: ChannelStore>(
    store: &S,
    messages: &[Envelope],
) -> (Option<Rocket>, u64, ChannelChange) {
    let channel = &messages[0].channel;
    let (mut timeline, before, version) = match store.load(channel, 100, &[]).await.unwrap() {
        Some(s) => (
            Timeline::load(s.rocket.clone(), s.parked, Utc::now()),
            (s.version > 0).then_some(s.rocket),
            s.version,
        ),
        None => (Timeline::empty(channel.clone(), Utc::now()), None, 0),
    };
    for m in messages {
        timeline.receive(m.clone());
    }
    let change = timeline.into_change().expect("something changed");
    assert_eq!(
        store.commit(version, &change).await.unwrap(),
        CommitOutcome::Committed
    );
    (before, version, change)
}

/// Every rocket of ours, walked page by page.
async fn walk(store: &DynamoStore, mut query: ListQuery, ours: &[Channel]) -> Vec<Channel> {
    let mut walked = Vec::new();
    for _ in 0..200 {
        let page = store.rockets(&query).await.unwrap();
        assert!(page.rockets.len() <= query.limit);
        walked.extend(
            page.rockets
                .into_iter()
                .map(|r| r.channel)
                .filter(|c| ours.contains(c)),
        );
        match page.next {
            Some(next) => query.after = Some(next),
            None => return walked,
        }
    }
    panic!("the walk did not end");
}

/// Thirty rockets, some stalled, then every order walked in pages of five: each page chosen
/// from the whole listing, read in parallel segments.
async fn listing(endpoint: &str) {
    rockets_testkit::init_test_logs();
    let store = support::dynamodb(endpoint, "listing").await;
    let prefix = unique_name("ls");
    let mut rng = Rng::new(11);
    let mut ours = Vec::new();
    for i in 0..30u16 {
        let c = channel(&format!("{prefix}-{i}"));
        let mut messages = flight(&c, 2 + rng.below(4), &mut rng);
        if i % 5 == 4 {
            // Stalled behind a missing message 2.
            messages.remove(1);
        }
        commit(&store, &messages).await;
        ours.push(c);
    }
    let mut expected: Vec<Rocket> = Vec::new();
    for c in &ours {
        expected.push(
            store
                .rocket(c)
                .await
                .unwrap()
                .expect("listed rocket exists"),
        );
    }
    let mut queries = Vec::new();
    for sort_by in SortKey::ALL {
        for order in [Order::Asc, Order::Desc] {
            queries.push((sort_by, order, None, false));
        }
    }
    queries.push((SortKey::Speed, Order::Desc, Some(Status::Launched), false));
    queries.push((SortKey::PendingMessages, Order::Desc, None, true));
    queries.push((SortKey::PendingMessages, Order::Asc, None, true));
    for (sort_by, order, status, stalled) in queries {
        let query = ListQuery {
            sort_by,
            order,
            status,
            stalled,
            limit: 5,
            after: None,
            prefix: None,
        };
        let mut wanted: Vec<&Rocket> = expected
            .iter()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .filter(|r| !stalled || r.pending_messages > 0)
            .collect();
        wanted.sort_by_key(|r| sort_by.position(r));
        if order == Order::Desc {
            wanted.reverse();
        }
        let wanted: Vec<Channel> = wanted.into_iter().map(|r| r.channel.clone()).collect();
        assert_eq!(
            walk(&store, query, &ours).await,
            wanted,
            "{sort_by:?} {order:?} {status:?} stalled {stalled}"
        );
    }
}

#[tokio::test]
async fn listing_on_dynamodb_local() {
    let Some(endpoint) = emulator("ROCKETS_TEST_DYNAMODB_LOCAL") else {
        return;
    };
    listing(&endpoint).await;
}

#[tokio::test]
async fn listing_on_moto() {
    let Some(endpoint) = emulator("ROCKETS_TEST_MOTO") else {
        return;
    };
    listing(&endpoint).await;
}

#[tokio::test]
async fn listing_on_localstack() {
    let Some(endpoint) = emulator("ROCKETS_TEST_LOCALSTACK") else {
        return;
    };
    listing(&endpoint).await;
}

/// The listing follows `GET /rockets/{channel}` within the second the README promises: each
/// commit, then the listing polled until it shows the rocket as the state item has it.
async fn listing_follows_within_a_second(endpoint: &str) {
    let store = support::dynamodb(endpoint, "lag").await;
    let c = channel(&unique_name("lag"));
    let messages = flight(&c, 6, &mut Rng::new(5));
    let query = ListQuery {
        sort_by: SortKey::LastMessageNumber,
        order: Order::Desc,
        limit: 1000,
        ..ListQuery::default()
    };
    for n in 1..=messages.len() {
        commit(&store, &messages[n - 1..n]).await;
        let committed = std::time::Instant::now();
        let now = store.rocket(&c).await.unwrap().unwrap();
        loop {
            let page = store.rockets(&query).await.unwrap();
            if page.rockets.iter().any(|r| r.channel == c && *r == now) {
                break;
            }
            assert!(
                committed.elapsed() < std::time::Duration::from_secs(1),
                "message {n} not listed within a second"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn listing_follows_within_a_second_on_dynamodb_local() {
    let Some(endpoint) = emulator("ROCKETS_TEST_DYNAMODB_LOCAL") else {
        return;
    };
    listing_follows_within_a_second(&endpoint).await;
}

#[tokio::test]
async fn listing_follows_within_a_second_on_localstack() {
    let Some(endpoint) = emulator("ROCKETS_TEST_LOCALSTACK") else {
        return;
    };
    listing_follows_within_a_second(&endpoint).await;
}

/// The writes the store says a commit makes, added up by what they were for, against the write
/// units DynamoDB Local reports for the same commits: a launch, parked messages, a gap filled
/// with a drain, a mission long enough to take the state item past a kilobyte, a status
/// change, and history that expires.
#[tokio::test]
async fn the_store_accounts_for_its_writes_as_dynamodb_bills_them() {
    let Some(endpoint) = emulator("ROCKETS_TEST_DYNAMODB_LOCAL") else {
        return;
    };
    let config = emulator_config(&endpoint).await;
    let meter = CapacityMeter::new();
    let client = meter.client(&config);
    let table = unique_name("accounting");
    rockets_aws::provision::ensure_table(&client, &table)
        .await
        .unwrap();
    let store = DynamoStore::new(client, table).with_history_retention(30);
    let layout = store.layout();
    let c = channel(&unique_name("accounting"));
    let long = "M".repeat(900);
    let batches: Vec<Vec<Envelope>> = vec![
        flight(&c, 3, &mut Rng::new(3)),
        vec![message(&c, 6, Event::SpeedIncreased { by: 5 })],
        vec![message(&c, 5, Event::SpeedDecreased { by: 2 })],
        vec![message(
            &c,
            4,
            Event::MissionChanged {
                new_mission: long.as_str().into(),
            },
        )],
        vec![message(&c, 7, Event::SpeedIncreased { by: 1 })],
        vec![message(
            &c,
            8,
            Event::Exploded {
                reason: "PRESSURE_VESSEL_FAILURE".into(),
            },
        )],
    ];
    let mut accounted = [0u64; 4];
    for batch in &batches {
        let (before, version, change) = commit(&store, batch).await;
        for write in commit_writes(&layout, before.as_ref(), version, &change) {
            let slot = match write.target {
                Target::State => 0,
                Target::History => 1,
                Target::Parked => 2,
                Target::Listing => 3,
            };
            accounted[slot] += write.units;
        }
    }
    let billed = meter.capacity().write_units();
    assert_eq!(
        accounted.map(|u| u as f64),
        [billed.state, billed.history, billed.parked, billed.indexes],
        "state, history, parked, listing index"
    );
    assert!(accounted[3] > 0 && accounted[2] > 0);
}

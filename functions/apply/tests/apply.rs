use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use apply::BatchSummary;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use proptest::prelude::*;
use rockets::message::{Channel, Envelope, Event, MessageNumber};
use rockets::ordering::ChannelChange;
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, RocketReader, StoreError};
use rockets::rocket::Rocket;
use rockets_embedded::EmbeddedStore;
use rockets_testkit::{Rng, channel, flight, message, sqs_record};

/// Wraps the embedded store and fails on purpose: before reading, before writing, or after
/// writing (a crash between the state write and the SQS delete). It can also pause between
/// load and commit so concurrent appliers interleave.
struct FaultyStore {
    inner: EmbeddedStore,
    rng: Mutex<Rng>,
    failure_percent: u64,
    failing_channel: Option<Channel>,
    interleave: bool,
}

impl FaultyStore {
    fn new(failure_percent: u64, seed: u64) -> Self {
        FaultyStore {
            inner: EmbeddedStore::new(),
            rng: Mutex::new(Rng::new(seed)),
            failure_percent,
            failing_channel: None,
            interleave: false,
        }
    }

    fn roll(&self) -> bool {
        self.failure_percent > 0 && self.rng.lock().unwrap().chance(self.failure_percent)
    }

    fn check(&self, channel: &Channel) -> Result<(), StoreError> {
        if self.failing_channel.as_ref() == Some(channel) || self.roll() {
            return Err(StoreError::Unavailable("injected".into()));
        }
        Ok(())
    }
}

impl ChannelStore for FaultyStore {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        self.check(channel)?;
        let snapshot = self.inner.load(channel, window, probe).await;
        if self.interleave {
            tokio::task::yield_now().await;
        }
        snapshot
    }

    async fn commit(
        &self,
        version: u64,
        change: &ChannelChange,
    ) -> Result<CommitOutcome, StoreError> {
        self.check(&change.rocket.channel)?;
        let outcome = self.inner.commit(version, change).await?;
        if self.roll() {
            return Err(StoreError::Unavailable("injected after the write".into()));
        }
        Ok(outcome)
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> Result<Vec<Envelope>, StoreError> {
        self.inner.applied(channel, numbers).await
    }
}

fn records(messages: &[&Envelope]) -> Vec<SqsMessage> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| sqs_record(&format!("{}-{}-{i}", m.channel, m.number), m))
        .collect()
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

async fn rocket(store: &EmbeddedStore, c: &Channel) -> Rocket {
    store.rocket(c).await.unwrap().expect("rocket exists")
}

async fn run(store: &impl ChannelStore, batch: Vec<SqsMessage>) -> (Vec<String>, BatchSummary) {
    let (response, summary) = apply_batch(store, &batch).await.unwrap();
    let failed = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    (failed, summary)
}

#[tokio::test]
async fn a_gap_parks_later_messages_until_it_fills() {
    let store = EmbeddedStore::new();
    let c = channel("gap");
    let m: Vec<_> = (1..=3).map(|n| message(&c, n, speed(n, 10))).collect();

    let (failed, summary) = run(&store, records(&[&m[2], &m[1]])).await;
    assert!(failed.is_empty());
    assert_eq!(summary.parked, 2);
    let parked = rocket(&store, &c).await;
    assert_eq!(
        (parked.last_message_number, parked.pending_messages),
        (0, 2)
    );
    assert_eq!(parked.status, rockets::rocket::Status::Pending);

    let (_, summary) = run(&store, records(&[&m[0]])).await;
    assert_eq!(summary.applied, 3);
    let done = rocket(&store, &c).await;
    assert!(done.same_state(&Rocket::fold(c.clone(), &m, Utc::now())));
    assert_eq!(done.pending_messages, 0);
}

#[tokio::test]
async fn duplicates_are_no_ops() {
    let store = EmbeddedStore::new();
    let c = channel("dup");
    let m: Vec<_> = (1..=2).map(|n| message(&c, n, speed(n, 10))).collect();
    let (_, first) = run(&store, records(&[&m[0], &m[1], &m[0], &m[1]])).await;
    assert_eq!((first.applied, first.duplicates), (2, 2));
    let before = rocket(&store, &c).await;
    let (failed, again) = run(&store, records(&[&m[1], &m[0]])).await;
    assert!(failed.is_empty());
    assert_eq!((again.applied, again.duplicates), (0, 2));
    assert_eq!(rocket(&store, &c).await, before, "not even updatedAt moves");
}

#[tokio::test]
async fn a_conflicting_resend_is_kept_out_and_counted() {
    let store = EmbeddedStore::new();
    let c = channel("conflict");
    let first = [
        message(&c, 1, speed(1, 0)),
        message(&c, 2, speed(2, 10)),
        message(&c, 4, speed(4, 10)),
    ];
    run(&store, records(&[&first[0], &first[1], &first[2]])).await;
    let before = rocket(&store, &c).await;

    let applied_twin = message(&c, 2, speed(2, 999));
    let parked_twin = message(&c, 4, speed(4, 999));
    let (failed, summary) = run(&store, records(&[&applied_twin, &parked_twin])).await;
    assert!(failed.is_empty(), "a conflict is not retried");
    assert_eq!(summary.conflicts, 2);
    assert_eq!(rocket(&store, &c).await, before);
    let history = store.history(&c, 0, 10).await.unwrap().unwrap();
    assert_eq!(history, first[..2]);
}

#[tokio::test]
async fn one_batch_applies_several_channels() {
    let store = EmbeddedStore::new();
    let (a, b) = (channel("a"), channel("b"));
    let ma: Vec<_> = (1..=2).map(|n| message(&a, n, speed(n, 1))).collect();
    let mb: Vec<_> = (1..=2).map(|n| message(&b, n, speed(n, 2))).collect();
    let (failed, summary) = run(&store, records(&[&ma[0], &mb[0], &ma[1], &mb[1]])).await;
    assert!(failed.is_empty());
    assert_eq!(summary.applied, 4);
    assert_eq!(rocket(&store, &a).await.speed, 101);
    assert_eq!(rocket(&store, &b).await.speed, 102);
}

#[tokio::test]
async fn a_bad_record_fails_with_every_later_record_of_its_channel_only() {
    let store = EmbeddedStore::new();
    let (a, b) = (channel("a"), channel("b"));
    let ma: Vec<_> = (1..=3).map(|n| message(&a, n, speed(n, 1))).collect();
    let mb: Vec<_> = (1..=2).map(|n| message(&b, n, speed(n, 2))).collect();
    let mut batch = records(&[&ma[0], &mb[0], &ma[1], &mb[1], &ma[2]]);
    batch[2].body = Some("{\"metadata\":{}}".into());
    let ids: Vec<String> = batch
        .iter()
        .map(|r| r.message_id.clone().unwrap())
        .collect();

    let (failed, _) = run(&store, batch).await;
    assert_eq!(failed, [ids[2].clone(), ids[4].clone()]);
    assert_eq!(
        rocket(&store, &a).await.last_message_number,
        1,
        "a1 before the bad record applied"
    );
    assert_eq!(rocket(&store, &b).await.last_message_number, 2);
}

#[tokio::test]
async fn a_record_whose_body_names_another_channel_than_its_group_is_refused() {
    let store = EmbeddedStore::new();
    let (a, b) = (channel("a"), channel("b"));
    let mut batch = records(&[&message(&a, 1, speed(1, 0))]);
    batch[0]
        .attributes
        .insert("MessageGroupId".into(), b.to_string());
    let (failed, _) = run(&store, batch).await;
    assert_eq!(failed.len(), 1);
    assert!(store.rocket(&a).await.unwrap().is_none());
}

#[tokio::test]
async fn a_store_failure_fails_that_channels_records_and_no_others() {
    let mut store = FaultyStore::new(0, 1);
    let (a, b) = (channel("a"), channel("b"));
    store.failing_channel = Some(a.clone());
    let batch = records(&[
        &message(&a, 1, speed(1, 0)),
        &message(&b, 1, speed(1, 0)),
        &message(&a, 2, speed(2, 5)),
    ]);
    let ids: Vec<String> = batch
        .iter()
        .map(|r| r.message_id.clone().unwrap())
        .collect();
    let (failed, summary) = run(&store, batch).await;
    assert_eq!(failed, [ids[0].clone(), ids[2].clone()]);
    assert_eq!((summary.applied, summary.failed), (1, 2));
}

#[tokio::test]
async fn a_record_without_a_message_id_fails_the_whole_batch() {
    let store = EmbeddedStore::new();
    let mut batch = records(&[&message(&channel("a"), 1, speed(1, 0))]);
    batch[0].message_id = None;
    let mut event = SqsEvent::default();
    event.records = batch;
    let queue = rockets_embedded::EmbeddedQueue::new(Default::default());
    assert!(
        apply::handle(&store, &queue, &queue, &apply::Settings::default(), event)
            .await
            .is_err()
    );
}

/// A store that holds `first` under its number without its rocket counting it, as a DynamoDB
/// commit that wrote its message and then lost its state write leaves it: loads show it parked,
/// like any message above the rocket's number, and a commit writing another message under that
/// number loses, as DynamoDB's conditional write answers.
struct OrphanAhead {
    inner: EmbeddedStore,
    first: Envelope,
}

impl ChannelStore for OrphanAhead {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        let mut snapshot = match self.inner.load(channel, window, probe).await? {
            Some(snapshot) => snapshot,
            None => ChannelSnapshot {
                rocket: Rocket::new(channel.clone(), Utc::now()),
                parked: rockets::ordering::ParkedView::none(),
                version: 0,
            },
        };
        let first = &self.first;
        let view = &mut snapshot.parked;
        if first.number.get() > snapshot.rocket.last_message_number
            && !view.first.iter().any(|m| m.number == first.number)
        {
            let beyond =
                !view.complete && view.first.last().is_some_and(|m| m.number < first.number);
            if beyond {
                view.probed.push(first.clone());
            } else {
                view.first.push(first.clone());
                view.first.sort_by_key(|m| m.number);
            }
        }
        Ok(Some(snapshot))
    }

    async fn commit(
        &self,
        version: u64,
        change: &ChannelChange,
    ) -> Result<CommitOutcome, StoreError> {
        let first = &self.first;
        if (change.applied.iter().chain(&change.parked))
            .any(|m| m.number == first.number && m != first)
        {
            return Ok(CommitOutcome::VersionMismatch);
        }
        self.inner.commit(version, change).await
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> Result<Vec<Envelope>, StoreError> {
        self.inner.applied(channel, numbers).await
    }
}

/// A message received under a number that a failed commit already wrote another message under
/// yields to that one, whether the first read of the channel shows it or a later one does: the
/// channel drains and stays usable, and the later message is counted as a conflict.
#[tokio::test]
async fn a_message_yields_to_the_one_a_failed_commit_accepted_first_under_its_number() {
    for (taken, window) in [(2, 100), (3, 1)] {
        let c = channel(&format!("wedge-{taken}"));
        let m: Vec<Envelope> = (1..=5).map(|n| message(&c, n, speed(n, 10))).collect();
        let first = m[taken - 1].clone();
        let other = message(&c, taken as u64, speed(taken as u64, 99));
        let store = OrphanAhead {
            inner: EmbeddedStore::new(),
            first: first.clone(),
        };
        let stand_in = rockets_testkit::RecordingQueue::default();
        let settings = apply::Settings {
            park_window: window,
            ..apply::Settings::default()
        };
        let apply = async |batch: Vec<SqsMessage>| {
            apply::apply_batch(&store, &stand_in, &stand_in, &settings, &batch)
                .await
                .unwrap()
        };
        // The different message, and the ones after it, park behind the missing 1.
        let parked: Vec<&Envelope> = (2..=4)
            .map(|n| if n == taken { &other } else { &m[n - 1] })
            .collect();
        let (response, summary) = apply(records(&parked)).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((summary.parked, summary.conflicts), (2, 1), "{summary:?}");
        // 1 is redriven: its drain applies the one accepted first, and completes.
        let (response, summary) = apply(records(&[&m[0]])).await;
        assert!(response.batch_item_failures.is_empty(), "{summary:?}");
        assert_eq!((summary.applied, summary.conflicts), (4, 0), "{summary:?}");
        let (response, _) = apply(records(&[&m[4]])).await;
        assert!(response.batch_item_failures.is_empty());
        let rocket = store.inner.rocket(&c).await.unwrap().unwrap();
        assert!(rocket.same_state(&Rocket::fold(c.clone(), &m, Utc::now())));
        assert_eq!(rocket.pending_messages, 0);
        assert_eq!(store.inner.history(&c, 0, 10).await.unwrap().unwrap(), m);
    }
}

/// A store that refuses every write for good, as DynamoDB does a role without access.
struct Refusing;

impl ChannelStore for Refusing {
    async fn load(
        &self,
        _: &Channel,
        _: usize,
        _: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        Err(StoreError::Failed("AccessDeniedException".into()))
    }

    async fn commit(&self, _: u64, _: &ChannelChange) -> Result<CommitOutcome, StoreError> {
        Err(StoreError::Failed("AccessDeniedException".into()))
    }

    async fn applied(&self, _: &Channel, _: &[MessageNumber]) -> Result<Vec<Envelope>, StoreError> {
        Err(StoreError::Failed("AccessDeniedException".into()))
    }
}

/// A store that refuses records for good sends them to the dead-letter queue by their third
/// receive, where its alarm is seen; one that is unavailable hides them for longer at each
/// receive and never dead-letters them itself.
#[tokio::test]
async fn a_permanent_store_error_dead_letters_quickly_and_an_outage_backs_off() {
    let c = channel("refused");
    let batch = |receives: u32| {
        let mut records = records(&[&message(&c, 1, speed(1, 0)), &message(&c, 2, speed(2, 1))]);
        for record in &mut records {
            record
                .attributes
                .insert("ApproximateReceiveCount".into(), receives.to_string());
        }
        records
    };
    let (source, dead_letters) = (
        rockets_testkit::RecordingQueue::default(),
        rockets_testkit::RecordingQueue::default(),
    );
    let settings = apply::Settings::default();
    for receives in 1..settings.permanent_receives {
        let (response, summary) = apply::apply_batch(
            &Refusing,
            &source,
            &dead_letters,
            &settings,
            &batch(receives),
        )
        .await
        .unwrap();
        assert_eq!(response.batch_item_failures.len(), 2);
        assert_eq!((summary.failed, summary.store_failed), (2, 0));
    }
    assert!(source.hidden().is_empty(), "not an outage: no back-off");
    let (response, summary) = apply::apply_batch(
        &Refusing,
        &source,
        &dead_letters,
        &settings,
        &batch(settings.permanent_receives),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(summary.store_failed, 2);
    assert_eq!(dead_letters.sent().len(), 2);

    let mut down = FaultyStore::new(0, 1);
    down.failing_channel = Some(c.clone());
    for receives in 1..=20 {
        let (response, summary) =
            apply::apply_batch(&down, &source, &dead_letters, &settings, &batch(receives))
                .await
                .unwrap();
        assert_eq!(
            (response.batch_item_failures.len(), summary.backed_off),
            (2, 2)
        );
    }
    assert_eq!(
        dead_letters.sent().len(),
        2,
        "an outage dead-letters nothing"
    );
    let hidden: Vec<u64> = source.hidden().iter().map(|(_, d)| d.as_secs()).collect();
    assert_eq!(&hidden[..8], [60, 60, 240, 240, 960, 960, 3600, 3600]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appliers_on_one_channel_never_apply_twice_or_skip() {
    for round in 0..20 {
        let mut store = FaultyStore::new(0, round);
        store.interleave = true;
        let store = Arc::new(store);
        let c = channel("race");
        let m = flight(&c, 12, &mut Rng::new(round));
        let mut rng = Rng::new(round + 100);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let mut mine: Vec<&Envelope> = m.iter().filter(|_| rng.chance(60)).collect();
            rng.shuffle(&mut mine);
            let batch = records(&mine);
            let store = store.clone();
            tasks.push(tokio::spawn(async move { run(&*store, batch).await }));
        }
        for task in tasks {
            assert!(task.await.unwrap().0.is_empty());
        }
        // Whatever the race left out arrives afterwards, in one batch.
        run(&*store, records(&m.iter().collect::<Vec<_>>())).await;
        let stored = store.inner.rocket(&c).await.unwrap().unwrap();
        assert!(
            stored.same_state(&Rocket::fold(c.clone(), &m, Utc::now())),
            "round {round}"
        );
        assert_eq!(store.inner.history(&c, 0, 100).await.unwrap().unwrap(), m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random flights on several channels, delivered in any order with duplicates, in random
    /// batches, with store failures (before and after writes) whose records are delivered
    /// again: every rocket ends equal to the in-order fold, with nothing parked.
    #[test]
    fn any_delivery_converges_to_the_in_order_fold(
        seed in any::<u64>(),
        channels in 1usize..5,
        max_len in 1u64..25,
        duplicate_percent in 0u64..60,
        failure_percent in 0u64..30,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut rng = Rng::new(seed);
        let flights: Vec<Vec<Envelope>> = (0..channels)
            .map(|i| {
                let len = 1 + rng.below(max_len);
                flight(&channel(&format!("rocket-{i}")), len, &mut rng)
            })
            .collect();
        let mut arrivals: Vec<&Envelope> = flights.iter().flatten().collect();
        let originals = arrivals.len();
        for i in 0..originals {
            if rng.chance(duplicate_percent) {
                arrivals.push(arrivals[i]);
            }
        }
        rng.shuffle(&mut arrivals);
        let mut pending: VecDeque<SqsMessage> = records(&arrivals).into();

        let store = FaultyStore::new(failure_percent, seed);
        let mut deliveries = 0;
        while !pending.is_empty() {
            deliveries += 1;
            prop_assert!(deliveries < 10_000, "no convergence");
            let size = (1 + rng.below(10) as usize).min(pending.len());
            let batch: Vec<SqsMessage> = pending.drain(..size).collect();
            let (failed, _) = runtime.block_on(run(&store, batch.clone()));
            let failed: HashSet<String> = failed.into_iter().collect();
            pending.extend(batch.into_iter().filter(|r| failed.contains(r.message_id.as_ref().unwrap())));
        }

        for flight in &flights {
            let c = &flight[0].channel;
            let stored = runtime.block_on(store.inner.rocket(c)).unwrap().unwrap();
            let expected = Rocket::fold(c.clone(), flight, Utc::now());
            prop_assert!(stored.same_state(&expected), "{stored:?}\n!=\n{expected:?}");
            prop_assert_eq!(stored.pending_messages, 0);
            let history = runtime.block_on(store.inner.history(c, 0, 1000)).unwrap().unwrap();
            prop_assert_eq!(&history, flight);
        }
    }
}

/// Applies a batch as Lambda's handler does, with the default settings, a dead-letter queue and
/// record visibility that only record what they are asked.
async fn apply_batch<S: rockets::ports::ChannelStore, R: rockets::ports::QueueRecord>(
    store: &S,
    records: &[R],
) -> Result<
    (
        aws_lambda_events::event::sqs::SqsBatchResponse,
        apply::BatchSummary,
    ),
    apply::ApplyError,
> {
    let stand_in = rockets_testkit::RecordingQueue::default();
    apply::apply_batch(
        store,
        &stand_in,
        &stand_in,
        &apply::Settings::default(),
        records,
    )
    .await
}

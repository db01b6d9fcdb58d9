//! What one flooded channel costs: a channel holding 0, 1,000 or 100,000 messages parked
//! behind a gap receives more, on each backend, while another channel's batches are timed
//! beside it.

use std::time::Instant;

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::Utc;
use rockets::message::{Channel, Envelope};
use rockets::ordering::{ParkedView, Timeline};
use rockets::ports::{ChannelStore, CommitOutcome};
use rockets_aws::provision::ensure_table;
use rockets_aws::{DynamoStore, emulator_config};
use rockets_embedded::EmbeddedStore;
use rockets_testkit::{CountingStore, Rng, channel, flight, sqs_record, unique_name};
use rockets_tools::capacity::CapacityMeter;

use crate::stats::{Summary, millis};

/// One backend with one channel's parked set at one size.
pub struct Row {
    pub backend: &'static str,
    pub parked: usize,
    /// A batch of ten more messages for the flooded channel.
    pub flooded_batch_ms: Summary,
    /// The most parked messages one of those batches read.
    pub parked_read: usize,
    /// DynamoDB read units one of those batches consumed, on average.
    pub read_units: Option<f64>,
    /// A batch of ten in-order messages for another channel, meanwhile.
    pub other_batch_ms: Summary,
    /// Filling the parked set took this long (not part of any batch).
    pub fill_seconds: f64,
}

/// Parks messages 2..=parked+1 of `channel`, committing in chunks as the apply side would.
pub async fn fill<S: ChannelStore>(store: &S, channel: &Channel, parked: usize, rng: &mut Rng) {
    let messages = flight(channel, parked as u64 + 1, rng);
    for chunk in messages[1..].chunks(100) {
        loop {
            let snapshot = store.load(channel, 1, &[]).await.expect("load");
            let (rocket, version) = match snapshot {
                Some(s) => (s.rocket, s.version),
                None => (rockets::rocket::Rocket::new(channel.clone(), Utc::now()), 0),
            };
            // The chunk is new, so a partial view is enough: nothing in it is parked yet.
            let view = ParkedView {
                first: Vec::new(),
                complete: version == 0,
                probed: Vec::new(),
            };
            let mut timeline = Timeline::load(rocket, view, Utc::now());
            for m in chunk {
                timeline.receive(m.clone());
            }
            let change = timeline.into_change().expect("parks");
            if store.commit(version, &change).await.expect("commit") == CommitOutcome::Committed {
                break;
            }
        }
    }
}

fn records(messages: &[Envelope]) -> Vec<SqsMessage> {
    messages
        .iter()
        .map(|m| sqs_record(&unique_name("bench"), m))
        .collect()
}

async fn measure<S: ChannelStore>(
    backend: &'static str,
    store: &CountingStore<S>,
    parked: usize,
    batches: usize,
    read_units: impl Fn() -> Option<f64>,
) -> Row {
    let stand_in = rockets_testkit::RecordingQueue::default();
    let settings = apply::Settings {
        park_limit: u64::MAX,
        ..apply::Settings::default()
    };
    let mut rng = Rng::new(parked as u64);
    let flooded = channel(&unique_name("flooded"));
    let begun = Instant::now();
    fill(store, &flooded, parked, &mut rng).await;
    let fill_seconds = begun.elapsed().as_secs_f64();
    let more = flight(&flooded, (parked + 2 + batches * 10) as u64, &mut rng);
    let mut flooded_ms = Vec::new();
    let mut other_ms = Vec::new();
    let mut parked_read = 0;
    let units_before = read_units();
    store.take_most_parked_read();
    for (i, batch) in more[parked + 1..].chunks(10).take(batches).enumerate() {
        let began = Instant::now();
        let (response, _) =
            apply::apply_batch(store, &stand_in, &stand_in, &settings, &records(batch))
                .await
                .expect("apply");
        assert!(response.batch_item_failures.is_empty());
        flooded_ms.push(millis(began.elapsed()));
        parked_read = parked_read.max(store.take_most_parked_read());

        let other = flight(&channel(&format!("{flooded}-other-{i}")), 10, &mut rng);
        let began = Instant::now();
        apply::apply_batch(store, &stand_in, &stand_in, &settings, &records(&other))
            .await
            .expect("apply");
        other_ms.push(millis(began.elapsed()));
    }
    let read_units = units_before
        .zip(read_units())
        .map(|(before, after)| (after - before) / batches as f64);
    Row {
        backend,
        parked,
        flooded_batch_ms: Summary::of(flooded_ms),
        parked_read,
        read_units,
        other_batch_ms: Summary::of(other_ms),
        fill_seconds,
    }
}

/// Every size on the embedded store, and on DynamoDB at each emulator endpoint given with the
/// sizes to measure there.
pub fn run(
    sizes: &[usize],
    batches: usize,
    dynamodb: &[(&'static str, String, Vec<usize>)],
) -> Vec<Row> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut rows = Vec::new();
        let store = CountingStore::new(EmbeddedStore::new());
        for &parked in sizes {
            rows.push(measure("embedded", &store, parked, batches, || None).await);
        }
        for (backend, endpoint, sizes) in dynamodb {
            let config = emulator_config(endpoint).await;
            let meter = CapacityMeter::new();
            let client = meter.client(&config);
            let table = unique_name("parked");
            ensure_table(&client, &table).await.expect("table");
            let store = CountingStore::new(DynamoStore::new(client, table));
            for &parked in sizes {
                let units = || Some(meter.capacity().read_units());
                rows.push(measure(backend, &store, parked, batches, units).await);
            }
        }
        rows
    })
}

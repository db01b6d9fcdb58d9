//! What one flooded channel costs: a channel holding 0, 1,000 or 100,000 messages parked
//! behind a gap receives more, on each backend, while another channel's batches are timed
//! beside it.

use crate::mark;
use std::fmt::Write as _;
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
                complete: version == 0,
                ..ParkedView::none()
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

/// A batch's cost and another channel's latency with 0, 1,000 and 100,000 messages parked in
/// one channel, on every backend.
pub fn report(quick: bool) -> String {
    let sizes: &[usize] = if quick {
        &[0, 1_000, 10_000]
    } else {
        &[0, 1_000, 100_000]
    };
    // Moto's requests take time in proportion to the whole table (every channel's alike), so
    // filling it with 100,000 items would take most of an hour: it stops at 10,000.
    let mut dynamodb = Vec::new();
    for (name, var, largest) in [
        ("DynamoDB on moto", "ROCKETS_TEST_MOTO", 10_000),
        ("DynamoDB Local", "ROCKETS_TEST_DYNAMODB_LOCAL", usize::MAX),
    ] {
        if let Ok(endpoint) = std::env::var(var) {
            let sizes = sizes.iter().map(|&n| n.min(largest)).collect();
            dynamodb.push((name, endpoint, sizes));
        }
    }
    let rows = run(sizes, if quick { 10 } else { 30 }, &dynamodb);
    let mut out = String::from(
        "| backend | parked in the channel | its next batch of 10 (ms) | parked messages that batch read | read units per batch | another channel's batch of 10 meanwhile (ms) | filling the channel (s) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let window = apply::Settings::default().park_window;
    let mut bounded = true;
    for row in &rows {
        bounded &= row.parked_read <= window + 10;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} |",
            row.backend,
            row.parked,
            row.flooded_batch_ms.show(2),
            row.parked_read,
            row.read_units.map_or("–".into(), |u| format!("{u:.1}")),
            row.other_batch_ms.show(2),
            row.fill_seconds
        );
    }
    if dynamodb.is_empty() {
        out.push_str(
            "\nDynamoDB not measured: the emulators are not running (scripts/bench starts them).\n",
        );
    }
    let _ = writeln!(
        out,
        "\nOne channel has messages 2..N parked behind a missing message 1; each sample applies ten \
         more of its messages (they park too) and then ten in-order messages of another channel. A \
         load reads the channel's state and at most its first {window} parked messages, plus the \
         batch's own numbers when the channel parks more than that, so what a batch reads and \
         writes does not grow with N. Target: no batch reads more than {} parked messages: {}. \
         The park limit (`PARK_LIMIT`, default {}) is lifted here to reach 100,000. Moto's \
         requests slow down with the size of the whole table, for every channel alike (the other \
         channel's column), so it is measured up to 10,000.",
        window + 10,
        mark(bounded),
        apply::Settings::PARK_LIMIT,
    );
    out
}

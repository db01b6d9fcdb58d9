//! DynamoDB's partition keys at cloud scale: how many write units a second each partition key
//! of the table and of the listing index takes, for a traffic shape, as the store itself
//! accounts for its commits; and what a page of the listing reads.
//!
//! Every rocket's messages go through the real apply handler, one record a batch (a rocket
//! sending about once a second leaves Lambda nothing to batch), against the in-memory store.
//! Each commit is priced by `rockets_tools::billing`, from the very items the DynamoDB store
//! builds (`TableLayout`), and bills them as DynamoDB does (a test holds it to DynamoDB Local's
//! reported capacity). The arrivals of all rockets are interleaved at random, each rocket's in
//! its own order, and every `rate` arrivals make a second; the busiest second of each partition
//! key is the figure.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use rockets::message::{Channel, Envelope};
use rockets::ordering::ChannelChange;
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, RocketReader, StoreError};
use rockets::rocket::Rocket;
use rockets_aws::TableLayout;
use rockets_embedded::EmbeddedStore;
use rockets_testkit::{Rng, flight, sqs_record};
use rockets_tools::billing::{KeyedWrite, Target, commit_writes, listing_entry_size};

/// A write unit's limit on one partition key, a second.
pub const KEY_WRITE_LIMIT: f64 = 1000.0;

/// How one rocket's messages arrive.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub name: &'static str,
    /// Each rocket's messages in a random order, a tenth of them sent twice.
    pub shuffled: bool,
}

/// A shape's whole result.
#[derive(Clone, Debug)]
pub struct Model {
    pub rockets: usize,
    pub arrivals: usize,
    pub rate: usize,
    pub seconds: usize,
    /// Write units per message (first sends): state, history, parked, the listing index.
    pub units_per_message: [f64; 4],
    /// The write units of the busiest key of the table, and of the listing index, in its
    /// busiest second.
    pub table: u64,
    pub index: u64,
    /// The rockets as the last commit left them, for the read side.
    pub rockets_after: Vec<Rocket>,
}

/// The in-memory store, noting what each commit would write to the DynamoDB table.
struct Accounted {
    inner: EmbeddedStore,
    layout: TableLayout,
    writes: Mutex<Vec<KeyedWrite>>,
}

impl ChannelStore for Accounted {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[rockets::message::MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        self.inner.load(channel, window, probe).await
    }

    async fn commit(
        &self,
        expected_version: u64,
        change: &ChannelChange,
    ) -> Result<CommitOutcome, StoreError> {
        let before = self.inner.rocket(&change.rocket.channel).await?;
        let outcome = self.inner.commit(expected_version, change).await?;
        if outcome == CommitOutcome::Committed {
            let writes = commit_writes(&self.layout, before.as_ref(), expected_version, change);
            self.writes.lock().unwrap().extend(writes);
        }
        Ok(outcome)
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[rockets::message::MessageNumber],
    ) -> Result<Vec<Envelope>, StoreError> {
        self.inner.applied(channel, numbers).await
    }
}

/// Runs `rockets` rockets of `per_rocket` messages, `rate` arrivals a second, and measures the
/// busiest keys.
pub fn run(shape: Shape, rockets: usize, per_rocket: u64, rate: usize) -> Model {
    let mut rng = Rng::new(7 + rockets as u64 + u64::from(shape.shuffled));
    let flights: Vec<Vec<Envelope>> = (0..rockets)
        .map(|_| {
            let channel = rng.uuid_channel();
            flight(&channel, per_rocket, &mut rng)
        })
        .collect();
    // Each rocket's arrivals in its own order; then all rockets' interleaved at random.
    let mut own: Vec<std::vec::IntoIter<Envelope>> = flights
        .iter()
        .map(|flight| {
            let mut arrivals = flight.clone();
            if shape.shuffled {
                for message in flight {
                    if rng.chance(10) {
                        arrivals.push(message.clone());
                    }
                }
                rng.shuffle(&mut arrivals);
            }
            arrivals.into_iter()
        })
        .collect();
    let mut slots: Vec<u32> = own
        .iter()
        .enumerate()
        .flat_map(|(i, a)| std::iter::repeat_n(i as u32, a.len()))
        .collect();
    rng.shuffle(&mut slots);

    let store = Accounted {
        inner: EmbeddedStore::new(),
        layout: TableLayout::default(),
        writes: Mutex::new(Vec::new()),
    };
    let (mut table, mut index) = (0, 0);
    let mut totals = [0u64; 4];
    // This second's units per key, in the table and in the index.
    let mut second: [HashMap<String, u64>; 2] = Default::default();
    let close_second = |second: &mut [HashMap<String, u64>; 2], peaks: [&mut u64; 2]| {
        for (units, peak) in second.iter_mut().zip(peaks) {
            *peak = units.drain().map(|(_, u)| u).max().unwrap_or(0).max(*peak);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let seconds = slots.len().div_ceil(rate);
    runtime.block_on(async {
        for (slot, rocket) in slots.iter().enumerate() {
            if slot > 0 && slot % rate == 0 {
                close_second(&mut second, [&mut table, &mut index]);
            }
            let message = own[*rocket as usize].next().expect("one arrival a slot");
            let record = sqs_record(&slot.to_string(), &message);
            apply_batch(&store, &[record]).await.expect("applied");
            for write in std::mem::take(&mut *store.writes.lock().unwrap()) {
                let (kind, in_index) = match write.target {
                    Target::State => (0, false),
                    Target::History => (1, false),
                    Target::Parked => (2, false),
                    Target::Listing => (3, true),
                };
                totals[kind] += write.units;
                *second[usize::from(in_index)]
                    .entry(write.partition)
                    .or_default() += write.units;
            }
        }
    });
    close_second(&mut second, [&mut table, &mut index]);
    let messages = (rockets as u64 * per_rocket) as f64;
    let rockets_after = runtime.block_on(async {
        let mut all = Vec::with_capacity(rockets);
        for flight in &flights {
            if let Some(rocket) = store.inner.rocket(&flight[0].channel).await.expect("read") {
                all.push(rocket);
            }
        }
        all
    });
    Model {
        rockets,
        arrivals: slots.len(),
        rate,
        seconds,
        units_per_message: totals.map(|t| t as f64 / messages),
        table,
        index,
        rockets_after,
    }
}

/// What a page of the listing reads: the whole index, in the store's parallel segments.
#[derive(Clone, Debug)]
pub struct PageCost {
    pub bytes: usize,
    /// Eventually consistent read units: half a unit per 4 KB a call returns, at least half a
    /// unit a call.
    pub read_units: f64,
    /// Rounds of calls, at DynamoDB's 1 MB a call, with the index spread evenly over the
    /// segments.
    pub rounds: usize,
}

/// Scan calls a page makes at once, as the DynamoDB store reads the listing.
const LISTING_SEGMENTS: usize = 32;

/// What a page reads from the listing of `rockets`.
pub fn page_cost(rockets: &[Rocket]) -> PageCost {
    let bytes: usize = rockets.iter().map(listing_entry_size).sum();
    let per_segment = bytes.div_ceil(LISTING_SEGMENTS);
    let calls_per_segment = per_segment.div_ceil(1 << 20).max(1);
    let calls = LISTING_SEGMENTS * calls_per_segment;
    PageCost {
        bytes,
        read_units: (bytes.div_ceil(4096) as f64 * 0.5).max(calls as f64 * 0.5),
        rounds: calls_per_segment,
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

/// The busiest partition keys of the table and the listing index, and what a page of the
/// listing reads.
pub fn report(quick: bool) -> String {
    let (rockets, per_rocket) = if quick { (10_000, 10) } else { (100_000, 20) };
    let rate = rockets;
    let tenth = KEY_WRITE_LIMIT / 10.0;
    let mut out = String::from(
        "| traffic | busiest table key (WCU/s) | busiest listing index key (WCU/s) | of a key's limit | write units per message: state, history, parked, listing index |\n|---|---|---|---|---|\n",
    );
    let mut notes = String::new();
    let mut busiest_overall: u64 = 0;
    let mut rockets_after = Vec::new();
    for shape in [
        Shape {
            name: "in order",
            shuffled: false,
        },
        Shape {
            name: "shuffled + 10% resent",
            shuffled: true,
        },
    ] {
        let begun = Instant::now();
        let model = run(shape, rockets, per_rocket, rate);
        let busiest = model.table.max(model.index);
        busiest_overall = busiest_overall.max(busiest);
        let [state, history, parked, index] = model.units_per_message;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1}% | {state:.2}, {history:.2}, {parked:.2}, {index:.2} |",
            shape.name,
            model.table,
            model.index,
            busiest as f64 / KEY_WRITE_LIMIT * 100.0
        );
        let _ = writeln!(
            notes,
            "- {}: {} arrivals of {} rockets over {} s ({} a second), {:.1} s to model.",
            shape.name,
            model.arrivals,
            model.rockets,
            model.seconds,
            model.rate,
            begun.elapsed().as_secs_f64(),
        );
        rockets_after = model.rockets_after;
    }
    let page = page_cost(&rockets_after);
    let verdict = crate::mark(busiest_overall as f64 <= tenth);
    let _ = writeln!(
        out,
        "\n{notes}\n\
         Target: at {rate} messages a second across {rockets} rockets, no partition key of the \
         table or of the listing index above a tenth of DynamoDB's {:.0} write units a second: \
         {verdict} (the busiest takes {busiest_overall}).\n\n\
         Every message goes through the real apply handler, one record a batch (a rocket sending \
         about once a second leaves Lambda nothing to batch), and each commit is priced by the \
         DynamoDB store's own account of what it writes (`rockets_tools::billing`: the items it \
         builds, billed as DynamoDB bills them, which a test holds to DynamoDB Local's reported \
         capacity). All rockets' arrivals are interleaved at random, each rocket's in its own \
         order, and every {rate} arrivals make a second; each figure is a key's busiest second. \
         Both the table and the listing index are keyed by channel, so a key takes one rocket's \
         writes and no more.\n\n\
         A page of the listing over these {} rockets reads the whole index once: {:.1} MB, \
         {:.0} read units (eventually consistent, $ {:.5} a page), in {} round(s) of {} parallel \
         scan calls.",
        KEY_WRITE_LIMIT,
        rockets_after.len(),
        page.bytes as f64 / 1e6,
        page.read_units,
        page.read_units * 0.125 / 1e6,
        page.rounds,
        LISTING_SEGMENTS,
    );
    out
}

//! DynamoDB's partition keys at cloud scale: how many write units a second each partition key
//! of the table and of every listing index takes, for a traffic shape, as the store itself
//! accounts for its commits; and what a page of the listing reads for each shard count.
//!
//! Every rocket's messages go through the real apply handler, one record a batch (a rocket
//! sending about once a second leaves Lambda nothing to batch), against the in-memory store.
//! Each commit is priced by `rockets_tools::billing`, from the very items the DynamoDB store
//! builds (`TableLayout`), and bills them as DynamoDB does (a test holds it to DynamoDB Local's reported
//! capacity). The arrivals of all rockets are interleaved at random, each rocket's in its own
//! order, and every `rate` arrivals make a second; the busiest second of each partition key is
//! the figure. A rocket's shard depends only on its channel, so one pass serves every shard
//! count.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use rockets::listing::merge::{Merged, PartitionRead, first_read_limit, merge};
use rockets::listing::{Order, SortKey};
use rockets::message::{Channel, Envelope};
use rockets::ordering::ChannelChange;
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, RocketReader, StoreError};
use rockets::rocket::{Rocket, Status};
use rockets_aws::{ListingShards, TableLayout, index_attribute};
use rockets_embedded::EmbeddedStore;
use rockets_testkit::{Rng, flight, sqs_record};
use rockets_tools::billing::{KeyedWrite, Target, commit_writes};

/// A write unit's limit on one partition key, a second.
pub const KEY_WRITE_LIMIT: f64 = 1000.0;

/// How one rocket's messages arrive.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub name: &'static str,
    /// Each rocket's messages in a random order, a tenth of them sent twice.
    pub shuffled: bool,
}

/// The busiest partition key's write units in its busiest second.
#[derive(Clone, Debug, Default)]
pub struct Peak {
    pub units: u64,
    /// What it is: the table, or an index's name.
    pub what: String,
}

/// What one shape did at one shard count.
#[derive(Clone, Debug)]
pub struct Row {
    pub shards: u16,
    /// The busiest key of the table (a channel).
    pub table: Peak,
    /// The busiest key of any listing index, and which index.
    pub index: Peak,
    /// Every index's busiest key, by sort key.
    pub by_index: Vec<(SortKey, u64)>,
}

/// A shape's whole result.
#[derive(Clone, Debug)]
pub struct Model {
    pub rockets: usize,
    pub arrivals: usize,
    pub rate: usize,
    pub seconds: usize,
    /// Write units per message (first sends), by table item and for the indexes.
    pub units_per_message: [f64; 4],
    pub rows: Vec<Row>,
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

/// A channel named as the challenge's senders name them, a random UUID.
fn uuid(rng: &mut Rng) -> Channel {
    let hex = |rng: &mut Rng, digits: usize| {
        (0..digits)
            .map(|_| char::from_digit(rng.below(16) as u32, 16).unwrap())
            .collect::<String>()
    };
    let name = format!(
        "{}-{}-{}-{}-{}",
        hex(rng, 8),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 12)
    );
    Channel::parse(&name).expect("a UUID is a channel")
}

/// Runs `rockets` rockets of `per_rocket` messages, `rate` arrivals a second, and measures the
/// busiest keys at each of `shard_counts`.
pub fn run(
    shape: Shape,
    rockets: usize,
    per_rocket: u64,
    rate: usize,
    shard_counts: &[u16],
) -> Model {
    let mut rng = Rng::new(7 + rockets as u64 + u64::from(shape.shuffled));
    let flights: Vec<Vec<Envelope>> = (0..rockets)
        .map(|_| {
            let channel = uuid(&mut rng);
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
    let shards: Vec<ListingShards> = shard_counts
        .iter()
        .map(|&n| ListingShards::new(n).expect("a valid shard count"))
        .collect();
    let mut table_peak = Peak::default();
    let mut index_peaks: Vec<Vec<u64>> = vec![vec![0; SortKey::ALL.len()]; shards.len()];
    let mut totals = [0u64; 4];
    // This second's units per key: the table's by channel, the indexes' by shard count, index,
    // status and shard.
    let mut table_second: HashMap<Channel, u64> = HashMap::new();
    let mut index_second: HashMap<(usize, SortKey, Status, u16), u64> = HashMap::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let seconds = slots.len().div_ceil(rate);
    let close_second = |table_second: &mut HashMap<Channel, u64>,
                        index_second: &mut HashMap<(usize, SortKey, Status, u16), u64>,
                        table_peak: &mut Peak,
                        index_peaks: &mut Vec<Vec<u64>>| {
        if let Some((channel, units)) = table_second.iter().max_by_key(|(_, u)| **u)
            && *units > table_peak.units
        {
            *table_peak = Peak {
                units: *units,
                what: channel.to_string(),
            };
        }
        for ((at, key, _, _), units) in index_second.iter() {
            let peak = &mut index_peaks[*at][key.index()];
            *peak = (*peak).max(*units);
        }
        table_second.clear();
        index_second.clear();
    };
    runtime.block_on(async {
        for (slot, rocket) in slots.iter().enumerate() {
            if slot > 0 && slot % rate == 0 {
                close_second(
                    &mut table_second,
                    &mut index_second,
                    &mut table_peak,
                    &mut index_peaks,
                );
            }
            let message = own[*rocket as usize].next().expect("one arrival a slot");
            let record = sqs_record(&slot.to_string(), &message);
            apply_batch(&store, &[record]).await.expect("applied");
            let writes = std::mem::take(&mut *store.writes.lock().unwrap());
            // The channel's shard at each count; a write's status is its partition's (the
            // layout accounts with one shard, where a partition is its status's name).
            let shard_at: Vec<u16> = shards.iter().map(|s| s.of(&message.channel)).collect();
            for write in &writes {
                let (slot, key) = match write.target {
                    Target::State => (0, None),
                    Target::History => (1, None),
                    Target::Parked => (2, None),
                    Target::Index(key) => (3, Some(key)),
                };
                totals[slot] += write.units;
                match key {
                    None => {
                        *table_second.entry(message.channel.clone()).or_default() += write.units
                    }
                    Some(key) => {
                        let status = ListingShards::status_of(&write.partition)
                            .expect("an index partition names its status");
                        for (at, shard) in shard_at.iter().enumerate() {
                            *index_second.entry((at, key, status, *shard)).or_default() +=
                                write.units;
                        }
                    }
                }
            }
        }
    });
    close_second(
        &mut table_second,
        &mut index_second,
        &mut table_peak,
        &mut index_peaks,
    );
    let messages = (rockets as u64 * per_rocket) as f64;
    let rows = shards
        .iter()
        .zip(index_peaks)
        .map(|(count, peaks)| {
            let (busiest, units) = SortKey::ALL
                .iter()
                .map(|k| (*k, peaks[k.index()]))
                .max_by_key(|(_, u)| *u)
                .expect("nine indexes");
            Row {
                shards: count.count(),
                table: table_peak.clone(),
                index: Peak {
                    units,
                    what: format!("by-{}", busiest.as_str()),
                },
                by_index: SortKey::ALL
                    .iter()
                    .map(|k| (*k, peaks[k.index()]))
                    .collect(),
            }
        })
        .collect();
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
        rows,
        rockets_after,
    }
}

/// What reading a listing page costs at one shard count.
#[derive(Clone, Debug)]
pub struct PageCost {
    /// Index queries for a page of every status, and rounds of them (the most over every sort
    /// key, both orders).
    pub queries: usize,
    pub most_rounds: usize,
    /// First pages that needed a second round, of all measured.
    pub second_rounds: usize,
    pub pages: usize,
    /// Read units for the index queries of a page (eventually consistent: half a unit per 4 KB
    /// a query returns, at least half a unit), the mean over every sort key, both orders.
    pub index_read_units: f64,
}

/// An index entry's size as a query returns it: the table's key, the index's key.
fn entry_bytes(channel: &Channel, partition: &str, value: &str) -> usize {
    "pk".len()
        + channel.as_str().len()
        + "sk".len()
        + "state".len()
        + "st".len()
        + partition.len()
        + "by_xxxxxxxx".len()
        + value.len()
}

/// The first page of `limit` of every sort key, both ways, read as the DynamoDB store reads
/// it: each shard of every status, merged.
pub fn page_cost(rockets: &[Rocket], shards: ListingShards, limit: usize) -> PageCost {
    let want = limit + 1;
    let first = first_read_limit(want, usize::from(shards.count()));
    let layout = TableLayout {
        shards,
        ..TableLayout::default()
    };
    // Each rocket's index values, as the store writes them into its state item.
    let items: Vec<_> = rockets.iter().map(|r| layout.state_item(1, r)).collect();
    let partitions = shards.partitions(None);
    let at: HashMap<&str, usize> = partitions
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let (mut most_rounds, mut second_rounds, mut pages, mut units) = (0, 0, 0, 0.0);
    for key in SortKey::ALL {
        let mut entries: Vec<Vec<(String, usize)>> = vec![Vec::new(); partitions.len()];
        let attribute = index_attribute(key);
        for (rocket, item) in rockets.iter().zip(&items) {
            let partition = shards.partition_of(rocket.status, &rocket.channel);
            let value = item[&attribute]
                .as_s()
                .expect("index values are text")
                .clone();
            let bytes = entry_bytes(&rocket.channel, &partition, &value);
            entries[at[partition.as_str()]].push((value, bytes));
        }
        for list in &mut entries {
            list.sort_unstable();
        }
        for order in [Order::Asc, Order::Desc] {
            let in_order = |p: &Vec<(String, usize)>| -> Vec<(String, usize)> {
                match order {
                    Order::Asc => p.clone(),
                    Order::Desc => p.iter().rev().cloned().collect(),
                }
            };
            let ordered: Vec<Vec<(String, usize)>> = entries.iter().map(in_order).collect();
            let (rounds, read_units) = match order {
                Order::Asc => read_page(&ordered, want, first, |e| e),
                Order::Desc => read_page(&ordered, want, first, std::cmp::Reverse),
            };
            most_rounds = most_rounds.max(rounds);
            second_rounds += usize::from(rounds > 1);
            pages += 1;
            units += read_units;
        }
    }
    PageCost {
        queries: partitions.len(),
        most_rounds,
        second_rounds,
        pages,
        index_read_units: units / pages as f64,
    }
}

/// Reads a page from partitions already in the page's order; the rounds it took and the read
/// units its queries cost.
fn read_page<K: Ord + Clone>(
    partitions: &[Vec<(String, usize)>],
    want: usize,
    first: usize,
    key: impl Fn(String) -> K,
) -> (usize, f64) {
    let mut taken = vec![0usize; partitions.len()];
    let mut units = 0.0;
    let mut read = |i: usize, limit: usize, reads: &mut Vec<PartitionRead<K>>| {
        let part = &partitions[i];
        let slice = &part[taken[i]..(taken[i] + limit).min(part.len())];
        let bytes: usize = slice.iter().map(|(_, b)| b).sum();
        units += (bytes.div_ceil(4096).max(1)) as f64 * 0.5;
        taken[i] += slice.len();
        let r = &mut reads[i];
        r.entries.extend(slice.iter().map(|(v, _)| key(v.clone())));
        r.last = r.entries.last().cloned();
        r.more = taken[i] < part.len();
    };
    let mut reads: Vec<PartitionRead<K>> = vec![PartitionRead::default(); partitions.len()];
    for i in 0..partitions.len() {
        read(i, first, &mut reads);
    }
    for round in 1..=3 {
        match merge(&reads, want) {
            Merged::Page(_) => return (round, units),
            Merged::ReadOn(on) => {
                for i in on {
                    read(i, want, &mut reads);
                }
            }
        }
    }
    panic!("a page took more than two rounds");
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

/// The busiest partition keys of the table and the listing indexes at each shard count, and
/// what a page of the listing reads.
pub fn report(quick: bool) -> String {
    let (rockets, per_rocket) = if quick { (10_000, 10) } else { (100_000, 20) };
    let rate = rockets;
    let shard_counts: &[u16] = &[1, 1024, 4096, 6144, 8192];
    let tenth = KEY_WRITE_LIMIT / 10.0;
    let mut out = String::from(
        "| traffic | listing shards | busiest table key (WCU/s) | busiest index key (WCU/s) | its index | of a key's limit |\n|---|---|---|---|---|---|\n",
    );
    let mut notes = String::new();
    let mut rockets_after = Vec::new();
    // Per shape, the fewest shards measured that keep every key at a tenth of its limit.
    let mut enough: Vec<Option<u16>> = Vec::new();
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
        let model = run(shape, rockets, per_rocket, rate, shard_counts);
        let busiest = |row: &Row| row.table.units.max(row.index.units) as f64;
        for row in &model.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1}% |",
                shape.name,
                row.shards,
                row.table.units,
                row.index.units,
                row.index.what,
                busiest(row) / KEY_WRITE_LIMIT * 100.0
            );
        }
        enough.push(
            model
                .rows
                .iter()
                .find(|row| busiest(row) <= tenth)
                .map(|row| row.shards),
        );
        let [state, history, parked, indexes] = model.units_per_message;
        let widest = model.rows.last().expect("a row");
        let per_index: Vec<String> = widest
            .by_index
            .iter()
            .map(|(key, units)| format!("{} {units}", key.as_str()))
            .collect();
        let _ = writeln!(
            notes,
            "- {}: {} arrivals of {} rockets over {} s ({} a second), {:.1} s to model; write \
             units per message: state {state:.2}, history {history:.2}, parked {parked:.2}, \
             indexes {indexes:.2}. Busiest key of each index at {} shards: {}.",
            shape.name,
            model.arrivals,
            model.rockets,
            model.seconds,
            model.rate,
            begun.elapsed().as_secs_f64(),
            widest.shards,
            per_index.join(", ")
        );
        rockets_after = model.rockets_after;
    }
    let mut pages = String::from(
        "| listing shards | index queries per page (every status) | rounds of queries (most) | first pages needing a second round | read units per page: index queries | BatchGetItem of the page's rockets |\n|---|---|---|---|---|---|\n",
    );
    for &count in shard_counts {
        let shards = rockets_aws::ListingShards::new(count).expect("valid");
        let cost = page_cost(&rockets_after, shards, 100);
        let _ = writeln!(
            pages,
            "| {count} | {} | {} | {} of {} | {:.1} | 50.0 |",
            cost.queries, cost.most_rounds, cost.second_rounds, cost.pages, cost.index_read_units
        );
    }
    let verdict = match enough.into_iter().collect::<Option<Vec<u16>>>() {
        Some(counts) => format!(
            "met with `ListingShards` {} (every key at most {tenth:.0} WCU/s)",
            counts.into_iter().max().unwrap_or(1)
        ),
        None => format!(
            "**missed** at every shard count measured (up to {})",
            shard_counts[shard_counts.len() - 1]
        ),
    };
    let _ = writeln!(
        out,
        "\n{notes}\n\
         Target: at {rate} messages a second across {rockets} rockets, no partition key of the \
         table or of any index above a tenth of DynamoDB's {:.0} write units a second: {verdict}.\n\n\
         Every message goes through the real apply handler, one record a batch (a rocket sending \
         about once a second leaves Lambda nothing to batch), and each commit is priced by the \
         DynamoDB store's own account of what it writes (`TableLayout::commit_writes`: the items it \
         builds, billed as DynamoDB bills them, which a test holds to DynamoDB Local's reported \
         capacity). All rockets' arrivals are interleaved at random, each rocket's in its own \
         order, and every {rate} arrivals make a second; each figure is a key's busiest second. A \
         rocket's index entries go to shard `FNV-1a(channel) mod shards` of its status, so keys \
         share the load as evenly as the channels hash, which is why the busiest key stays above \
         the mean.\n\n\
         What the first page of 100 reads, every sort key both ways, over the rockets as the \
         model left them (eventually consistent: half a unit per 4 KB a query returns, at least \
         half a unit a query; then one BatchGetItem of the page's 100 state items, each under \
         4 KB, half a unit each). A page is two rounds of requests, the index queries (sent 64 \
         at a time) and the BatchGetItem, and three when a shard holds more of the page than \
         the first round read from it:\n\n{pages}",
        KEY_WRITE_LIMIT,
    );
    out
}

/// The listing shards that keep every DynamoDB key at a tenth of its limit at 100,000 messages
/// a second, as the partition model finds.
pub(crate) const SHARDS_AT_SCALE: u16 = 6144;

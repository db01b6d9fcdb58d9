//! `rockets-bench`: measures the pipeline, the core, listing at scale and cold starts, prints
//! a report and writes it as Markdown. `scripts/bench` builds what it needs and runs it.

mod coldstart;
mod cost;
mod durable;
mod launch;
mod listing;
mod parked;
mod partitions;
mod pipeline;
mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use rockets::message::Envelope;
use rockets::ordering::Timeline;
use rockets_testkit::{Rng, channel, flight};
use stats::Summary;

struct Options {
    quick: bool,
    /// Run only these sections (core, listing, pipeline, launch, cost, parked, coldstart); all
    /// when empty.
    only: Vec<String>,
    out: PathBuf,
    lambda_dir: PathBuf,
    /// The pipeline section at these concurrencies only (1, 8, 64 when empty).
    concurrency: Vec<usize>,
    /// The pipeline section against these servers only (floor, handoff, memory, durable; all
    /// when empty).
    servers: Vec<String>,
}

/// The allocator `rockets-local` runs with, so that the in-process server is the one measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A child process spinning at the lowest priority (nice 19) until dropped: it takes little
/// time from anything else, and keeps the vCPUs from going idle between one request and the
/// next.
struct KeepAwake(std::process::Child);

impl KeepAwake {
    fn start() -> Self {
        let child = std::process::Command::new(std::env::current_exe().expect("own path"))
            .arg("--spin")
            .spawn()
            .expect("the spinner starts");
        std::thread::sleep(Duration::from_millis(100));
        KeepAwake(child)
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--spin`: what [`KeepAwake`] runs.
fn spin() -> ! {
    // SAFETY: changes only this process's own priority.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    loop {
        std::hint::spin_loop();
    }
}

fn options() -> Options {
    let mut options = Options {
        quick: false,
        only: Vec::new(),
        out: PathBuf::from("BENCHMARKS.md"),
        lambda_dir: PathBuf::from("target/lambda"),
        concurrency: Vec::new(),
        servers: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--spin" => spin(),
            "--only" => options.only.push(args.next().expect("--only SECTION")),
            "--out" => options.out = args.next().expect("--out FILE").into(),
            "--lambda-dir" => options.lambda_dir = args.next().expect("--lambda-dir DIR").into(),
            "--concurrency" => options.concurrency.push(
                args.next()
                    .and_then(|n| n.parse().ok())
                    .expect("--concurrency N"),
            ),
            "--server" => options.servers.push(args.next().expect("--server NAME")),
            other => {
                eprintln!(
                    "usage: rockets-bench [--quick] [--only SECTION]... [--out FILE] [--lambda-dir DIR] [--concurrency N]... [--server floor|handoff|memory|durable]...\nunknown argument {other}"
                );
                std::process::exit(2);
            }
        }
    }
    options
}

fn main() {
    // The servers run in this process as `rockets-local` runs them, with its subscriber and
    // level (`RUST_LOG`, INFO by default): what their spans and lines cost is measured too.
    rockets::telemetry::init_with_writer(std::io::sink);
    let options = options();
    let mut report = String::new();
    let _ = writeln!(report, "# Benchmarks\n");
    let _ = writeln!(report, "{}\n", machine());
    let _ = writeln!(
        report,
        "Produced by `scripts/bench`{} on {}. Every figure is the median over repeated runs, with the \
         range (min–max) in parentheses; the load generator runs on the same two cores as the server.\n",
        if options.quick { " --quick" } else { "" },
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );

    let wanted = |name: &str| options.only.is_empty() || options.only.iter().any(|o| o == name);
    let sections: [(&str, &str, &dyn Fn() -> String); 9] = [
        ("core", "The core: validating and folding", &|| {
            core(options.quick)
        }),
        ("listing", "Listing at scale (embedded store)", &|| {
            listing(options.quick)
        }),
        (
            "pipeline",
            "Pipeline throughput and latency (local server, embedded backends)",
            &|| pipeline(&options),
        ),
        ("durable", "The data directory at size", &|| {
            durable_at_size(options.quick)
        }),
        (
            "launch",
            "The challenge's way of connecting: a new connection per message, never closed",
            &|| launches(options.quick),
        ),
        ("cost", "Cost per million messages on AWS", &|| {
            costs(options.quick)
        }),
        ("parked", "What one flooded channel costs", &|| {
            flooded(options.quick)
        }),
        (
            "partitions",
            "DynamoDB partition keys at 100,000 messages a second",
            &|| partition_keys(options.quick),
        ),
        ("coldstart", "Cold start, memory and size", &|| {
            cold_starts(&options)
        }),
    ];
    for (name, title, measure) in sections {
        if wanted(name) {
            section(&mut report, title, &measure());
        }
    }
    if let Ok(notes) = std::fs::read_to_string("workbench/bench/NOTES.md") {
        report.push_str(&notes);
    }

    std::fs::write(&options.out, &report).expect("write the report");
    eprintln!("wrote {}", options.out.display());
}

fn section(report: &mut String, title: &str, body: &str) {
    println!("\n== {title}\n{body}");
    let _ = writeln!(report, "## {title}\n\n{body}");
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(String::new, |kb| {
            format!(", {:.0} GiB", kb / 1024.0 / 1024.0)
        });
    format!("Machine: {cpu}, {cores} cores{memory}.")
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// Parsing and folding, per message, over batches of ten as the apply handler sees them.
fn core(quick: bool) -> String {
    let mut rng = Rng::new(1);
    let messages: Vec<Envelope> = (0..100)
        .flat_map(|i| flight(&channel(&format!("core-{i}")), 100, &mut rng))
        .collect();
    let bodies: Vec<String> = messages.iter().map(Envelope::to_json).collect();
    let rounds = if quick { 5 } else { 15 };
    let per_message: Vec<f64> = (0..rounds)
        .map(|_| {
            let begun = Instant::now();
            for (batch, channel_messages) in bodies.chunks(10).zip(messages.chunks(10)) {
                let mut timeline = Timeline::empty(channel_messages[0].channel.clone(), Utc::now());
                for body in batch {
                    let message = Envelope::parse(body.as_bytes()).expect("valid");
                    timeline.receive(message);
                }
                std::hint::black_box(timeline.into_change());
            }
            begun.elapsed().as_secs_f64() * 1e9 / bodies.len() as f64
        })
        .collect();
    let summary = Summary::of(per_message);
    format!(
        "| figure | value | target |\n|---|---|---|\n\
         | validate + fold, per message (ns) | {} | < 1000: {} |\n\n\
         Each message is parsed from its JSON body into a validated envelope and received by a \
         channel timeline, in batches of ten per channel; `cargo bench -p rockets-bench` runs the \
         same work under criterion.\n",
        summary.show(0),
        mark(summary.median < 1000.0)
    )
}

fn listing(quick: bool) -> String {
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let mut out = String::from(
        "| rockets | fill (s) | first page of 100 (µs) | page at the middle, by cursor (µs) |\n|---|---|---|---|\n",
    );
    let mut largest_first = 0.0;
    for &size in sizes {
        let scale = listing::run(size, if quick { 50 } else { 200 });
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} |",
            scale.rockets,
            scale.fill_seconds,
            scale.first_page_us.show(0),
            scale.deep_page_us.show(0)
        );
        largest_first = scale.first_page_us.median;
    }
    let _ = writeln!(
        out,
        "\n`GET /rockets?sortBy=speed&order=desc&limit=100` straight on the store, without HTTP. \
         Target: first page under 5 ms at the largest size: {}.",
        mark(largest_first < 5_000.0)
    );
    out
}

fn pipeline(options: &Options) -> String {
    use pipeline::Server;
    let quick = options.quick;
    let mut out = String::from(
        "| server | concurrency | POSTs | accepted/s | of the floor | p50 (µs) | p99 (µs) | max (µs) | convergence (ms) | load generator's CPU share | server CPU per POST (µs) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let runs = if quick { 2 } else { 5 };
    let (mut at_64, mut durable_at_64) = (None, None);
    let mut floors = std::collections::HashMap::new();
    let (mut memory_share, mut hand_off_share) = (Vec::new(), Vec::new());
    let servers: Vec<Server> = [
        ("floor", Server::Floor),
        ("handoff", Server::HandOff),
        ("memory", Server::Pipeline { durable: false }),
        ("durable", Server::Pipeline { durable: true }),
    ]
    .into_iter()
    .filter(|(name, _)| options.servers.is_empty() || options.servers.iter().any(|s| s == name))
    .map(|(_, server)| server)
    .collect();
    let concurrencies = if options.concurrency.is_empty() {
        vec![1, 8, 64]
    } else {
        options.concurrency.clone()
    };
    // At concurrency 1 a POST's round trip on a virtual machine can be mostly the time it takes
    // to wake an idle vCPU; those rows are measured again with a spinning process at the lowest
    // priority keeping the vCPUs out of their idle state, to show the software's own time.
    let variants = concurrencies.iter().flat_map(|&c| {
        let awake: &[bool] = if c == 1 { &[false, true] } else { &[false] };
        awake.iter().map(move |&a| (c, a))
    });
    let variants: Vec<(usize, bool)> = variants.collect();
    for (server, concurrency, awake) in variants
        .iter()
        .flat_map(|&(c, a)| servers.iter().map(move |&s| (s, c, a)))
    {
        let _spinner = awake.then(KeepAwake::start);
        let (rockets, per_rocket) = match (quick, concurrency) {
            (true, _) => (50, 40),
            (false, 1) => (100, 50),
            (false, _) => (200, 100),
        };
        let results: Vec<pipeline::Run> = (0..runs)
            .map(|seed| {
                pipeline::run(pipeline::Load {
                    rockets,
                    messages_per_rocket: per_rocket,
                    concurrency,
                    duplicate_percent: 10,
                    delay: Duration::ZERO,
                    seed,
                    server,
                })
            })
            .collect();
        let pick = |f: fn(&pipeline::Run) -> f64| Summary::of(results.iter().map(f).collect());
        let (rate, p50, p99, max, converge, generator, server_cpu) = (
            pick(|r| r.accepted_per_second),
            pick(|r| r.latency_p50_us),
            pick(|r| r.latency_p99_us),
            pick(|r| r.latency_max_us),
            pick(|r| r.convergence_ms),
            pick(|r| r.generator_cpu_share * 100.0),
            pick(|r| r.server_cpu_us),
        );
        if server == Server::Floor {
            floors.insert((concurrency, awake), rate.median);
        }
        let of_floor = floors
            .get(&(concurrency, awake))
            .map_or(0.0, |floor| rate.median / floor * 100.0);
        let _ = writeln!(
            out,
            "| {}{} | {concurrency} | {} | {} | {:.0}% | {} | {} | {} | {} | {}% | {} |",
            match server {
                Server::Floor => "floor (HTTP front only)",
                Server::HandOff => "floor, each body handed to another task",
                Server::Pipeline { durable: false } => "memory",
                Server::Pipeline { durable: true } => "data directory",
            },
            if awake { ", idle vCPUs kept busy" } else { "" },
            results[0].posts,
            rate.show(0),
            of_floor,
            p50.show(0),
            p99.show(0),
            max.show(0),
            if matches!(server, Server::Floor | Server::HandOff) {
                "–".to_string()
            } else {
                converge.show(1)
            },
            generator.show(0),
            server_cpu.show(1)
        );
        match (server, concurrency) {
            (Server::Pipeline { durable: false }, 64) => at_64 = Some((rate, p99, converge)),
            (Server::Pipeline { durable: true }, 64) => durable_at_64 = Some((rate, p99)),
            _ => {}
        }
        match server {
            Server::Pipeline { durable: false } => {
                memory_share.push((concurrency, awake, of_floor))
            }
            Server::HandOff => hand_off_share.push((concurrency, awake, of_floor)),
            _ => {}
        }
    }
    // The challenge's program connects anew for every message and never closes: the release
    // server in its own process, under `rockets launch` with as many messages.
    let mut launched = false;
    for &concurrency in &concurrencies {
        for server in &servers {
            let durable = match server {
                Server::Floor | Server::HandOff => continue,
                Server::Pipeline { durable } => *durable,
            };
            let data_dir = std::env::temp_dir().join(format!(
                "rockets-bench-launch-{}-{concurrency}",
                std::process::id()
            ));
            let args = [
                format!("--concurrency-level={concurrency}"),
                format!("--max-messages={}", if quick { 2_000 } else { 22_031 }),
                "--seed=444".to_string(),
            ];
            let Some(run) = launch::run_on(
                Path::new("target/release"),
                &args,
                durable.then_some(&*data_dir),
            ) else {
                continue;
            };
            launched = true;
            let r = &run.report;
            let rate = r["acceptedPerSecond"].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "| {}, a new connection per message | {concurrency} | {} | {rate:.0} | {:.0}% | {} | {} | – | {} | – | – |",
                if durable { "data directory" } else { "memory" },
                r["accepted"],
                floors
                    .get(&(concurrency, false))
                    .map_or(0.0, |floor| rate / floor * 100.0),
                r["latencyP50Us"],
                r["latencyP99Us"],
                r.get("convergedMs")
                    .map_or("**not converged**".to_string(), ToString::to_string),
            );
        }
    }
    let verdict = |row: Option<(Summary, Summary)>, p99_target: f64| {
        row.map_or(
            ("not run".to_string(), "not run".to_string()),
            |(rate, p99)| {
                (
                    mark(rate.median >= 20_000.0).to_string(),
                    mark(p99.median < p99_target).to_string(),
                )
            },
        )
    };
    let converged = at_64.as_ref().map_or(
        "not run",
        |(_, _, converge): &(Summary, Summary, Summary)| mark(converge.median <= 1_000.0),
    );
    let (rate, p99) = verdict(at_64.map(|(rate, p99, _)| (rate, p99)), 5_000.0);
    let (durable_rate, durable_p99) = verdict(durable_at_64, 10_000.0);
    let _ = writeln!(
        out,
        "\nEach run starts a fresh `rockets-local` in process, logging as the binary does (its \
         subscriber at `RUST_LOG`, INFO by default, writing to nowhere), sends every message of \
         its rockets in a shuffled order with 10% sent twice, from that many threads over \
         keep-alive connections, and then pages through `GET /rockets` until every rocket \
         equals its in-order fold. \
         The floor is the same HTTP front serving a handler that reads each body and answers \
         202, under the same load in the same run; \"of the floor\" is the median rate as a \
         share of the floor's at that concurrency, and the load generator's CPU share is its \
         senders' CPU time over the whole process's while sending (both share the machine's \
         two cores). \
         Targets at concurrency 64: at least 20,000 messages/s ({rate}), p99 under 5 ms ({p99}), \
         convergence within 1 s ({converged}). In a data directory (the default), a 202 waits for the \
         message to be synced, and concurrent senders share each sync; targets at concurrency 64: \
         at least 20,000 messages/s ({durable_rate}) with p99 under 10 ms ({durable_p99})."
    );
    let shares = |rows: &[(usize, bool, f64)]| -> String {
        rows.iter()
            .map(|(c, awake, share)| {
                format!(
                    "{share:.0}% at concurrency {c}{}",
                    if *awake {
                        " with the vCPUs kept busy"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !memory_share.is_empty() {
        let _ = writeln!(
            out,
            "\nTarget: the in-memory pipeline at 80% of the floor or more at every concurrency: {} ({}).",
            mark(memory_share.iter().all(|(_, _, share)| *share >= 80.0)),
            shares(&memory_share)
        );
    }
    if !hand_off_share.is_empty() {
        let _ = writeln!(
            out,
            "\nThe floor with a bare hand-off, each body passed through a channel to one task on \
             the same runtime that drops it, as ingest passes a message to apply through the queue \
             with no work on either side: {}.",
            shares(&hand_off_share)
        );
    }
    if launched {
        let _ = writeln!(
            out,
            "\nThe rows \"a new connection per message\" are one run each of `rockets launch URL \
             --concurrency-level=N --max-messages=… --seed=444 --verify` against the release \
             `rockets-local` in its own process (in memory, or in a fresh data directory): the \
             challenge's way of connecting, each message on a new connection that the client \
             never closes (20 rockets, 10% sent twice, out of order within 64 sends); their share \
             is of the keep-alive floor above, and convergence is from the last answer until every \
             rocket equals the fold of what was accepted."
        );
    }
    out
}

fn durable_at_size(quick: bool) -> String {
    let Some(rows) = durable::run(Path::new("target/release"), quick) else {
        return "Not run: build `rockets-local` with `--release` first (`scripts/bench` does).\n"
            .into();
    };
    let mut out = String::from(
        "| applied messages | rockets | parked on one channel | on disk (MB) | start (ms) | resident memory (MB) |\n|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} |",
            row.history,
            row.rockets,
            row.parked,
            row.disk_mb,
            row.start_ms.show(0),
            row.rss_mb.show(1)
        );
    }
    let (empty, full) = (&rows[0], &rows[rows.len() - 1]);
    let _ = writeln!(
        out,
        "\nThe release `rockets-local` started three times on each data directory (filled through \
         the store as the apply side commits: batches of ten, 64 rockets at a time); start is from \
         spawning the process to its listening line, memory is its resident set half a second \
         later. Parked messages and history stay on disk; each rocket's state is cached with the \
         listing's index. Memory beside the empty directory: +{:.1} MB for {} applied and {} \
         parked messages.",
        full.rss_mb.median - empty.rss_mb.median,
        full.history,
        full.parked
    );
    out
}

fn launches(quick: bool) -> String {
    let messages = if quick { 20_000 } else { 100_000 };
    let mut out = String::from(
        "| concurrency | messages | wall (s) | accepted/s | p50 (µs) | p99 (µs) | retries | peak open connections | peak open files | convergence (ms) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for concurrency in [3, 50] {
        let args = [
            format!("--concurrency-level={concurrency}"),
            format!("--max-messages={messages}"),
            "--seed=444".to_string(),
        ];
        let Some(run) = launch::run(Path::new("target/release"), &args) else {
            return "Not run: build `rockets-local` and `rockets` with `--release` first \
                    (`scripts/bench` does).\n"
                .into();
        };
        let r = &run.report;
        let _ = writeln!(
            out,
            "| {concurrency} | {} of {} accepted | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r["accepted"],
            r["sends"],
            r["wallMs"].as_f64().unwrap_or(0.0) / 1000.0,
            r["acceptedPerSecond"].as_f64().unwrap_or(0.0),
            r["latencyP50Us"],
            r["latencyP99Us"],
            r["retries"],
            run.peak_connections,
            run.peak_open_files,
            r.get("convergedMs")
                .map_or("**not converged**".to_string(), ToString::to_string),
        );
    }
    let _ = writeln!(
        out,
        "\nOne run each of `rockets launch URL --concurrency-level=N --max-messages={messages} \
         --seed=444 --verify` (20 rockets, 10% of messages sent twice, out of order within 64 \
         sends) against the release `rockets-local` in its own process, which caps its \
         connections below its open-file limit and closes the longest-idle ones to make room. \
         The client holds every connection until the server closes it. Peak open files and \
         connections are sampled from `/proc` every 20 ms; convergence runs from the last \
         answer until every rocket equals the in-order fold of what was accepted.\n"
    );
    out
}

/// A batch's cost and another channel's latency with 0, 1,000 and 100,000 messages parked in
/// one channel, on every backend.
fn flooded(quick: bool) -> String {
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
    let rows = parked::run(sizes, if quick { 10 } else { 30 }, &dynamodb);
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

/// The busiest partition keys of the table and the listing indexes at each shard count, and
/// what a page of the listing reads.
fn partition_keys(quick: bool) -> String {
    let (rockets, per_rocket) = if quick { (10_000, 10) } else { (100_000, 20) };
    let rate = rockets;
    let shard_counts: &[u16] = &[1, 1024, 4096, 6144, 8192];
    let tenth = partitions::KEY_WRITE_LIMIT / 10.0;
    let mut out = String::from(
        "| traffic | listing shards | busiest table key (WCU/s) | busiest index key (WCU/s) | its index | of a key's limit |\n|---|---|---|---|---|---|\n",
    );
    let mut notes = String::new();
    let mut rockets_after = Vec::new();
    // Per shape, the fewest shards measured that keep every key at a tenth of its limit.
    let mut enough: Vec<Option<u16>> = Vec::new();
    for shape in [
        partitions::Shape {
            name: "in order",
            shuffled: false,
        },
        partitions::Shape {
            name: "shuffled + 10% resent",
            shuffled: true,
        },
    ] {
        let begun = Instant::now();
        let model = partitions::run(shape, rockets, per_rocket, rate, shard_counts);
        let busiest = |row: &partitions::Row| row.table.units.max(row.index.units) as f64;
        for row in &model.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1}% |",
                shape.name,
                row.shards,
                row.table.units,
                row.index.units,
                row.index.what,
                busiest(row) / partitions::KEY_WRITE_LIMIT * 100.0
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
        let cost = partitions::page_cost(&rockets_after, shards, 100);
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
        partitions::KEY_WRITE_LIMIT,
    );
    out
}

/// The listing shards that keep every DynamoDB key at a tenth of its limit at 100,000 messages
/// a second, as the partition model finds.
const SHARDS_AT_SCALE: u16 = 6144;

fn costs(quick: bool) -> String {
    let (Ok(moto), Ok(dynamodb)) = (
        std::env::var("ROCKETS_TEST_MOTO"),
        std::env::var("ROCKETS_TEST_DYNAMODB_LOCAL"),
    ) else {
        return "Not measured: the emulators are not running (scripts/bench starts them).\n".into();
    };
    let (rockets, length) = if quick { (5, 10) } else { (10, 20) };
    let traffic = [
        cost::Traffic {
            name: "in order, one message per batch",
            shuffled: false,
            batch: 1,
        },
        cost::Traffic {
            name: "in order, full batches",
            shuffled: false,
            batch: 10,
        },
        cost::Traffic {
            name: "shuffled + 10% resent, one per batch",
            shuffled: true,
            batch: 1,
        },
        cost::Traffic {
            name: "shuffled + 10% resent, full batches",
            shuffled: true,
            batch: 10,
        },
    ];
    let mut out = String::from(
        "| traffic | apply invocations | SQS send / receive / delete | DynamoDB RCU | DynamoDB WCU | API requests | ingest invocations | handler ms ingest / apply | $ per million messages, by service | total |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut writes = String::from(
        "| traffic | state | history | parked | indexes | total | strongly consistent reads per channel per batch |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut state_per_in_order_message: f64 = 0.0;
    let mut reads_per_channel_batch: f64 = 0.0;
    let sharded = rockets_aws::ListingShards::new(SHARDS_AT_SCALE).expect("valid");
    let mut at_scale = Vec::new();
    for t in &traffic {
        let bill = cost::run(&moto, &dynamodb, *t, rockets, length, Default::default());
        let _ = writeln!(out, "{}", bill.row(t));
        let _ = writeln!(writes, "{}", bill.writes_row(t));
        let spread = cost::run(&moto, &dynamodb, *t, rockets, length, sharded);
        at_scale.push(format!(
            "{} ${:.2} against ${:.2}",
            t.name,
            spread.total_per_million(),
            bill.total_per_million()
        ));
        if !t.shuffled {
            state_per_in_order_message =
                state_per_in_order_message.max(bill.state_writes_per_message());
        }
        reads_per_channel_batch =
            reads_per_channel_batch.max(bill.consistent_reads_per_channel_batch());
    }
    let _ = writeln!(
        out,
        "\nWith `ListingShards` {SHARDS_AT_SCALE} (the count that keeps every key at a tenth of its \
         limit at 100,000 messages a second), the same traffic costs per million messages: {}. \
         A shard's name is a few bytes longer than its status's, and nothing else changes.",
        at_scale.join("; ")
    );
    let _ = writeln!(
        out,
        "\nDynamoDB write units per message, by what was written, and strongly consistent reads:\n\n\
         {writes}\n\
         Targets: at most one write unit of state change per in-order message ({}: {state_per_in_order_message:.2} at most), \
         no more than one strongly consistent read per channel per batch ({}: {reads_per_channel_batch:.2} at most).",
        mark(state_per_in_order_message <= 1.0),
        mark(reads_per_channel_batch <= 1.0),
    );
    let _ = writeln!(
        out,
        "\nCounts are per message ({rockets} rockets × {length} messages per row). The real ingest \
         and apply handlers run against SQS on moto and DynamoDB on DynamoDB Local; every API \
         request, invocation and SQS call is counted, and DynamoDB's own `ConsumedCapacity` \
         (asked for on every call, split by item and index) is summed. Moto hands out one message \
         per FIFO group per receive, where SQS fills a batch from one group first, so apply's \
         batches are formed from the same messages by the embedded FIFO queue, which batches as \
         SQS does; \"one message per batch\" applies each message before the next is sent, \
         \"full batches\" sends them all first. A batch costs one receive and one batch delete, as \
         Lambda's event source mapping makes them; its empty long polls while the queue is idle \
         cost by the hour, not by the message, and are left out. Priced with us-east-1 on-demand rates as of {}: HTTP \
         API $1.00/M requests, Lambda $0.20/M requests and $0.0000133334 per GB-s on arm64 \
         (128 MB, each invocation rounded up to 1 ms), SQS FIFO $0.50/M requests, DynamoDB \
         $0.625/M write units and $0.125/M read units. Handler times are measured against the \
         emulators on this machine; in AWS they are dominated by DynamoDB's latency instead.",
        cost::PRICES_DATE
    );
    out
}

/// Environment variables for a function process.
type Environment<'a> = &'a [(&'a str, &'a str)];

fn cold_starts(options: &Options) -> String {
    let dir = &options.lambda_dir;
    let functions = [
        ("hello", "{}".to_string()),
        ("hello-sdk", "{}".to_string()),
        (
            "ingest",
            std::fs::read_to_string("events/apigw-post-message-invalid.json").unwrap_or_default(),
        ),
        (
            "query",
            std::fs::read_to_string("events/apigw-health.json").unwrap_or_default(),
        ),
        ("apply", "{\"Records\":[]}".to_string()),
    ];
    let missing: Vec<_> = functions
        .iter()
        .filter(|(f, _)| !dir.join(f).join("bootstrap").exists())
        .map(|(f, _)| f.to_string())
        .collect();
    if !missing.is_empty() {
        return format!(
            "Not measured: no {} under {} (scripts/bench builds them with cargo lambda).\n",
            missing.join(", "),
            dir.display()
        );
    }
    let env = [
        ("TABLE_NAME", "rockets"),
        ("QUEUE_URL", "http://127.0.0.1:9/000000000000/rockets.fifo"),
        (
            "DEAD_LETTER_QUEUE_URL",
            "http://127.0.0.1:9/000000000000/rockets-dlq.fifo",
        ),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let runs = if options.quick { 3 } else { 10 };
    let mut out = String::from(
        "| function | init (ms) | first invocation (ms) | warm invocation (ms) | peak RSS (MiB) | bootstrap.zip (KiB) |\n|---|---|---|---|---|---|\n",
    );
    let (mut floor, mut sdk_floor) = (0.0, 0.0);
    let mut verdicts = Vec::new();
    // Deployed, the functions trust Amazon's five roots; `SSL_CERT_FILE` and `SSL_CERT_DIR`
    // make them load the system's whole CA store instead, the bundle and the directory beside
    // it, as they all did before, for comparison in the same run.
    let bundle = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .find(|path| Path::new(path).exists());
    let mut with_system_store = env.to_vec();
    if let Some(bundle) = bundle {
        with_system_store.push(("SSL_CERT_FILE", bundle));
        if let Some(dir) = Path::new(bundle).parent().and_then(Path::to_str) {
            with_system_store.push(("SSL_CERT_DIR", dir));
        }
    }
    let mut variants: Vec<(&str, &str, Environment)> = Vec::new();
    for (function, event) in &functions {
        variants.push((function, event, &env[..]));
        if !function.starts_with("hello") && bundle.is_some() {
            variants.push((function, event, &with_system_store[..]));
        }
    }
    for (function, event, env) in variants {
        let system_store = env.iter().any(|(k, _)| *k == "SSL_CERT_FILE");
        let measured =
            coldstart::measure(&dir.join(function).join("bootstrap"), event, env, runs, 20);
        let zip = std::fs::metadata(dir.join(function).join("bootstrap.zip")).map_or_else(
            |_| "–".to_string(),
            |m| format!("{:.0}", m.len() as f64 / 1024.0),
        );
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} | {} | {zip} |",
            measured.function,
            if system_store {
                ", system CA store"
            } else {
                ""
            },
            measured.init_ms.show(2),
            measured.first_ms.show(2),
            measured.warm_ms.show(3),
            measured.peak_rss_mb.show(1)
        );
        if function == "hello" {
            floor = measured.init_ms.median;
        } else if function == "hello-sdk" {
            sdk_floor = measured.init_ms.median;
        } else if !system_store {
            let zipped_mb = std::fs::metadata(dir.join(function).join("bootstrap.zip"))
                .map_or(f64::MAX, |m| m.len() as f64 / 1024.0 / 1024.0);
            verdicts.push(format!(
                "{function}: init within 1.5× the floor {} ({:.1}×; {:.1}× `hello-sdk`), RSS under 20 MB {}, zip under 5 MB {}",
                mark(measured.init_ms.median <= 1.5 * floor),
                measured.init_ms.median / floor,
                measured.init_ms.median / sdk_floor,
                mark(measured.peak_rss_mb.median < 20.0),
                mark(zipped_mb < 5.0)
            ));
        }
    }
    let _ = writeln!(
        out,
        "\nThe binaries are `cargo lambda build --release --x86-64` outputs; `hello` is the smallest \
         `lambda_runtime` function, built the same way, as the floor; `hello-sdk` is `hello` plus \
         what any function that calls AWS builds at init (the SDK configuration, as these functions \
         load it, and one client). This tool serves the Lambda \
         runtime API on 127.0.0.1 and measures from exec to the function's first request for an \
         invocation (init), then one cold and twenty warm invocations; peak RSS is the process's \
         VmHWM. Events that touch no AWS service isolate the runtime and handler cost: an invalid \
         message for ingest, `GET /health` for query, an empty batch for apply. The functions run as \
         deployed, trusting only Amazon Trust Services' five root certificates; the rows marked \
         \"system CA store\" set `SSL_CERT_FILE` and `SSL_CERT_DIR` to the system's bundle and its \
         directory, which makes them load the whole store instead, as every function did before.\n\n{}",
        verdicts
            .iter()
            .map(|v| format!("- {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    out
}

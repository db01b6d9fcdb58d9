//! Pipeline throughput and latency: a load generator that behaves like the challenge's
//! `rockets launch` (many rockets, concurrent senders, messages out of order and resent)
//! against the local server on embedded backends, checked against the in-order fold; and the
//! same load against the floor, a server on the same HTTP front that reads each body and
//! answers 202 without doing anything else, and against the floor that also hands each body to
//! another task, as ingest hands a message to apply through the queue, with no work on either
//! side.

use std::fmt::Write as _;
use std::path::Path;

use crate::mark;
use crate::stats::Summary;
use crate::{KeepAwake, Options};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use rockets::message::Envelope;
use rockets::rocket::Rocket;
use rockets_local::front::{Front, FrontConfig, Handler};
use rockets_local::{LocalConfig, Storage, start_embedded};
use rockets_testkit::{HttpClient, Rng, channel, flight};

use crate::stats::micros;

/// What one load run sends.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub rockets: usize,
    pub messages_per_rocket: u64,
    pub concurrency: usize,
    /// Percentage of messages sent twice.
    pub duplicate_percent: u64,
    /// Pause between one sender's requests, as `--message-delay` does.
    pub delay: Duration,
    pub seed: u64,
    pub server: Server,
}

/// What the load is sent to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Server {
    /// `rockets-local`, in memory or in a fresh data directory.
    Pipeline { durable: bool },
    /// The HTTP front alone: each body read, 202 answered, nothing else.
    Floor,
    /// The floor, each body also handed to one task on the same runtime that drops it: the
    /// bare cost of a hand-off between two handlers.
    HandOff,
}

/// What one load run measured.
#[derive(Clone, Debug)]
pub struct Run {
    pub posts: usize,
    pub accepted_per_second: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_max_us: f64,
    /// From the last POST's answer until every rocket showed its final state (0 for the
    /// floor, which keeps nothing).
    pub convergence_ms: f64,
    /// The load generator's share of the CPU the whole process used while sending.
    pub generator_cpu_share: f64,
    /// The CPU the server used per POST while sending (the whole process's less the load
    /// generator's), in microseconds.
    pub server_cpu_us: f64,
}

/// The floor's whole behaviour, handing each body to `hand_off` if there is one.
struct Floor {
    hand_off: Option<tokio::sync::mpsc::UnboundedSender<Bytes>>,
}

impl Handler for Floor {
    async fn call(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let body = request.into_body().collect().await;
        if let (Some(hand_off), Ok(body)) = (&self.hand_off, body) {
            let _ = hand_off.send(body.to_bytes());
        }
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(
            b"{\"channel\":\"floor\",\"messageNumber\":1}",
        )));
        *response.status_mut() = hyper::StatusCode::ACCEPTED;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        response
    }
}

/// CPU time used so far by the calling thread, or by the whole process.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(clock, &mut time) };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// Starts a fresh local server, runs the load against it, and verifies every rocket.
pub fn run(load: Load) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data_dir = std::env::temp_dir().join(format!(
        "rockets-bench-pipeline-{}-{}",
        std::process::id(),
        load.seed
    ));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut floor_tasks = tokio::task::JoinSet::new();
    let (server, floor, addr) = match load.server {
        Server::Pipeline { durable } => {
            let config = LocalConfig {
                storage: if durable {
                    Storage::Dir(data_dir.clone())
                } else {
                    Storage::Memory
                },
                ..LocalConfig::ephemeral()
            };
            let server = runtime
                .block_on(start_embedded(&config))
                .expect("server starts");
            let addr = server.addr();
            (Some(server), None, addr)
        }
        Server::Floor | Server::HandOff => {
            let hand_off = (load.server == Server::HandOff).then(|| {
                let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
                floor_tasks.spawn_on(
                    async move {
                        while let Some(body) = receiver.recv().await {
                            drop(std::hint::black_box(body));
                        }
                    },
                    runtime.handle(),
                );
                sender
            });
            let front = runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                    .await
                    .expect("bind");
                Front::start(
                    vec![listener],
                    Arc::new(Floor { hand_off }),
                    FrontConfig::default(),
                    &mut floor_tasks,
                )
                .expect("floor starts")
            });
            let addr = front.addrs()[0];
            (None, Some(front), addr)
        }
    };

    let mut rng = Rng::new(load.seed);
    let flights: Vec<Vec<Envelope>> = (0..load.rockets)
        .map(|i| {
            flight(
                &channel(&format!("bench-{i}")),
                load.messages_per_rocket,
                &mut rng,
            )
        })
        .collect();
    let mut bodies: Vec<String> = flights.iter().flatten().map(Envelope::to_json).collect();
    let originals = bodies.len();
    for i in 0..originals {
        if rng.chance(load.duplicate_percent) {
            bodies.push(bodies[i].clone());
        }
    }
    rng.shuffle(&mut bodies);
    let bodies = Arc::new(bodies);

    let next = Arc::new(AtomicUsize::new(0));
    let process_cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
    let started = Instant::now();
    let senders: Vec<_> = (0..load.concurrency)
        .map(|_| {
            let (bodies, next) = (bodies.clone(), next.clone());
            std::thread::spawn(move || send(addr, &bodies, &next, load.delay))
        })
        .collect();
    let mut latencies: Vec<f64> = Vec::with_capacity(bodies.len());
    let mut generator_cpu = Duration::ZERO;
    for sender in senders {
        let (sent, cpu) = sender.join().expect("sender");
        latencies.extend(sent);
        generator_cpu += cpu;
    }
    let last_answer = Instant::now();
    let process_cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID) - process_cpu;
    let sending = last_answer - started;
    let convergence = if server.is_some() {
        wait_for_convergence(addr, &flights);
        last_answer.elapsed()
    } else {
        Duration::ZERO
    };
    drop(server);
    floor_tasks.abort_all();
    drop(floor);
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&data_dir);

    let posts = latencies.len();
    Run {
        posts,
        accepted_per_second: posts as f64 / sending.as_secs_f64(),
        latency_p50_us: crate::stats::quantile(&mut latencies, 0.5),
        latency_p99_us: crate::stats::quantile(&mut latencies, 0.99),
        latency_max_us: crate::stats::quantile(&mut latencies, 1.0),
        convergence_ms: convergence.as_secs_f64() * 1e3,
        generator_cpu_share: generator_cpu.as_secs_f64() / process_cpu.as_secs_f64().max(1e-9),
        server_cpu_us: micros(process_cpu.saturating_sub(generator_cpu)) / posts.max(1) as f64,
    }
}

/// One sender: takes the next message, posts it until accepted, records how long that took;
/// returns the latencies and the CPU time the sender used.
fn send(
    addr: SocketAddr,
    bodies: &[String],
    next: &AtomicUsize,
    delay: Duration,
) -> (Vec<f64>, Duration) {
    let mut client = HttpClient::new(addr);
    let mut latencies = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(body) = bodies.get(i) else {
            return (latencies, cpu_time(libc::CLOCK_THREAD_CPUTIME_ID));
        };
        let begun = Instant::now();
        for attempt in 0.. {
            assert!(attempt < 100, "message never accepted");
            if let Ok((202, _)) = client.request("POST", "/messages", body) {
                break;
            }
        }
        latencies.push(micros(begun.elapsed()));
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// Pages through `GET /rockets` until every rocket is complete, then checks each one against
/// the in-order fold, so a fast wrong answer cannot pass.
fn wait_for_convergence(addr: SocketAddr, flights: &[Vec<Envelope>]) {
    let mut client = HttpClient::new(addr);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rockets = list_all(&mut client);
        let complete = rockets.len() == flights.len()
            && rockets.iter().all(|r| {
                r.pending_messages == 0 && r.last_message_number == flights[0].len() as u64
            });
        if complete {
            for flight in flights {
                let expected = Rocket::fold(flight[0].channel.clone(), flight, Utc::now());
                let got = rockets
                    .iter()
                    .find(|r| r.channel == expected.channel)
                    .expect("every rocket listed");
                assert!(got.same_state(&expected), "{got:?} != {expected:?}");
            }
            return;
        }
        assert!(Instant::now() < deadline, "the pipeline did not converge");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn list_all(client: &mut HttpClient) -> Vec<Rocket> {
    let mut rockets = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/rockets?limit=1000&cursor={c}"),
            None => "/rockets?limit=1000".to_string(),
        };
        let (status, body) = client.request("GET", &path, "").expect("list");
        assert_eq!(status, 200, "{body}");
        let mut page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let batch: Vec<Rocket> = serde_json::from_value(page["rockets"].take()).expect("rockets");
        rockets.extend(batch);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return rockets,
        }
    }
}

/// One measured row: the server, its concurrency, whether the vCPUs were kept busy, and the
/// medians (with ranges) of its runs.
struct Row {
    server: Server,
    concurrency: usize,
    awake: bool,
    posts: usize,
    rate: Summary,
    p50: Summary,
    p99: Summary,
    max: Summary,
    converge: Summary,
    generator: Summary,
    server_cpu: Summary,
}

impl Row {
    fn name(&self) -> String {
        let server = match self.server {
            Server::Floor => "floor (HTTP front only)",
            Server::HandOff => "floor, each body handed to another task",
            Server::Pipeline { durable: false } => "memory",
            Server::Pipeline { durable: true } => "data directory",
        };
        let awake = if self.awake {
            ", idle vCPUs kept busy"
        } else {
            ""
        };
        format!("{server}{awake}")
    }
}

/// The servers and concurrencies `options` asks for, each row measured over repeated runs.
fn measure(options: &Options) -> Vec<Row> {
    let quick = options.quick;
    let runs = if quick { 2 } else { 5 };
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
    // At concurrency 1 a POST's round trip on a virtual machine can be mostly the time it takes
    // to wake an idle vCPU; those rows are measured again with a spinning process at the lowest
    // priority keeping the vCPUs out of their idle state, to show the software's own time.
    let variants: Vec<(usize, bool)> = concurrencies(options)
        .into_iter()
        .flat_map(|c| {
            let awake: &[bool] = if c == 1 { &[false, true] } else { &[false] };
            awake.iter().map(move |&a| (c, a))
        })
        .collect();
    let mut rows = Vec::new();
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
        let results: Vec<Run> = (0..runs)
            .map(|seed| {
                run(Load {
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
        let pick = |f: fn(&Run) -> f64| Summary::of(results.iter().map(f).collect());
        rows.push(Row {
            server,
            concurrency,
            awake,
            posts: results[0].posts,
            rate: pick(|r| r.accepted_per_second),
            p50: pick(|r| r.latency_p50_us),
            p99: pick(|r| r.latency_p99_us),
            max: pick(|r| r.latency_max_us),
            converge: pick(|r| r.convergence_ms),
            generator: pick(|r| r.generator_cpu_share * 100.0),
            server_cpu: pick(|r| r.server_cpu_us),
        });
    }
    rows
}

fn concurrencies(options: &Options) -> Vec<usize> {
    if options.concurrency.is_empty() {
        vec![1, 8, 64]
    } else {
        options.concurrency.clone()
    }
}

/// The rate of the floor measured beside `row`, under the same load.
fn floor_of(rows: &[Row], concurrency: usize, awake: bool) -> Option<f64> {
    rows.iter()
        .find(|r| r.server == Server::Floor && r.concurrency == concurrency && r.awake == awake)
        .map(|r| r.rate.median)
}

pub fn report(options: &Options) -> String {
    let rows = measure(options);
    let mut out = String::from(
        "| server | concurrency | POSTs | accepted/s | of the floor | p50 (µs) | p99 (µs) | max (µs) | convergence (ms) | load generator's CPU share | server CPU per POST (µs) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        let of_floor = floor_of(&rows, row.concurrency, row.awake)
            .map_or(0.0, |floor| row.rate.median / floor * 100.0);
        let converge = if matches!(row.server, Server::Floor | Server::HandOff) {
            "–".to_string()
        } else {
            row.converge.show(1)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0}% | {} | {} | {} | {} | {}% | {} |",
            row.name(),
            row.concurrency,
            row.posts,
            row.rate.show(0),
            of_floor,
            row.p50.show(0),
            row.p99.show(0),
            row.max.show(0),
            converge,
            row.generator.show(0),
            row.server_cpu.show(1)
        );
    }
    let launched = new_connection_rows(options, &rows, &mut out);
    out.push_str(&verdicts(&rows, launched));
    out
}

/// The challenge's program connects anew for every message and never closes: the release
/// server in its own process, under `rockets launch` with as many messages. Whether any ran.
fn new_connection_rows(options: &Options, rows: &[Row], out: &mut String) -> bool {
    let mut launched = false;
    for concurrency in concurrencies(options) {
        for durable in [false, true] {
            let name = if durable { "durable" } else { "memory" };
            if !(options.servers.is_empty() || options.servers.iter().any(|s| s == name)) {
                continue;
            }
            let data_dir = std::env::temp_dir().join(format!(
                "rockets-bench-launch-{}-{concurrency}",
                std::process::id()
            ));
            let args = [
                format!("--concurrency-level={concurrency}"),
                format!(
                    "--max-messages={}",
                    if options.quick { 2_000 } else { 22_031 }
                ),
                "--seed=444".to_string(),
            ];
            let Some(run) = crate::launch::run_on(
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
                floor_of(rows, concurrency, false).map_or(0.0, |floor| rate / floor * 100.0),
                r["latencyP50Us"],
                r["latencyP99Us"],
                r.get("convergedMs")
                    .map_or("**not converged**".to_string(), ToString::to_string),
            );
        }
    }
    launched
}

/// What the table shows against its targets, and how its rows were measured.
fn verdicts(rows: &[Row], launched: bool) -> String {
    let at = |durable: bool, concurrency: usize| {
        rows.iter().find(|r| {
            r.server == Server::Pipeline { durable } && r.concurrency == concurrency && !r.awake
        })
    };
    let verdict = |row: Option<&Row>, p99_target: f64| {
        row.map_or(("not run", "not run"), |row| {
            (
                mark(row.rate.median >= 20_000.0),
                mark(row.p99.median < p99_target),
            )
        })
    };
    let (rate, p99) = verdict(at(false, 64), 5_000.0);
    let converged = at(false, 64).map_or("not run", |row| mark(row.converge.median <= 1_000.0));
    let (durable_rate, durable_p99) = verdict(at(true, 64), 10_000.0);
    let mut out = format!(
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
         at least 20,000 messages/s ({durable_rate}) with p99 under 10 ms ({durable_p99}).\n"
    );
    let shares = |server: Server| -> Vec<(usize, bool, f64)> {
        rows.iter()
            .filter(|r| r.server == server)
            .filter_map(|r| {
                let floor = floor_of(rows, r.concurrency, r.awake)?;
                Some((r.concurrency, r.awake, r.rate.median / floor * 100.0))
            })
            .collect()
    };
    let listed = |rows: &[(usize, bool, f64)]| -> String {
        rows.iter()
            .map(|(c, awake, share)| {
                let busy = if *awake {
                    " with the vCPUs kept busy"
                } else {
                    ""
                };
                format!("{share:.0}% at concurrency {c}{busy}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let memory = shares(Server::Pipeline { durable: false });
    if !memory.is_empty() {
        let _ = writeln!(
            out,
            "\nTarget: the in-memory pipeline at 80% of the floor or more at every concurrency: {} ({}).",
            mark(memory.iter().all(|(_, _, share)| *share >= 80.0)),
            listed(&memory)
        );
    }
    let hand_off = shares(Server::HandOff);
    if !hand_off.is_empty() {
        let _ = writeln!(
            out,
            "\nThe floor with a bare hand-off, each body passed through a channel to one task on \
             the same runtime that drops it, as ingest passes a message to apply through the queue \
             with no work on either side: {}.",
            listed(&hand_off)
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

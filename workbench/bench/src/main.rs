//! `rockets-bench`: measures the pipeline, the core, listing at scale and cold starts, prints
//! a report and writes it as Markdown. `scripts/bench` builds what it needs and runs it.

mod coldstart;
mod cost;
mod durable;
mod folding;
mod launch;
mod listing;
mod parked;
mod partitions;
mod pipeline;
mod stats;
mod story;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;

pub(crate) struct Options {
    quick: bool,
    /// Run only these sections (core, listing, story, pipeline, durable, launch, cost, parked,
    /// partitions, coldstart); all when empty.
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
pub(crate) struct KeepAwake(std::process::Child);

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
    let sections: [(&str, &str, &dyn Fn() -> String); 10] = [
        ("core", "The core: validating and folding", &|| {
            folding::report(options.quick)
        }),
        ("listing", "Listing at scale (embedded store)", &|| {
            listing::report(options.quick)
        }),
        (
            "pipeline",
            "Pipeline throughput and latency (local server, embedded backends)",
            &|| pipeline::report(&options),
        ),
        ("story", "A rocket's state as of a message", &|| {
            story::report(options.quick)
        }),
        ("durable", "The data directory at size", &|| {
            durable::report(options.quick)
        }),
        (
            "launch",
            "The challenge's way of connecting: a new connection per message, never closed",
            &|| launch::report(options.quick),
        ),
        ("cost", "Cost per million messages on AWS", &|| {
            cost::report(options.quick)
        }),
        ("parked", "What one flooded channel costs", &|| {
            parked::report(options.quick)
        }),
        (
            "partitions",
            "DynamoDB partition keys at 100,000 messages a second",
            &|| partitions::report(options.quick),
        ),
        ("coldstart", "Cold start, memory and size", &|| {
            coldstart::report(&options)
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

pub(crate) fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

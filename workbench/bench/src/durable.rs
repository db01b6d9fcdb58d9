//! The data directory at size: how long the release `rockets-local` takes to start on a
//! directory holding a million applied messages and a channel with 100,000 parked, and the
//! memory it holds there, beside an empty directory; and how long the store's reads from it take.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rockets::ordering::{ParkedView, Timeline};
use rockets::ports::{ChannelStore, CommitOutcome, RocketReader};
use rockets_embedded::{DataDir, DurableStore};
use rockets_testkit::{Rng, channel, flight};

use crate::stats::{Summary, millis};

pub struct Row {
    pub history: u64,
    pub rockets: usize,
    pub parked: usize,
    pub disk_mb: f64,
    pub start_ms: Summary,
    pub rss_mb: Summary,
    /// A load of the flooded channel, reading its first 100 parked messages, in microseconds.
    pub load_us: Option<Summary>,
    /// A page of 100 of a rocket's history, in microseconds.
    pub history_us: Option<Summary>,
}

/// How long the store's reads from the directory take, in a process of their own freshly
/// started on it: loads of the flooded channel (its first 100 parked messages) and pages of 100
/// of random rockets' history, 500 of each; `None` for a directory without them.
fn reads(path: &Path, rockets: usize) -> (Option<Summary>, Option<Summary>) {
    if rockets == 0 {
        return (None, None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = DataDir::open(path).expect("data directory");
        let store = DurableStore::open(&dir).expect("store");
        let flooded = channel("flooded");
        let mut rng = Rng::new(7);
        let (mut loads, mut pages) = (Vec::new(), Vec::new());
        for _ in 0..500 {
            let begun = Instant::now();
            let snapshot = store.load(&flooded, 100, &[]).await.expect("load");
            loads.push(begun.elapsed().as_secs_f64() * 1e6);
            assert!(snapshot.is_some_and(|s| s.parked.first.len() == 100));
            let rocket = channel(&format!("history-{}", rng.below(rockets as u64)));
            let begun = Instant::now();
            let page = store.history(&rocket, 0, 100).await.expect("history");
            pages.push(begun.elapsed().as_secs_f64() * 1e6);
            assert!(page.is_some_and(|p| p.len() == 100));
        }
        (Some(Summary::of(loads)), Some(Summary::of(pages)))
    })
}

/// Applies `per_rocket` messages to each of `rockets` rockets in batches of ten, 64 rockets at
/// a time, and parks `parked` messages on one more.
fn fill(path: &Path, rockets: usize, per_rocket: u64, parked: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = DataDir::open(path).expect("data directory");
        let store = Arc::new(DurableStore::open(&dir).expect("store"));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..64 {
            let store = store.clone();
            tasks.spawn(async move {
                let mut rng = Rng::new(task as u64);
                for i in (task..rockets).step_by(64) {
                    let messages = flight(&channel(&format!("history-{i}")), per_rocket, &mut rng);
                    for batch in messages.chunks(10) {
                        let (rocket, version) = match store.load(&batch[0].channel, 1, &[]).await {
                            Ok(Some(s)) => (s.rocket, s.version),
                            _ => (
                                rockets::rocket::Rocket::new(batch[0].channel.clone(), Utc::now()),
                                0,
                            ),
                        };
                        let mut timeline = Timeline::load(rocket, ParkedView::none(), Utc::now());
                        for m in batch {
                            timeline.receive(m.clone());
                        }
                        let change = timeline.into_change().expect("applies");
                        let outcome = store.commit(version, &change).await.expect("commit");
                        assert_eq!(outcome, CommitOutcome::Committed);
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let flooded = channel("flooded");
        crate::parked::fill(&*store, &flooded, parked, &mut Rng::new(99)).await;
    });
}

fn disk_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                meta.blocks() * 512
            }
            Err(_) => 0,
        })
        .sum()
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .trim_end_matches(" kB")
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts the server on `path` until it listens; how long that took and its resident memory
/// once settled.
fn start(server: &Path, path: &Path) -> (f64, f64) {
    let begun = Instant::now();
    let mut child = Command::new(server)
        .args(["--data-dir", path.to_str().expect("UTF-8 path")])
        .env("ROCKETS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("rockets-local starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let listening = lines.find(|line| {
        line.as_ref()
            .is_ok_and(|l| l.starts_with("rockets-local listening on"))
    });
    assert!(listening.is_some(), "rockets-local listens");
    let started = millis(begun.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_mb(child.id());
    // SAFETY: sends SIGTERM to our own child's PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    drop(lines);
    (started, rss)
}

/// Rows for an empty directory and a full one; `None` if the release server is not built.
pub fn run(bin_dir: &Path, quick: bool) -> Option<Vec<Row>> {
    let server = bin_dir.join("rockets-local");
    if !server.exists() {
        return None;
    }
    let (rockets, per_rocket, parked) = if quick {
        (1_000, 100, 10_000)
    } else {
        (10_000, 100, 100_000)
    };
    let root: PathBuf =
        std::env::temp_dir().join(format!("rockets-bench-durable-{}", std::process::id()));
    let mut rows = Vec::new();
    for (rockets, per_rocket, parked) in [(0, 0, 0), (rockets, per_rocket, parked)] {
        let path = root.join(format!("{rockets}"));
        let _ = std::fs::remove_dir_all(&path);
        fill(&path, rockets, per_rocket, parked);
        let (starts, rss): (Vec<f64>, Vec<f64>) = (0..3).map(|_| start(&server, &path)).unzip();
        let (load_us, history_us) = reads(&path, rockets);
        rows.push(Row {
            history: rockets as u64 * per_rocket,
            rockets: rockets + usize::from(parked > 0),
            parked,
            disk_mb: disk_bytes(&path) as f64 / (1024.0 * 1024.0),
            start_ms: Summary::of(starts),
            rss_mb: Summary::of(rss),
            load_us,
            history_us,
        });
    }
    let _ = std::fs::remove_dir_all(&root);
    Some(rows)
}

pub fn report(quick: bool) -> String {
    let Some(rows) = run(Path::new("target/release"), quick) else {
        return "Not run: build `rockets-local` with `--release` first (`scripts/bench` does).\n"
            .into();
    };
    let mut out = String::from(
        "| applied messages | rockets | parked on one channel | on disk (MB) | start (ms) | resident memory (MB) | a load reading 100 parked (µs) | a history page of 100 (µs) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            row.history,
            row.rockets,
            row.parked,
            row.disk_mb,
            row.start_ms.show(0),
            row.rss_mb.show(1),
            row.load_us.as_ref().map_or("–".into(), |s| s.show(0)),
            row.history_us.as_ref().map_or("–".into(), |s| s.show(0)),
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
         parked messages. The reads are the store's own, made as the apply and query handlers \
         make them, 500 of each in a process freshly opened on the directory: a load of the \
         flooded channel reading its first 100 parked messages, and a page of 100 messages of a \
         random rocket's history.",
        full.rss_mb.median - empty.rss_mb.median,
        full.history,
        full.parked
    );
    out
}

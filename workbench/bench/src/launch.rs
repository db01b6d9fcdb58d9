//! The challenge's way of connecting: the release `rockets-local` as its own process and the
//! `rockets launch` client, which opens a new connection per message and never closes one,
//! with the server's open files and connections sampled from `/proc` while it runs.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What one run measured.
pub struct Run {
    pub report: serde_json::Value,
    pub peak_open_files: usize,
    pub peak_connections: usize,
}

/// Runs `rockets launch` with `args` against a fresh release server; `None` if the binaries
/// are not built.
pub fn run(bin_dir: &Path, args: &[String]) -> Option<Run> {
    run_on(bin_dir, args, None)
}

/// [`run`], with the server keeping its data in a fresh `data_dir` instead of in memory.
pub fn run_on(bin_dir: &Path, args: &[String], data_dir: Option<&Path>) -> Option<Run> {
    let (server_bin, client_bin) = (bin_dir.join("rockets-local"), bin_dir.join("rockets"));
    if !server_bin.exists() || !client_bin.exists() {
        return None;
    }
    if let Some(dir) = data_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let storage = data_dir.map_or(":memory:".into(), |dir| dir.display().to_string());
    let mut server = Command::new(&server_bin)
        .env("ROCKETS_ADDR", "127.0.0.1:0")
        .env("ROCKETS_DATA_DIR", &storage)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("rockets-local starts");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let url = lines
        .find_map(|line| {
            line.ok()?
                .strip_prefix("rockets-local listening on ")
                .map(|urls| urls.split(' ').next().unwrap_or_default().to_string())
        })
        .expect("rockets-local prints its address");
    std::thread::spawn(move || lines.for_each(drop));

    let pid = server.id();
    let done = Arc::new(AtomicBool::new(false));
    let (peak_files, peak_sockets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (done, peak_files, peak_sockets) =
            (done.clone(), peak_files.clone(), peak_sockets.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let (files, sockets) = open_files(pid);
                peak_files.fetch_max(files, Ordering::Relaxed);
                peak_sockets.fetch_max(sockets, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let output = Command::new(&client_bin)
        .arg("launch")
        .arg(format!("{url}/messages"))
        .args(args)
        .args(["--verify", "--json"])
        .output()
        .expect("rockets launch runs");
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    // SAFETY: kill only sends SIGTERM to our own child's PID.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = server.wait();
    if let Some(dir) = data_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| serde_json::json!({"error": text}));
    Some(Run {
        report,
        peak_open_files: peak_files.load(Ordering::Relaxed),
        // Less the listener.
        peak_connections: peak_sockets.load(Ordering::Relaxed).saturating_sub(1),
    })
}

/// The process's open file descriptors, and how many of them are sockets.
fn open_files(pid: u32) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let (mut files, mut sockets) = (0, 0);
    for entry in entries.flatten() {
        files += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        {
            sockets += 1;
        }
    }
    (files, sockets)
}

pub fn report(quick: bool) -> String {
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
        let Some(run) = run(Path::new("target/release"), &args) else {
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

//! The durable data directory under SIGKILL: the real `rockets-local` is killed at random
//! moments, many times, while a shuffled stream with resends for many rockets is posted by
//! senders that resend whatever got no 2xx, as the challenge's program does. After the last
//! restart every rocket equals the in-order fold, with every message in its history once.

mod process;
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rockets::message::Envelope;
use rockets_testkit::{HttpClient, Rng};

use process::ServerProcess;
use support::{Scratch, assert_converges, traffic};

fn start(dir: &Scratch) -> ServerProcess {
    let dir = dir.0.to_str().expect("a UTF-8 path");
    ServerProcess::start_with(
        1024,
        &["--data-dir", dir],
        &[("ROCKETS_DATA_DIR", dir), ("RUST_LOG", "warn")],
    )
}

/// Posts each message until it is answered 202, following the server to its latest address.
fn send(addr: Arc<RwLock<SocketAddr>>, messages: Vec<Envelope>, acknowledged: Arc<AtomicU64>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for message in messages {
        let body = message.to_json();
        loop {
            assert!(Instant::now() < deadline, "{message:?} never accepted");
            let mut client = HttpClient::new(*addr.read().unwrap());
            if let Ok((202, _)) = client.request("POST", "/messages", &body) {
                acknowledged.fetch_add(1, Ordering::Relaxed);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn killed_at_random_moments_it_loses_nothing_it_acknowledged_and_applies_nothing_twice() {
    let dir = Scratch::new("crash");
    let (flights, arrivals) = traffic(150, 40, 11);
    let total = arrivals.len() as u64;
    let mut server = start(&dir);
    let addr = Arc::new(RwLock::new(server.addr()));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = arrivals
        .chunks(arrivals.len().div_ceil(8))
        .map(|chunk| {
            let (addr, acknowledged, chunk) = (addr.clone(), acknowledged.clone(), chunk.to_vec());
            std::thread::spawn(move || send(addr, chunk, acknowledged))
        })
        .collect();
    let mut rng = Rng::new(5);
    let mut kills = 0;
    let mut at_kill = Vec::new();
    while kills < 12 || acknowledged.load(Ordering::Relaxed) < total {
        // Kills land between a random number of acknowledgements, not after a random time, so
        // that they fall mid-stream however fast this machine serves.
        let until = acknowledged.load(Ordering::Relaxed) + 100 + rng.below(300);
        let waited = Instant::now();
        while acknowledged.load(Ordering::Relaxed) < until.min(total)
            && waited.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(20)));
        at_kill.push(acknowledged.load(Ordering::Relaxed));
        server.signal(libc::SIGKILL);
        assert_eq!(
            server.exit_code(Duration::from_secs(10)),
            None,
            "killed, no exit code"
        );
        drop(server);
        kills += 1;
        server = start(&dir);
        *addr.write().unwrap() = server.addr();
        if kills > 60 {
            break;
        }
    }
    for sender in senders {
        sender.join().expect("every message was acknowledged");
    }
    assert!(
        at_kill.iter().filter(|n| **n > 0 && **n < total).count() >= 8,
        "killed mid-stream often enough: acknowledged at each kill {at_kill:?} of {total}"
    );
    assert_converges(server.addr(), &flights);
    // Nothing applied twice: each message is in its rocket's history once, in order.
    let mut client = HttpClient::new(server.addr());
    for flight in &flights {
        let channel = &flight[0].channel;
        let (status, body) = client
            .request("GET", &format!("/rockets/{channel}/events?limit=1000"), "")
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let numbers: Vec<u64> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["metadata"]["messageNumber"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=flight.len() as u64).collect();
        assert_eq!(numbers, expected, "{channel}");
        let distinct: HashSet<u64> = numbers.iter().copied().collect();
        assert_eq!(distinct.len(), numbers.len());
    }
}

/// Starts the server on `dir`, expecting it to exit with status 1 before serving; its stderr.
fn refused_start(dir: &Scratch) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rockets-local"))
        .args(["--data-dir", dir.0.to_str().unwrap()])
        .env("ROCKETS_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = Scratch::new("second");
    let _first = start(&dir);
    let stderr = refused_start(&dir);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

#[test]
fn a_damaged_data_directory_stops_the_start_with_a_clear_error() {
    let dir = Scratch::new("damaged");
    drop(start(&dir));
    std::fs::write(dir.0.join("acknowledged"), "not a number\n").unwrap();
    let stderr = refused_start(&dir);
    assert!(
        stderr.contains("cannot be used") && stderr.contains("restore it"),
        "{stderr}"
    );
}

/// The rockets of a small stream with more than one message each, and a server on `dir` that
/// has parked every message but each rocket's first.
fn parked_behind_gaps(dir: &Scratch) -> (ServerProcess, Vec<Vec<Envelope>>) {
    let (flights, _) = traffic(3, 6, 3);
    let flights: Vec<Vec<Envelope>> = flights.into_iter().filter(|f| f.len() > 1).collect();
    assert!(flights.len() >= 2, "{flights:?}");
    let server = start(dir);
    let ahead: Vec<Envelope> = flights.iter().flat_map(|f| f[1..].to_vec()).collect();
    support::post_all(server.addr(), ahead);
    let mut client = HttpClient::new(server.addr());
    for flight in &flights {
        wait_parked(&mut client, flight, "never parked");
    }
    (server, flights)
}

/// A rocket's `pendingMessages`, or `None` if it is not there.
fn pending(client: &mut HttpClient, flight: &[Envelope]) -> Option<u64> {
    let (_, body) = client
        .request("GET", &format!("/rockets/{}", flight[0].channel), "")
        .unwrap();
    let rocket: serde_json::Value = serde_json::from_str(&body).unwrap();
    rocket["pendingMessages"].as_u64()
}

/// Waits until every message of `flight` but the first is parked.
fn wait_parked(client: &mut HttpClient, flight: &[Envelope], why: &str) {
    let want = Some(flight.len() as u64 - 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending(client, flight) != want {
        assert!(Instant::now() < deadline, "{why}: {}", flight[0].channel);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_graceful_restart_keeps_parked_messages_parked_and_cursors_valid() {
    let dir = Scratch::new("restart");
    let (mut server, flights) = parked_behind_gaps(&dir);
    let mut client = HttpClient::new(server.addr());
    let (_, first_page) = client.request("GET", "/rockets?limit=1", "").unwrap();
    let first_page: serde_json::Value = serde_json::from_str(&first_page).unwrap();
    let cursor = first_page["nextCursor"]
        .as_str()
        .expect("a cursor")
        .to_string();
    // A graceful stop puts everything it applied on disk before it exits.
    server.signal(libc::SIGTERM);
    let exit = server.exit_code(Duration::from_secs(20));
    assert_eq!(exit, Some(0), "{}", server.output());
    drop(server);

    let server = start(&dir);
    let mut client = HttpClient::new(server.addr());
    for flight in &flights {
        assert_eq!(pending(&mut client, flight), Some(flight.len() as u64 - 1));
    }
    let (status, second_page) = client
        .request("GET", &format!("/rockets?limit=1&cursor={cursor}"), "")
        .unwrap();
    assert_eq!(status, 200, "{second_page}");
    let second_page: serde_json::Value = serde_json::from_str(&second_page).unwrap();
    assert_ne!(
        second_page["rockets"][0]["channel"],
        first_page["rockets"][0]["channel"]
    );
    support::post_all(
        server.addr(),
        flights.iter().map(|f| f[0].clone()).collect(),
    );
    assert_converges(server.addr(), &flights);
}

#[test]
fn after_a_kill_parked_messages_are_parked_again_from_the_queue() {
    let dir = Scratch::new("killed-parked");
    let (server, flights) = parked_behind_gaps(&dir);
    // Killed at once: a commit that parked a message may not have reached the disk, but the
    // message did (it was answered 202), and so did the receive that its delete would undo.
    server.signal(libc::SIGKILL);
    drop(server);

    let server = start(&dir);
    let mut client = HttpClient::new(server.addr());
    for flight in &flights {
        wait_parked(&mut client, flight, "not parked again after the restart");
    }
    support::post_all(
        server.addr(),
        flights.iter().map(|f| f[0].clone()).collect(),
    );
    assert_converges(server.addr(), &flights);
}

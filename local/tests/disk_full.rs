//! A full disk under the data directory: the server runs on a small tmpfs of its own (in a
//! mount namespace), and another process fills it. Writes are refused with a 503 and `/health`
//! says why; once the space is back they resume within seconds, without a restart, and every
//! message acknowledged before, during or after is applied.

mod process;

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use process::ServerProcess;
use rockets::message::Envelope;
use rockets_testkit::{HttpClient, Rng, channel, flight, unique_name};

/// Bytes free on the disk holding `path`.
fn free(path: &std::path::Path) -> u64 {
    let output = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let (blocks, size) = text.trim().split_once(' ').unwrap();
    blocks.parse::<u64>().unwrap() * size.parse::<u64>().unwrap()
}

fn post(client: &mut HttpClient, message: &Envelope) -> u16 {
    client
        .request("POST", "/messages", &message.to_json())
        .map_or(0, |(status, _)| status)
}

#[test]
fn a_full_disk_refuses_writes_says_why_and_recovers_once_there_is_room() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let dir = std::env::temp_dir().join(unique_name("disk-full"));
    std::fs::create_dir_all(&dir).unwrap();
    // Root may mount in a namespace of its own; anyone else as root of a user namespace.
    let own_namespace = if unsafe { libc::geteuid() } == 0 {
        "-m"
    } else {
        "-rm"
    };
    let mut command = Command::new("unshare");
    command
        .args([own_namespace, "sh", "-c"])
        .arg("mount -t tmpfs -o size=40m tmpfs \"$1\" && exec \"$0\" --data-dir \"$1/data\"")
        .arg(env!("CARGO_BIN_EXE_rockets-local"))
        .arg(&dir);
    let works = Command::new("unshare")
        .args([own_namespace, "true"])
        .status();
    if !works.is_ok_and(|s| s.success()) {
        assert!(!ci, "unshare {own_namespace} is needed for the tmpfs");
        eprintln!("skipped: unshare {own_namespace} is not allowed here");
        return;
    }
    let server = ServerProcess::spawn(command, &[("ROCKETS_DISK_RESERVE_MB", "8")]);
    // The tmpfs as the server sees it: through its root, in its mount namespace.
    let tmpfs = std::path::PathBuf::from(format!("/proc/{}/root", server.pid()))
        .join(dir.strip_prefix("/").unwrap());
    let mut client = HttpClient::new(server.addr());
    let mut rng = Rng::new(9);
    let messages = flight(&channel("full"), 60, &mut rng);
    for message in &messages[..20] {
        assert_eq!(post(&mut client, message), 202);
    }

    // Another process takes all but 4 MB.
    let filler = tmpfs.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while free(&tmpfs) > 4 << 20 {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    let mut refused = 20;
    while post(&mut client, &messages[refused]) == 202 {
        refused += 1;
        assert!(
            refused < 40,
            "writes went on with the disk full:\n{}",
            server.output()
        );
    }
    assert_eq!(post(&mut client, &messages[refused]), 503);
    let (status, health) = client.request("GET", "/health", "").unwrap();
    assert_eq!(status, 503, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "unavailable");
    assert!(
        health["reason"].as_str().unwrap().contains("full"),
        "{health}"
    );

    // The space comes back: writes resume within seconds, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let back = Instant::now();
    while post(&mut client, &messages[refused]) != 202 {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(client.request("GET", "/health", "").unwrap().0, 200);
    for message in &messages[refused + 1..] {
        assert_eq!(post(&mut client, message), 202);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = client.request("GET", "/rockets/full", "").unwrap();
        if status == 200 && body.contains("\"lastMessageNumber\":60") {
            break;
        }
        assert!(Instant::now() < deadline, "{body}\n{}", server.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

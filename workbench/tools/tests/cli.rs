//! The `rockets` binary, as a developer runs it against a local server: it sends its seeded
//! stream, every message is accepted, and `--verify` finds every rocket at its in-order fold.

use std::process::Command;

use rockets_local::{LocalConfig, start_embedded};

#[test]
fn rockets_launch_sends_its_stream_and_verifies_every_rocket() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(start_embedded(&LocalConfig::ephemeral()))
        .expect("a local server starts");
    let url = format!("http://{}/messages", server.addr());
    let output = Command::new(env!("CARGO_BIN_EXE_rockets"))
        .args(["launch", &url, "--max-messages=2000", "--rockets=5"])
        .args(["--concurrency-level=3", "--seed=7", "--verify", "--json"])
        .output()
        .expect("rockets runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(report["sends"], 2000, "{report}");
    assert_eq!(report["accepted"], 2000, "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
    drop(server);
}

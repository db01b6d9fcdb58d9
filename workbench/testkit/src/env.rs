//! What a test needs from its surroundings: the emulators the test command started, logs, names.

/// The endpoint of an emulator the test command started, read from `var`.
///
/// Under `CI=true` a missing emulator fails the test; elsewhere the test is skipped with a
/// note, so `cargo test` alone still runs everything that needs no emulator.
pub fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{var} is not set, and under CI=true this test must run: start it through scripts/test"
            )
        }
        _ => {
            eprintln!("skipped: {var} is not set (scripts/test starts the emulators)");
            None
        }
    }
}

/// Shows the logs of what a test runs when `TEST_LOG` is set (at `RUST_LOG`'s level, `info`
/// by default); tests are quiet otherwise.
pub fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TEST_LOG").is_some() {
        ONCE.call_once(rockets::telemetry::init);
    }
}

/// A name no other test run uses, for tables, queues and channels.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{:x}-{}-{}",
        nanos,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

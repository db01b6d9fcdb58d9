//! Logging: one `tracing` subscriber for every binary.
//!
//! In Lambda, `AWS_LAMBDA_LOG_FORMAT=JSON` (set by the function's `LoggingConfig`) makes every
//! line a JSON object and `AWS_LAMBDA_LOG_LEVEL` sets the level; locally `RUST_LOG` does.

/// Installs the subscriber. Call once, first thing in `main`.
pub fn init() {
    lambda_runtime::tracing::init_default_subscriber();
}

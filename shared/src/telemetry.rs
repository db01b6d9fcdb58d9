//! Logging: one `tracing` subscriber for every binary.
//!
//! In Lambda, `AWS_LAMBDA_LOG_FORMAT=JSON` (set by the function's `LoggingConfig`) makes every
//! line a JSON object and `AWS_LAMBDA_LOG_LEVEL` sets the level; locally `RUST_LOG` does.

/// Installs the subscriber, writing to stdout. Call once, first thing in `main`.
pub fn init() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The same subscriber, writing each line to whatever `writer` makes: for a process that runs
/// the handlers as the binaries do, logging included, without showing their lines.
pub fn init_with_writer<W>(writer: W)
where
    W: for<'w> lambda_runtime::tracing::subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    lambda_runtime::tracing::init_default_subscriber_with_writer(writer);
}

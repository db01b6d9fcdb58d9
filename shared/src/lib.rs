//! Rocket telemetry: the library every function and the local server share.
//!
//! - [`message`]: the wire contract; parses JSON into a validated [`message::Envelope`].
//! - [`rocket`]: a rocket's state and the in-order fold of its messages.
//! - [`ordering`]: the pure per-channel logic that parks messages ahead of a gap, drains them
//!   when it fills, and recognises duplicates and conflicts.
//! - [`ports`]: the narrow traits the handlers use: a queue to send to, a store to apply to,
//!   a store to read from.
//! - [`aws`]: the same ports on DynamoDB and SQS, plus provisioning for local endpoints.
//! - [`embedded`]: in-process implementations of those ports with SQS FIFO and DynamoDB
//!   semantics, for the local server and tests.
//! - [`listing`]: sort keys, query parameters and cursors for `GET /rockets`.
//! - [`http`]: routes, the API error enum and JSON responses.
//! - [`config`], [`telemetry`]: environment configuration and logging setup.
//! - [`backoff`]: jittered exponential waits between retries.
//! - `testing` (feature `testing`): fixtures for tests and benchmarks.

pub mod aws;
pub mod backoff;
pub mod config;
pub mod embedded;
pub mod http;
pub mod listing;
pub mod message;
pub mod ordering;
pub mod ports;
pub mod rocket;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

//! Rocket telemetry: the library every function and the local server share.
//!
//! - [`message`], [`rocket`], [`ordering`], [`listing`]: the pure core, from the
//!   `rockets-domain` crate (no AWS or Lambda dependency), re-exported here.
//! - [`ports`]: the narrow traits the handlers use: a queue to send to, a store to apply to,
//!   a store to read from, and the records' visibility.
//!
//! The ports' implementations live in their own crates: `rockets-aws` (DynamoDB and SQS, and
//! provisioning for local endpoints) and `rockets-embedded` (in-process, with SQS FIFO and
//! DynamoDB semantics, for the local server and tests).
//! - [`http`]: routes, the API error enum, JSON responses, and API Gateway events.
//! - [`config`], [`telemetry`]: environment configuration and logging setup.
//! - [`metrics`]: CloudWatch Embedded Metric Format documents.
//! - [`backoff`]: jittered exponential waits between retries.
//! - [`story`]: a rocket's state as of any of its messages.

pub use rockets_domain::{listing, message, ordering, rocket};

pub mod backoff;
pub mod config;
pub mod http;
pub mod metrics;
pub mod ports;
pub mod story;
pub mod telemetry;

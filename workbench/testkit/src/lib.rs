//! Test support that nothing deployed depends on: the workspace's tests and benchmarks share it.
//!
//! - [`fixtures`]: realistic message streams, SQS records as Lambda delivers them, and a seeded
//!   random source, so a failure reproduces from its seed.
//! - [`contract`]: one contract suite every backend runs, so they cannot drift apart.
//! - [`env`]: the emulators the test command started, test logs, unique names.
//! - [`http_client`]: a blocking HTTP/1.1 client over one keep-alive connection.
//! - [`counting`]: a store that counts what its loads read.
//! - [`recording`]: a stand-in queue that keeps what it is sent and asked.
//! - [`gateway`]: API Gateway events lambda_http cannot convert, with the field each 400 names.

pub mod contract;
pub mod counting;
pub mod env;
pub mod fixtures;
pub mod gateway;
pub mod http_client;
pub mod recording;

pub use counting::CountingStore;
pub use env::{emulator, init_test_logs, unique_name};
pub use fixtures::{Rng, channel, flight, message, sqs_record};
pub use gateway::unconvertible_gateway_events;
pub use http_client::HttpClient;
pub use recording::RecordingQueue;

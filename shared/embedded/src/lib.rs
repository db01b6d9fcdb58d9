//! In-process backends: a FIFO queue with SQS semantics and a store with DynamoDB's contract.
//! They let the whole pipeline run, and be tested, in one process with no cloud: in memory, or
//! durably in a data directory.
//!
//! - [`queue`]: the FIFO queue, in memory or on a [`DataDir`].
//! - [`store`]: the store in memory.
//! - [`durable_store`]: the store on a [`DataDir`].
//! - [`disk`]: the data directory, its group commits and its damage checks.
//! - [`index`]: the listing's sorted sets, shared by both stores.

mod disk;
mod durable_store;
mod index;
mod queue;
mod store;

pub use disk::{DISK_RESERVE, DataDir, DataDirError, DiskError};
pub use durable_store::DurableStore;
pub use queue::{DeadLetters, EmbeddedQueue, QueueConfig, QueueDepth, ReceivedMessage};
pub use store::EmbeddedStore;

//! In-process backends: a FIFO queue with SQS semantics and a store with DynamoDB's contract.
//! They let the whole pipeline run, and be tested, in one process with no cloud.

mod queue;
mod store;

pub use queue::{DeadLetters, EmbeddedQueue, QueueConfig, QueueDepth, ReceivedMessage};
pub use store::EmbeddedStore;

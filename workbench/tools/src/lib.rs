//! Workbench tools: nothing deployed depends on them.
//!
//! - [`launch`]: a load generator that behaves like the challenge's `rockets launch` (the
//!   `rockets` binary).
//! - [`capacity`]: an SDK interceptor that adds up the capacity DynamoDB reports.
//! - [`billing`]: what each commit writes, key by key, priced as DynamoDB bills it.

pub mod billing;
pub mod capacity;
pub mod launch;

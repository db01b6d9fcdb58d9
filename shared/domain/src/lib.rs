//! The pure core of rocket telemetry: no I/O, no AWS, no Lambda, so it builds and tests fast
//! and every backend shares exactly this logic.
//!
//! - [`message`]: the wire contract; parses JSON into a validated [`message::Envelope`].
//! - [`rocket`]: a rocket's state and the in-order fold of its messages.
//! - [`ordering`]: the per-channel logic that parks messages ahead of a gap, drains them when
//!   it fills, and recognises duplicates and conflicts.
//! - [`listing`]: sort keys, query parameters and cursors for `GET /rockets`.

pub mod listing;
pub mod message;
pub mod ordering;
pub mod rocket;

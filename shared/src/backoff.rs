//! Exponential back-off with full jitter, as AWS advises for retries: a random wait between
//! zero and a ceiling that doubles each attempt, so retrying clients spread out instead of
//! colliding again.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// A wait for retry `attempt` (from 1): uniform in `0..first × 2^(attempt − 1)`, the ceiling
/// capped at `cap`.
pub fn full_jitter(attempt: u32, first: Duration, cap: Duration) -> Duration {
    let ceiling = first
        .saturating_mul(1 << attempt.saturating_sub(1).min(20))
        .min(cap);
    let ceiling_us = ceiling.as_micros().max(1) as u64;
    // RandomState is seeded per instance from the OS: enough randomness for spreading retries.
    let random = RandomState::new().hash_one(attempt);
    Duration::from_micros(random % ceiling_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_doubling_ceiling_and_vary() {
        let (first, cap) = (Duration::from_millis(2), Duration::from_millis(100));
        for attempt in 1..=10 {
            let ceiling = (first * (1 << (attempt - 1))).min(cap);
            for _ in 0..50 {
                assert!(full_jitter(attempt, first, cap) < ceiling);
            }
        }
        let waits: std::collections::HashSet<_> =
            (0..50).map(|_| full_jitter(8, first, cap)).collect();
        assert!(waits.len() > 10, "jittered: {waits:?}");
    }
}

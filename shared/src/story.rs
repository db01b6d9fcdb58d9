//! A rocket's story: its state as of any message, folded from its history.

use crate::message::Channel;
use crate::ports::{RocketReader, StoreError};
use crate::rocket::Rocket;

/// History read per page while folding, so that memory stays bounded however far back.
const PAGE: usize = 1000;

/// A rocket's state as of a message, or why there is none.
#[derive(Clone, PartialEq, Debug)]
pub enum AsOf {
    /// The fold of the messages up to it.
    State(Rocket),
    /// The channel was never seen, or has not applied that many messages.
    NotApplied,
    /// The history no longer holds this message, which the state is folded from: a stack
    /// that keeps history for `HistoryRetentionDays` forgets it.
    Forgotten(u64),
}

/// The rocket of `channel` as the in-order fold of its first `n` messages, read from its
/// history a page at a time (at most the `n` messages it folds). It waits for nothing and was
/// last changed when message `n` was sent.
pub async fn state_as_of<R: RocketReader>(
    reader: &R,
    channel: &Channel,
    n: u64,
) -> Result<AsOf, StoreError> {
    let Some(now) = reader.rocket(channel).await? else {
        return Ok(AsOf::NotApplied);
    };
    if n == 0 || n > now.last_message_number {
        return Ok(AsOf::NotApplied);
    }
    let mut rocket = Rocket::new(channel.clone(), now.updated_at);
    while rocket.last_message_number < n {
        let after = rocket.last_message_number;
        let wanted = usize::try_from(n - after).unwrap_or(PAGE).min(PAGE);
        let page = reader.history(channel, after, wanted).await?;
        let page = page.unwrap_or_default();
        if page.is_empty() {
            return Ok(AsOf::Forgotten(rocket.next_number()));
        }
        for message in &page {
            if message.number.get() != rocket.next_number() {
                return Ok(AsOf::Forgotten(rocket.next_number()));
            }
            rocket.apply(message);
            rocket.updated_at = message.time.to_utc();
        }
    }
    Ok(AsOf::State(rocket))
}

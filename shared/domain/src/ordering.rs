//! Per-channel ordering: turns messages that arrive in any order, any number of times, into
//! the in-order fold.
//!
//! A [`Timeline`] is loaded from what the store holds for a channel (its rocket and its parked
//! messages), receives messages, and yields one [`ChannelChange`] for the store to commit
//! atomically against the version it was loaded at. It does no I/O, so every backend shares
//! exactly this logic, and its guarantee is property-tested below: any permutation with
//! duplicates, received across any number of load/commit cycles, folds to the in-order state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::message::{Channel, Envelope, MessageNumber};
use crate::rocket::Rocket;

/// What became of one received message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Received {
    /// Applied, together with this many parked successors it unblocked.
    Applied { unparked: usize },
    /// Ahead of a gap: kept until the gap fills.
    Parked,
    /// The same message was already applied or parked: nothing to do.
    Duplicate,
    /// Another message with this number, with different content, was already accepted; this
    /// one is kept out.
    Conflict,
    /// A message with this number was applied in an earlier commit. It changes nothing; whether
    /// it is a duplicate or a conflict needs that message, which the caller may look up.
    AlreadyApplied,
}

/// Everything one commit writes for a channel. Applying it must be atomic and conditional on
/// the version the timeline was loaded at.
#[derive(Clone, PartialEq, Debug)]
pub struct ChannelChange {
    /// The rocket after the change.
    pub rocket: Rocket,
    /// Messages applied, in order: they extend the channel's history.
    pub applied: Vec<Envelope>,
    /// Messages newly parked ahead of a gap.
    pub parked: Vec<Envelope>,
    /// Previously parked messages now applied, to remove from the parked set.
    pub unparked: Vec<MessageNumber>,
}

/// One channel's rocket and parked messages, open for receiving.
#[derive(Clone, Debug)]
pub struct Timeline {
    rocket: Rocket,
    parked: BTreeMap<MessageNumber, Envelope>,
    /// Numbers that were parked when the timeline was loaded, including leftovers that were
    /// applied but not yet removed; every one not parked any more is removed by the change.
    stored_parked: Vec<MessageNumber>,
    /// Whether the stored `pendingMessages` disagreed with the parked messages found.
    recount: bool,
    applied: Vec<Envelope>,
    now: DateTime<Utc>,
}

impl Timeline {
    /// A channel the store has never seen.
    pub fn empty(channel: Channel, now: DateTime<Utc>) -> Self {
        Self::load(Rocket::new(channel, now), Vec::new(), now)
    }

    /// A channel as the store holds it.
    ///
    /// A store that cannot write everything atomically may hold parked messages that were
    /// already applied (their removal was interrupted) or parked messages its rocket does not
    /// count yet (the commit that counted them lost a race). Loading repairs both: leftovers
    /// are dropped, and the count is taken from what is parked.
    pub fn load(mut rocket: Rocket, parked: Vec<Envelope>, now: DateTime<Utc>) -> Self {
        let mut stored_parked: Vec<MessageNumber> = parked.iter().map(|m| m.number).collect();
        stored_parked.sort_unstable();
        let parked: BTreeMap<_, _> = parked
            .into_iter()
            .filter(|m| !rocket.has_applied(m.number))
            .map(|m| (m.number, m))
            .collect();
        let recount = rocket.pending_messages != parked.len() as u64;
        rocket.pending_messages = parked.len() as u64;
        let mut timeline = Timeline {
            stored_parked,
            recount,
            rocket,
            parked,
            applied: Vec::new(),
            now,
        };
        // A parked message may already be next in line, if the commit that applied its
        // predecessor raced with the one that parked it.
        timeline.drain();
        timeline
    }

    pub fn rocket(&self) -> &Rocket {
        &self.rocket
    }

    /// Takes one message of this timeline's channel.
    pub fn receive(&mut self, message: Envelope) -> Received {
        debug_assert_eq!(message.channel, self.rocket.channel);
        let number = message.number.get();
        let next = self.rocket.next_number();
        if number < next {
            let applied_before = self.rocket.last_message_number - self.applied.len() as u64;
            if number <= applied_before {
                return Received::AlreadyApplied;
            }
            let twin = &self.applied[(number - applied_before - 1) as usize];
            return same_or_conflict(twin, &message);
        }
        if number > next {
            if let Some(twin) = self.parked.get(&message.number) {
                return same_or_conflict(twin, &message);
            }
            self.parked.insert(message.number, message);
            self.rocket.pending_messages = self.parked.len() as u64;
            return Received::Parked;
        }
        self.apply(message);
        Received::Applied {
            unparked: self.drain(),
        }
    }

    /// Applies parked messages for as long as the next one is parked; returns how many.
    fn drain(&mut self) -> usize {
        let mut unparked = 0;
        while let Some(successor) = self.parked.first_entry() {
            if successor.key().get() != self.rocket.next_number() {
                break;
            }
            let successor = successor.remove();
            self.apply(successor);
            unparked += 1;
        }
        self.rocket.pending_messages = self.parked.len() as u64;
        unparked
    }

    fn apply(&mut self, message: Envelope) {
        self.rocket.apply(&message);
        self.applied.push(message);
    }

    /// The change to commit, or `None` when there is nothing to write.
    pub fn into_change(self) -> Option<ChannelChange> {
        let unparked = self
            .stored_parked
            .iter()
            .filter(|n| !self.parked.contains_key(n))
            .copied()
            .collect::<Vec<_>>();
        let stored_parked = self.stored_parked;
        let newly_parked = self
            .parked
            .into_values()
            .filter(|m| stored_parked.binary_search(&m.number).is_err())
            .collect::<Vec<_>>();
        if self.applied.is_empty()
            && newly_parked.is_empty()
            && unparked.is_empty()
            && !self.recount
        {
            return None;
        }
        let mut rocket = self.rocket;
        rocket.updated_at = self.now;
        Some(ChannelChange {
            rocket,
            applied: self.applied,
            parked: newly_parked,
            unparked,
        })
    }
}

/// Classifies a message against the one already accepted under the same number.
pub fn same_or_conflict(accepted: &Envelope, received: &Envelope) -> Received {
    if accepted == received {
        Received::Duplicate
    } else {
        Received::Conflict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Event;
    use proptest::prelude::*;

    fn channel() -> Channel {
        Channel::parse("c").unwrap()
    }

    fn message(n: u64, by: i64) -> Envelope {
        let event = if n == 1 {
            Event::Launched {
                rocket_type: "Falcon-9".into(),
                launch_speed: 100,
                mission: "ARTEMIS".into(),
            }
        } else {
            Event::SpeedIncreased { by }
        };
        Envelope {
            channel: channel(),
            number: MessageNumber::new(n).unwrap(),
            time: DateTime::parse_from_rfc3339("2022-02-02T19:39:05+01:00").unwrap(),
            event,
        }
    }

    /// A store that commits changes the way every real backend must.
    #[derive(Default)]
    struct Stored {
        rocket: Option<Rocket>,
        parked: BTreeMap<MessageNumber, Envelope>,
        history: Vec<Envelope>,
    }

    impl Stored {
        fn open(&self) -> Timeline {
            let rocket = self
                .rocket
                .clone()
                .unwrap_or_else(|| Rocket::new(channel(), Utc::now()));
            Timeline::load(rocket, self.parked.values().cloned().collect(), Utc::now())
        }

        /// Parked messages written ahead of a state write that never happened.
        fn park_late(&mut self, parked: impl IntoIterator<Item = Envelope>) {
            for m in parked {
                self.parked.entry(m.number).or_insert(m);
            }
        }

        fn commit(&mut self, change: ChannelChange) {
            for n in &change.unparked {
                assert!(
                    self.parked.remove(n).is_some(),
                    "unparked {n} was not parked"
                );
            }
            for m in change.parked {
                self.parked.entry(m.number).or_insert(m);
            }
            self.history.extend(change.applied);
            self.rocket = Some(change.rocket);
        }
    }

    #[test]
    fn in_order_messages_apply_immediately() {
        let mut t = Timeline::empty(channel(), Utc::now());
        assert_eq!(t.receive(message(1, 0)), Received::Applied { unparked: 0 });
        assert_eq!(t.receive(message(2, 5)), Received::Applied { unparked: 0 });
        assert_eq!(t.rocket().speed, 105);
        let change = t.into_change().unwrap();
        assert_eq!(change.applied.len(), 2);
        assert!(change.parked.is_empty() && change.unparked.is_empty());
    }

    #[test]
    fn a_message_ahead_of_a_gap_is_parked_until_the_gap_fills() {
        let mut store = Stored::default();
        let mut t = store.open();
        assert_eq!(t.receive(message(3, 30)), Received::Parked);
        assert_eq!(t.receive(message(2, 20)), Received::Parked);
        assert_eq!(t.rocket().pending_messages, 2);
        assert_eq!(t.rocket().last_message_number, 0);
        store.commit(t.into_change().unwrap());

        let mut t = store.open();
        assert_eq!(t.receive(message(1, 0)), Received::Applied { unparked: 2 });
        let change = t.into_change().unwrap();
        assert_eq!(change.unparked.len(), 2);
        assert!(change.parked.is_empty());
        store.commit(change);
        let rocket = store.rocket.unwrap();
        assert_eq!(
            (
                rocket.speed,
                rocket.last_message_number,
                rocket.pending_messages
            ),
            (150, 3, 0)
        );
    }

    #[test]
    fn parked_then_applied_in_one_session_is_never_stored_as_parked() {
        let mut t = Timeline::empty(channel(), Utc::now());
        t.receive(message(2, 1));
        t.receive(message(1, 0));
        let change = t.into_change().unwrap();
        assert!(change.parked.is_empty() && change.unparked.is_empty());
        assert_eq!(change.applied.len(), 2);
    }

    #[test]
    fn duplicates_and_conflicts() {
        let mut store = Stored::default();
        let mut t = store.open();
        t.receive(message(1, 0));
        t.receive(message(3, 3));
        assert_eq!(t.receive(message(1, 0)), Received::Duplicate);
        assert_eq!(t.receive(message(3, 3)), Received::Duplicate);
        assert_eq!(t.receive(message(3, 4)), Received::Conflict);
        store.commit(t.into_change().unwrap());

        let mut t = store.open();
        assert_eq!(t.receive(message(1, 0)), Received::AlreadyApplied);
        assert_eq!(t.receive(message(3, 99)), Received::Conflict);
        assert_eq!(t.receive(message(3, 3)), Received::Duplicate);
        assert!(t.into_change().is_none(), "duplicates change nothing");
        assert_eq!(
            same_or_conflict(&message(1, 0), &message(1, 0)),
            Received::Duplicate
        );
    }

    #[test]
    fn conflict_keeps_the_first_content() {
        let mut t = Timeline::empty(channel(), Utc::now());
        t.receive(message(1, 0));
        t.receive(message(2, 10));
        assert_eq!(t.receive(message(2, 99)), Received::Conflict);
        assert_eq!(t.rocket().speed, 110);
    }

    #[test]
    fn loading_drops_applied_leftovers_and_recounts_what_is_parked() {
        let mut rocket = Rocket::new(channel(), Utc::now());
        rocket.apply(&message(1, 0));
        rocket.apply(&message(2, 5));
        rocket.pending_messages = 0;
        let leftover = message(2, 5);
        let uncounted = message(4, 1);
        let mut t = Timeline::load(rocket, vec![uncounted, leftover], Utc::now());
        assert_eq!(t.rocket().pending_messages, 1);
        assert_eq!(t.receive(message(2, 5)), Received::AlreadyApplied);
        let change = t.into_change().expect("the count changed");
        assert_eq!(change.unparked, [MessageNumber::new(2).unwrap()]);
        assert!(change.applied.is_empty() && change.parked.is_empty());
        assert_eq!(change.rocket.pending_messages, 1);
    }

    fn stream(len: u64, seed: &[i64]) -> Vec<Envelope> {
        (1..=len)
            .map(|n| message(n, seed[(n as usize) % seed.len()]))
            .collect()
    }

    proptest! {
        /// Any permutation of a channel's messages, with duplicates, received over any
        /// sequence of load/commit cycles, some cut short the way a store without
        /// transactions can be, folds to the in-order state with nothing parked.
        #[test]
        fn any_order_with_duplicates_folds_to_the_in_order_state(
            len in 1u64..40,
            seed in prop::collection::vec(0i64..1000, 1..8),
            extra in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
            order in any::<u64>(),
            cuts in prop::collection::vec(0u8..4, 80),
        ) {
            let messages = stream(len, &seed);
            let expected = Rocket::fold(channel(), &messages, Utc::now());

            let mut arrivals = messages.clone();
            arrivals.extend(extra.iter().map(|i| i.get(&messages).clone()));
            shuffle(&mut arrivals, order);

            let mut store = Stored::default();
            let mut t = store.open();
            // Messages received since the last full commit: a commit cut short fails, and
            // they are delivered again, as the queue would. What it parked ahead of its state
            // write lands late, after the next commit, as when it lost a race.
            let mut session = Vec::new();
            let mut late = Vec::new();
            let mut arrivals: std::collections::VecDeque<Envelope> = arrivals.into();
            let mut i = 0;
            while let Some(m) = arrivals.pop_front() {
                i += 1;
                prop_assert!(i < 10_000, "no progress");
                session.push(m.clone());
                let outcome = t.receive(m);
                prop_assert_ne!(outcome, Received::Conflict);
                let cut = cuts[i % cuts.len()];
                if cut > 0 {
                    if let Some(change) = t.into_change() {
                        if cut == 1 {
                            late.extend(change.parked);
                            arrivals.extend(session.drain(..));
                        } else {
                            store.commit(change);
                            store.park_late(late.drain(..));
                        }
                    }
                    session.clear();
                    t = store.open();
                }
            }
            // The next batch of the channel, with nothing new, repairs what landed late.
            for _ in 0..2 {
                if let Some(change) = t.into_change() {
                    store.commit(change);
                }
                store.park_late(late.drain(..));
                t = store.open();
            }
            let rocket = store.rocket.unwrap();
            prop_assert!(rocket.same_state(&expected), "{rocket:?} != {expected:?}");
            prop_assert_eq!(rocket.pending_messages, 0);
            prop_assert!(store.parked.is_empty());
            prop_assert_eq!(store.history, messages);
        }
    }

    /// Deterministic Fisher–Yates from a seed, so proptest can shrink the order.
    fn shuffle<T>(items: &mut [T], mut seed: u64) {
        for i in (1..items.len()).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            items.swap(i, (seed >> 33) as usize % (i + 1));
        }
    }
}
